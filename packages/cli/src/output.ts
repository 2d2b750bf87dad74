// Human output: small aligned tables and key/value blocks on stdout. `--json` bypasses all of
// this and prints the API's body as it came.

export type Cell = string | number | boolean | null | undefined;

export interface Column<T> {
  header: string;
  value: (row: T) => Cell;
  /** Right-align (numbers). */
  right?: boolean;
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function printLine(line = ''): void {
  process.stdout.write(`${line}\n`);
}

/** Status lines, progress and hints: stderr, so stdout stays the command's result. */
export function note(line: string): void {
  process.stderr.write(`${line}\n`);
}

export function table<T>(rows: T[], columns: Column<T>[]): string {
  const cells = rows.map((row) => columns.map((c) => text(c.value(row))));
  const widths = columns.map((c, i) => Math.max(c.header.length, ...cells.map((r) => r[i]!.length)));
  const line = (values: string[]) =>
    values
      .map((v, i) => (columns[i]!.right ? v.padStart(widths[i]!) : v.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(columns.map((c) => c.header)), ...cells.map(line)].join('\n');
}

export function printTable<T>(rows: T[], columns: Column<T>[], empty = '(none)'): void {
  printLine(rows.length === 0 ? empty : table(rows, columns));
}

/** `key: value` lines with the keys aligned; undefined values are left out. */
export function printFields(fields: [string, Cell][]): void {
  const shown = fields.filter(([, v]) => v !== undefined);
  const width = Math.max(...shown.map(([k]) => k.length));
  for (const [key, value] of shown) printLine(`${`${key}:`.padEnd(width + 2)}${text(value)}`);
}

export function text(value: Cell): string {
  if (value === null || value === undefined) return '-';
  return String(value);
}

export function percent(value: number | null | undefined, digits = 1): string {
  return typeof value === 'number' ? `${(value * 100).toFixed(digits)}%` : '-';
}

export function fixed(value: number | null | undefined, digits = 4): string {
  return typeof value === 'number' ? value.toFixed(digits) : '-';
}

export function bytes(value: number | null | undefined): string {
  if (typeof value !== 'number') return '-';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let n = value;
  let unit = 0;
  while (n >= 1024 && unit < units.length - 1) {
    n /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} B` : `${n.toFixed(1)} ${units[unit]}`;
}

/** 75 → "1m15s"; negative or missing → "-". */
export function duration(seconds: number | null | undefined): string {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds) || seconds < 0) return '-';
  const s = Math.round(seconds);
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m${String(s % 60).padStart(2, '0')}s`;
  return `${Math.floor(m / 60)}h${String(m % 60).padStart(2, '0')}m`;
}

/** ISO timestamp → "2025-01-31 12:34:56" (UTC, as the API sends it). */
export function when(iso: string | null | undefined): string {
  return iso ? iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z') : '-';
}
