// wrk (Debian's `wrk` package), the load generator the `GET /v1/jobs/:id` bar was set with. It is
// a C program: on a 2-core machine it leaves the API far more of the CPU than autocannon, which
// runs JavaScript in the bench's own process (measured side by side: autocannon 1,650–1,730
// req/s where wrk saw 1,820–1,985 on the same API).
import { spawnSync } from 'node:child_process';
import { runProcess } from './pytorch.ts';

export interface WrkResult {
  requestsPerSec: number;
  p50Ms: number;
  p99Ms: number;
}

let available: boolean | undefined;
export function wrkAvailable(): boolean {
  available ??= spawnSync('wrk', ['--version'], { stdio: 'ignore' }).error === undefined;
  return available;
}

const UNIT_MS: Record<string, number> = { us: 0.001, ms: 1, s: 1000 };

/** A latency percentile from `wrk --latency` output ("    99%   25.77ms"), in ms. */
function percentile(out: string, p: number): number {
  const match = new RegExp(`^\\s*${p}%\\s+([\\d.]+)(us|ms|s)\\s*$`, 'm').exec(out);
  if (!match) throw new Error(`wrk: no ${p}% latency in its output:\n${out}`);
  return Number(match[1]) * UNIT_MS[match[2]!]!;
}

/** GETs `url` from 2 threads over `connections` connections for `seconds`; throws on any non-2xx or socket error. */
export async function wrk(url: string, headers: Record<string, string>, connections: number, seconds: number): Promise<WrkResult> {
  const args = ['-t2', `-c${connections}`, `-d${seconds}s`, '--latency', ...Object.entries(headers).flatMap(([k, v]) => ['-H', `${k}: ${v}`]), url];
  const { out, code } = await runProcess('wrk', args, (seconds + 30) * 1000);
  if (code !== 0) throw new Error(`wrk exited ${code}:\n${out}`);
  const failures = /Non-2xx or 3xx responses: (\d+)|Socket errors: .*/.exec(out);
  if (failures) throw new Error(`GET ${url}: ${failures[0]}`);
  const rate = /^Requests\/sec:\s+([\d.]+)/m.exec(out);
  if (!rate) throw new Error(`wrk: no Requests/sec in its output:\n${out}`);
  return { requestsPerSec: Number(rate[1]), p50Ms: percentile(out, 50), p99Ms: percentile(out, 99) };
}
