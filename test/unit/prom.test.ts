// The Prometheus text the agent serves (src/prom.ts): the exposition format as scrapers parse it.
import { describe, expect, it } from 'vitest';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from '../../src/prom.js';

describe('prom: the text exposition format', () => {
  it('counters and gauges: HELP and TYPE, unlabelled series at 0 from the start, labelled ones once written, escaped label values', async () => {
    const r = new Registry();
    const c = new Counter({ name: 'x_total', help: 'a "help"\nline \\', registers: [r] });
    const g = new Gauge({ name: 'y', help: 'y', labelNames: ['a', 'b'], registers: [r] });
    expect(await r.metrics()).toBe('# HELP x_total a "help"\\nline \\\\\n# TYPE x_total counter\nx_total 0\n\n# HELP y y\n# TYPE y gauge\n');
    c.inc();
    c.inc(2.5);
    g.set({ a: 'q"u\\o\nte', b: 1 }, 7);
    g.set({ b: 2, a: 'z' }, -1);
    g.set({ a: 'q"u\\o\nte', b: 1 }, 8);
    const text = await r.metrics();
    expect(text).toContain('\nx_total 3.5\n');
    expect(text).toContain('\ny{a="q\\"u\\\\o\\nte",b="1"} 8\n');
    expect(text).toContain('\ny{b="2",a="z"} -1\n');
    expect(() => c.inc(-1)).toThrow(/only goes up/);
    expect(() => g.set({ c: 'x' } as never, 1)).toThrow(/label "c"/);
    g.reset();
    expect(await r.metrics()).not.toContain('y{');
  });

  it('histograms: cumulative buckets with le first, +Inf, _sum and _count; an unlabelled one exists at 0', async () => {
    const r = new Registry();
    const h = new Histogram({ name: 'd_seconds', help: 'd', labelNames: ['reason'], buckets: [0.5, 0.1, 1], registers: [r] });
    const u = new Histogram({ name: 'u_seconds', help: 'u', buckets: [1], registers: [r] });
    h.observe({ reason: 'event' }, 0.05);
    h.observe({ reason: 'event' }, 0.7);
    h.observe({ reason: 'event' }, 9);
    const text = await r.metrics();
    expect(text).toContain(
      ['d_seconds_bucket{le="0.1",reason="event"} 1', 'd_seconds_bucket{le="0.5",reason="event"} 1', 'd_seconds_bucket{le="1",reason="event"} 2', 'd_seconds_bucket{le="+Inf",reason="event"} 3', 'd_seconds_sum{reason="event"} 9.75', 'd_seconds_count{reason="event"} 3'].join('\n'),
    );
    expect(text).toContain('u_seconds_bucket{le="1"} 0\nu_seconds_bucket{le="+Inf"} 0\nu_seconds_sum 0\nu_seconds_count 0');
    u.observe(0.5);
    expect(await r.metrics()).toContain('u_seconds_count 1');
  });

  it('collect() runs before each scrape with the metric as this (async too), and a name is registered once', async () => {
    const r = new Registry();
    let n = 0;
    new Gauge({
      name: 'g',
      help: 'g',
      registers: [r],
      async collect() {
        await new Promise((res) => setImmediate(res));
        this.set(++n);
      },
    });
    expect(await r.metrics()).toContain('\ng 1\n');
    expect(await r.metrics()).toContain('\ng 2\n');
    expect(() => new Gauge({ name: 'g', help: 'again', registers: [r] })).toThrow(/already registered/);
    expect(r.contentType).toBe('text/plain; version=0.0.4; charset=utf-8');
  });

  it('the process and runtime series read real values: RSS, heap, CPU, fds, start time', async () => {
    const r = new Registry();
    collectDefaultMetrics({ register: r, eventLoopMonitoringPrecision: 200 });
    const text = await r.metrics();
    const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]);
    expect(value('process_resident_memory_bytes')).toBeGreaterThan(10 * 1024 * 1024);
    expect(value('nodejs_heap_size_used_bytes')).toBeGreaterThan(1024 * 1024);
    expect(value('nodejs_heap_size_total_bytes')).toBeGreaterThanOrEqual(value('nodejs_heap_size_used_bytes'));
    expect(value('process_cpu_seconds_total')).toBeGreaterThan(0);
    expect(value('process_open_fds')).toBeGreaterThan(2);
    expect(Math.abs(value('process_start_time_seconds') - (Date.now() / 1000 - process.uptime()))).toBeLessThan(2);
    expect(text).toMatch(/^nodejs_heap_space_size_used_bytes\{space="old"\} \d+$/m);
    expect(text).toMatch(/^nodejs_version_info\{version="v[\d.]+",major="\d+",minor="\d+",patch="\d+"\} 1$/m);
    expect(text).toMatch(/^nodejs_eventloop_lag_p99_seconds \S+$/m);
  });
});
