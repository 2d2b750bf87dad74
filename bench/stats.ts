// Summaries and the results table for bench/run.ts: every figure is a median with its min and
// max over the repetitions, so one noisy repetition on a shared machine shows as a wide range
// rather than a wrong number.

export interface Summary {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function summarize(xs: readonly number[]): Summary {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  if (s.length === 0) return { median: NaN, min: NaN, max: NaN, n: 0 };
  const mid = s.length >> 1;
  const median = s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
  return { median, min: s[0]!, max: s[s.length - 1]!, n: s.length };
}

/** `12.3 (11.0–14.1)` with `digits` decimals and a unit after the median. */
export function fmt(s: Summary, unit = '', digits = 1): string {
  if (s.n === 0) return 'n/a';
  const f = (x: number) => x.toFixed(digits);
  return s.n === 1 ? `${f(s.median)}${unit} (n=1)` : `${f(s.median)}${unit} (${f(s.min)}–${f(s.max)}, n=${s.n})`;
}

export interface Row {
  figure: string;
  measured: string;
  bar: string;
  /** true / false, or a reason the bar could not be judged. */
  met: boolean | string;
}

export function markdownTable(rows: readonly Row[]): string {
  const lines = ['| figure | measured: median (min–max, n) | bar | met |', '|---|---|---|---|'];
  for (const r of rows) {
    const met = r.met === true ? 'yes' : r.met === false ? '**no**' : r.met;
    lines.push(`| ${r.figure} | ${r.measured} | ${r.bar} | ${met} |`);
  }
  return lines.join('\n');
}
