// The bench's results: the documented JSON shape of bench/results/latest.json, its Markdown
// twin and an SVG bar chart of the main ratios. Pure (no I/O) except writeResults().
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/** One benchmark target, as measured in this run. `met: null` (with `why`) when not measured. */
export interface TargetResult {
  name: string;
  /** Measured in this run; null when not measured. */
  value: number | null;
  unit: string;
  /** The target in words, e.g. ">= 500". */
  target: string;
  met: boolean | null;
  why?: string;
}

export interface Table {
  title: string;
  columns: string[];
  rows: (string | number | null)[][];
  notes?: string[];
}

/** A group of bars in the chart: ratios, with a reference line at 1. */
export interface ChartGroup {
  title: string;
  bars: { label: string; value: number | null }[];
}

export interface Machine {
  nproc: number;
  kernel: string;
  cpu: string;
  node: string;
  tools: Record<string, string>;
}

export interface BenchResults {
  schema: 1;
  date: string;
  mode: 'quick' | 'full';
  machine: Machine;
  durationS: number;
  /** Raw measurements (medians and samples), keyed by section. */
  measurements: Record<string, unknown>;
  tables: Table[];
  chart: ChartGroup[];
  targets: TargetResult[];
  notes: string[];
}

export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** Nearest-rank percentile (p in 0..100) of an already sorted array. */
export function percentileSorted(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1]!;
}

/** A target, checked: met is null when the value is null. */
export function target(name: string, value: number | null, unit: string, text: string, ok: (v: number) => boolean, why?: string): TargetResult {
  if (value === null || !Number.isFinite(value)) {
    return { name, value: null, unit, target: text, met: null, why: why ?? 'not measured in this run' };
  }
  const t: TargetResult = { name, value: round(value), unit, target: text, met: ok(value) };
  if (why) t.why = why;
  return t;
}

export function round(v: number, digits = 3): number {
  if (!Number.isFinite(v)) return v;
  const a = Math.abs(v);
  const d = a >= 100 ? 1 : a >= 1 ? digits : digits + 2;
  return Number(v.toFixed(d));
}

export function fmt(v: string | number | null | undefined): string {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'string') return v;
  if (!Number.isFinite(v)) return '—';
  const a = Math.abs(v);
  if (a >= 1000) return Math.round(v).toLocaleString('en-US').replace(/,/g, ' ');
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toFixed(3);
}

export function renderTableText(t: Table): string {
  const cells = [t.columns, ...t.rows.map((r) => r.map(fmt))];
  const widths = t.columns.map((_, i) => Math.max(...cells.map((r) => String(r[i] ?? '').length)));
  const line = (r: (string | number | null)[]) => r.map((c, i) => String(c ?? '').padEnd(widths[i]!)).join('  ');
  const out = [`== ${t.title}`, line(cells[0]!), widths.map((w) => '-'.repeat(w)).join('  '), ...cells.slice(1).map(line)];
  for (const n of t.notes ?? []) out.push(`   ${n}`);
  return out.join('\n');
}

function mdCell(c: string | number | null): string {
  return fmt(c).replace(/\|/g, '\\|');
}

export function renderTableMd(t: Table): string {
  const out = [`### ${t.title}`, '', `| ${t.columns.join(' | ')} |`, `|${t.columns.map(() => '---').join('|')}|`, ...t.rows.map((r) => `| ${r.map(mdCell).join(' | ')} |`)];
  if (t.notes?.length) out.push('', ...t.notes.map((n) => `- ${n}`));
  return out.join('\n');
}

export function renderTargetsText(targets: readonly TargetResult[]): string {
  return renderTableText(targetsTable(targets));
}

function targetsTable(targets: readonly TargetResult[]): Table {
  return {
    title: 'Targets',
    columns: ['target', 'value', 'unit', 'wanted', 'met'],
    rows: targets.map((t) => [t.name, t.value, t.unit, t.target, t.met === null ? `not measured: ${t.why ?? ''}` : t.met ? 'MET' : 'MISSED' + (t.why ? ` (${t.why})` : '')]),
  };
}

export function machineLine(r: Pick<BenchResults, 'machine' | 'date' | 'mode' | 'durationS'>): string {
  return `${r.date} · ${r.mode} run in ${Math.round(r.durationS)} s · ${r.machine.nproc} CPUs (${r.machine.cpu}) · kernel ${r.machine.kernel} · node ${r.machine.node}`;
}

export function renderMarkdown(r: BenchResults, svgName = 'latest.svg'): string {
  const tools = Object.entries(r.machine.tools)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
  const met = r.targets.filter((t) => t.met === true).length;
  const missed = r.targets.filter((t) => t.met === false).length;
  const unmeasured = r.targets.filter((t) => t.met === null).length;
  return [
    `# edgemesh-hybrid-nat bench (${r.mode})`,
    '',
    `Machine and date: ${machineLine(r)}.`,
    `Tools: ${tools}.`,
    '',
    `Targets: ${met} met, ${missed} missed, ${unmeasured} not measured. Every number below was measured in this run; only ratios within the run are meaningful (shared 2-core machine).`,
    '',
    `![main ratios](${svgName})`,
    '',
    renderTableMd(targetsTable(r.targets)),
    '',
    ...r.tables.flatMap((t) => [renderTableMd(t), '']),
    ...(r.notes.length ? ['### Notes', '', ...r.notes.map((n) => `- ${n}`), ''] : []),
  ].join('\n');
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Horizontal bars of ratios, one block per group, a dashed line at 1.0. Drawn by hand. */
export function renderSvg(groups: readonly ChartGroup[], subtitle: string): string {
  const width = 900;
  const labelW = 330;
  const barMax = width - labelW - 90;
  const barH = 16;
  const gap = 5;
  const parts: string[] = [];
  let y = 50;
  for (const g of groups) {
    // Each group has its own scale (speed-ups of 1 000x and ratios near 1 do not share one).
    const vmax = Math.max(1.2, ...g.bars.map((b) => b.value ?? 0).filter((v) => Number.isFinite(v))) * 1.05;
    const scale = (v: number) => (Math.min(v, vmax) / vmax) * barMax;
    parts.push(`<text x="10" y="${y}" font-weight="bold" font-size="13">${esc(g.title)}</text>`);
    y += 10;
    const top = y;
    for (const b of g.bars) {
      const v = b.value;
      const ok = v !== null && Number.isFinite(v);
      parts.push(`<text x="${labelW - 8}" y="${y + barH - 4}" text-anchor="end" font-size="12">${esc(b.label)}</text>`);
      if (ok) {
        const w = Math.max(1, scale(v));
        const colour = v >= 1 ? '#2e7d32' : '#c62828';
        parts.push(`<rect x="${labelW}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${colour}" opacity="0.8"/>`);
        parts.push(`<text x="${(labelW + w + 4).toFixed(1)}" y="${y + barH - 4}" font-size="12">${v >= 100 ? v.toFixed(0) : v.toFixed(2)}${v > vmax ? ' (clipped)' : ''}</text>`);
      } else {
        parts.push(`<text x="${labelW + 4}" y="${y + barH - 4}" font-size="12" fill="#777">not measured</text>`);
      }
      y += barH + gap;
    }
    const x1 = labelW + scale(1);
    parts.push(`<line x1="${x1.toFixed(1)}" y1="${top - 2}" x2="${x1.toFixed(1)}" y2="${y - gap + 2}" stroke="#333" stroke-dasharray="4 3"/>`);
    y += 18;
  }
  const height = y + 10;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    `<text x="10" y="20" font-size="15" font-weight="bold">edgemesh-hybrid-nat bench: ratios (dashed line = 1.0; green &gt;= 1)</text>`,
    `<text x="10" y="36" font-size="11" fill="#555">${esc(subtitle)}</text>`,
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}

/** Writes latest.json, latest.md and latest.svg into `dir`; returns their paths. */
export function writeResults(dir: string, r: BenchResults): { json: string; md: string; svg: string } {
  mkdirSync(dir, { recursive: true });
  const paths = { json: join(dir, 'latest.json'), md: join(dir, 'latest.md'), svg: join(dir, 'latest.svg') };
  writeFileSync(paths.json, JSON.stringify(r, null, 2) + '\n');
  writeFileSync(paths.md, renderMarkdown(r));
  writeFileSync(paths.svg, renderSvg(r.chart, machineLine(r)));
  return paths;
}

/** Checks the documented shape; returns the problems found (empty when fine). Used by the unit test and by run.ts before writing. */
export function validateResults(r: unknown): string[] {
  const problems: string[] = [];
  const o = r as BenchResults;
  if (!o || typeof o !== 'object') return ['not an object'];
  if (typeof o.date !== 'string') problems.push('date must be a string');
  if (!o.machine || typeof o.machine.nproc !== 'number' || typeof o.machine.kernel !== 'string' || typeof o.machine.cpu !== 'string') problems.push('machine must have nproc, kernel, cpu');
  if (!Array.isArray(o.targets) || o.targets.length === 0) problems.push('targets must be a non-empty array');
  for (const [i, t] of (o.targets ?? []).entries()) {
    if (typeof t.name !== 'string' || !t.name) problems.push(`targets[${i}].name`);
    if (!(t.value === null || typeof t.value === 'number')) problems.push(`targets[${i}].value must be a number or null`);
    if (typeof t.unit !== 'string') problems.push(`targets[${i}].unit`);
    if (typeof t.target !== 'string') problems.push(`targets[${i}].target`);
    if (!(t.met === null || typeof t.met === 'boolean')) problems.push(`targets[${i}].met must be a boolean or null`);
    if (t.met === null && (typeof t.why !== 'string' || !t.why)) problems.push(`targets[${i}]: met null needs a why`);
    if (t.value === null && t.met !== null) problems.push(`targets[${i}]: a value of null cannot be met or missed`);
  }
  return problems;
}
