// The bench's results writer produces the documented shape of bench/results/latest.json: a
// `targets` array of { name, value, unit, target, met } (met null with a why when not measured),
// plus machine and date; and the Markdown and SVG beside it.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { median, percentileSorted, target, validateResults, writeResults, type BenchResults } from '../../bench/results.js';

function sample(): BenchResults {
  return {
    schema: 1,
    date: '2026-01-01T00:00:00.000Z',
    mode: 'quick',
    machine: { nproc: 2, kernel: '6.1.0', cpu: 'test cpu', node: 'v20.0.0', tools: { iperf3: '3.12' } },
    durationS: 1,
    measurements: {},
    tables: [{ title: 'T', columns: ['a', 'b'], rows: [['x', 1.5], ['y', null]] }],
    chart: [{ title: 'G', bars: [{ label: 'ours', value: 1.3 }, { label: 'peer', value: null }] }],
    targets: [
      target('speed-up', 812.4, 'x', '>= 500', (v) => v >= 500),
      target('slow', 0.5, 'x', '>= 1', (v) => v >= 1),
      target('proxy', null, 'x', '>= 1.1', () => true, 'our proxy is not in this tree yet'),
    ],
    notes: [],
  };
}

describe('bench results', () => {
  it('targets carry name, value, unit, target and met; an unmeasured one says why', () => {
    const r = sample();
    expect(r.targets[0]).toEqual({ name: 'speed-up', value: 812.4, unit: 'x', target: '>= 500', met: true });
    expect(r.targets[1]!.met).toBe(false);
    expect(r.targets[2]).toEqual({ name: 'proxy', value: null, unit: 'x', target: '>= 1.1', met: null, why: 'our proxy is not in this tree yet' });
    expect(validateResults(r)).toEqual([]);
  });

  it('writes latest.json in the documented shape, with latest.md and latest.svg beside it', () => {
    const dir = mkdtempSync(join(tmpdir(), 'bench-results-'));
    try {
      const paths = writeResults(dir, sample());
      const json = JSON.parse(readFileSync(paths.json, 'utf8')) as BenchResults;
      expect(validateResults(json)).toEqual([]);
      for (const t of json.targets) expect(Object.keys(t).sort()).toEqual(expect.arrayContaining(['met', 'name', 'target', 'unit', 'value']));
      expect(json.machine.nproc).toBe(2);
      const md = readFileSync(paths.md, 'utf8');
      expect(md).toContain('2026-01-01T00:00:00.000Z');
      expect(md).toContain('| speed-up | 812 | x | >= 500 | MET |');
      expect(md).toContain('not measured: our proxy is not in this tree yet');
      const svg = readFileSync(paths.svg, 'utf8');
      expect(svg.startsWith('<svg')).toBe(true);
      expect(svg).toContain('not measured');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('refuses a met target without a value and an unmeasured one without a why', () => {
    const r = sample();
    r.targets.push({ name: 'bad', value: null, unit: 'x', target: '>= 1', met: true });
    r.targets.push({ name: 'bad2', value: null, unit: 'x', target: '>= 1', met: null });
    const p = validateResults(r);
    expect(p.some((x) => x.includes('cannot be met'))).toBe(true);
    expect(p.some((x) => x.includes('needs a why'))).toBe(true);
  });

  it('median and percentiles', () => {
    expect(median([3, 1, 2])).toBe(2);
    expect(median([4, 1, 2, 3])).toBe(2.5);
    expect(percentileSorted([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 99)).toBe(10);
    expect(percentileSorted([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 50)).toBe(5);
  });
});
