// Progress bars on stderr, drawn only when stderr is a terminal: piped into a file or a CI log
// a redrawn bar is noise, so callers print plain lines there instead (see `interactive`).
import cliProgress from 'cli-progress';
import { bytes } from './output.ts';

export const interactive = (): boolean => Boolean(process.stderr.isTTY);

export interface ByteBar {
  update(sent: number): void;
  stop(): void;
}

/** A bar counting bytes (an upload or a download); a no-op when stderr is not a terminal. */
export function byteBar(label: string, total: number): ByteBar {
  if (!interactive()) return { update() {}, stop() {} };
  const bar = new cliProgress.SingleBar(
    {
      stream: process.stderr,
      format: `${label} |{bar}| {percentage}% {done}/{size} {speed}`,
      hideCursor: true,
      barsize: 30,
      // Redraw at most 10 times a second however fast chunks arrive.
      fps: 10,
    },
    cliProgress.Presets.shades_classic,
  );
  const started = Date.now();
  const payload = (sent: number) => ({
    done: bytes(sent),
    size: bytes(total),
    speed: `${bytes(Math.round(sent / Math.max((Date.now() - started) / 1000, 0.001)))}/s`,
  });
  bar.start(Math.max(total, 1), 0, payload(0));
  return {
    update: (sent) => bar.update(sent, payload(sent)),
    stop: () => bar.stop(),
  };
}
