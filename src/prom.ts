// A Prometheus registry, counters, gauges and histograms, and the process metrics: the text
// exposition format (version 0.0.4) with what the agent uses and nothing more. It replaces a
// client library that loaded 90 modules (an OpenTelemetry API among them) for the same output:
// about 4 MiB of a small agent's resident memory, and start-up time. The series, names and
// formatting are those of the common Node client (labels in the order given, histogram buckets
// cumulative with `le` first, "+Inf", "Nan"), so dashboards keep working.
import { readFileSync, readdirSync } from 'node:fs';
import { PerformanceObserver, monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import v8 from 'node:v8';

type Labels<T extends string> = Partial<Record<T, string | number>>;

interface MetricConfig<T extends string, M> {
  name: string;
  help: string;
  labelNames?: readonly T[];
  registers?: Registry[];
  /** Called before each scrape, with the metric as `this`. */
  collect?: (this: M) => void | Promise<void>;
}

const escapeHelp = (s: string): string => s.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
const escapeValue = (s: string): string => escapeHelp(s).replace(/"/g, '\\"');

function formatValue(v: number): string {
  if (Number.isNaN(v)) return 'Nan';
  if (v === Infinity) return '+Inf';
  if (v === -Infinity) return '-Inf';
  return `${v}`;
}

function formatLabels(labels: Record<string, string | number>): string {
  const parts = Object.entries(labels).map(([k, v]) => `${k}="${escapeValue(String(v))}"`);
  return parts.length ? `{${parts.join(',')}}` : '';
}

/** The series key of a label set: its values in labelNames order. */
function keyOf(labelNames: readonly string[], labels: Record<string, string | number>): string {
  for (const k of Object.keys(labels)) if (!labelNames.includes(k)) throw new Error(`label "${k}" is not one of ${labelNames.join(', ') || '(none)'}`);
  return labelNames.map((k) => String(labels[k] ?? '')).join('\u0000');
}

abstract class Metric<T extends string, M> {
  readonly name: string;
  readonly help: string;
  readonly labelNames: readonly T[];
  private readonly collectFn: ((this: M) => void | Promise<void>) | undefined;
  abstract readonly type: string;

  constructor(cfg: MetricConfig<T, M>) {
    this.name = cfg.name;
    this.help = cfg.help;
    this.labelNames = cfg.labelNames ?? [];
    this.collectFn = cfg.collect;
    for (const r of cfg.registers ?? [defaultRegistry]) r.register(this as unknown as Metric<string, unknown>);
  }

  async render(): Promise<string> {
    if (this.collectFn) await this.collectFn.call(this as unknown as M);
    return [`# HELP ${this.name} ${escapeHelp(this.help)}`, `# TYPE ${this.name} ${this.type}`, ...this.lines()].join('\n');
  }

  protected abstract lines(): string[];
}

/** Counter and gauge: one value per label set. */
abstract class ValueMetric<T extends string, M> extends Metric<T, M> {
  protected values = new Map<string, { labels: Labels<T>; value: number }>();

  constructor(cfg: MetricConfig<T, M>) {
    super(cfg);
    this.initUnlabelled();
  }

  /** Unlabelled series exist at 0 from the start; labelled ones once written. */
  private initUnlabelled(): void {
    if (this.labelNames.length === 0) this.values.set('', { labels: {}, value: 0 });
  }

  protected add(labels: Labels<T>, delta: number, absolute: boolean): void {
    const key = keyOf(this.labelNames, labels as Record<string, string | number>);
    const cur = this.values.get(key);
    if (cur) cur.value = absolute ? delta : cur.value + delta;
    else this.values.set(key, { labels: { ...labels }, value: delta });
  }

  reset(): void {
    this.values.clear();
    this.initUnlabelled();
  }

  protected lines(): string[] {
    return [...this.values.values()].map((v) => `${this.name}${formatLabels(v.labels as Record<string, string | number>)} ${formatValue(v.value)}`);
  }
}

export class Counter<T extends string = string> extends ValueMetric<T, Counter<T>> {
  readonly type = 'counter';
  constructor(cfg: MetricConfig<T, Counter<T>>) {
    super(cfg);
  }
  inc(labelsOrValue?: Labels<T> | number, value?: number): void {
    const [labels, v] = typeof labelsOrValue === 'object' ? [labelsOrValue, value ?? 1] : [{}, labelsOrValue ?? 1];
    if (!(v >= 0)) throw new Error(`${this.name}: a counter only goes up (inc by ${v})`);
    this.add(labels, v, false);
  }
}

export class Gauge<T extends string = string> extends ValueMetric<T, Gauge<T>> {
  readonly type = 'gauge';
  constructor(cfg: MetricConfig<T, Gauge<T>>) {
    super(cfg);
  }
  set(labelsOrValue: Labels<T> | number, value?: number): void {
    if (typeof labelsOrValue === 'object') this.add(labelsOrValue, value ?? 0, true);
    else this.add({}, labelsOrValue, true);
  }
}

export class Histogram<T extends string = string> extends Metric<T, Histogram<T>> {
  readonly type = 'histogram';
  private readonly buckets: readonly number[];
  private series = new Map<string, { labels: Labels<T>; counts: number[]; sum: number; count: number }>();

  constructor(cfg: MetricConfig<T, Histogram<T>> & { buckets?: readonly number[] }) {
    super(cfg);
    this.buckets = [...(cfg.buckets ?? [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10])].sort((a, b) => a - b);
    if (this.labelNames.length === 0) this.entry({});
  }

  private entry(labels: Labels<T>): { labels: Labels<T>; counts: number[]; sum: number; count: number } {
    const key = keyOf(this.labelNames, labels as Record<string, string | number>);
    let s = this.series.get(key);
    if (!s) {
      s = { labels: { ...labels }, counts: this.buckets.map(() => 0), sum: 0, count: 0 };
      this.series.set(key, s);
    }
    return s;
  }

  observe(labelsOrValue: Labels<T> | number, value?: number): void {
    const [labels, v] = typeof labelsOrValue === 'object' ? [labelsOrValue, value ?? 0] : [{}, labelsOrValue];
    const s = this.entry(labels);
    const i = this.buckets.findIndex((b) => v <= b);
    if (i >= 0) s.counts[i]!++;
    s.sum += v;
    s.count++;
  }

  reset(): void {
    this.series.clear();
    if (this.labelNames.length === 0) this.entry({});
  }

  protected lines(): string[] {
    const out: string[] = [];
    for (const s of this.series.values()) {
      const shared = s.labels as Record<string, string | number>;
      let acc = 0;
      this.buckets.forEach((b, i) => {
        acc += s.counts[i]!;
        out.push(`${this.name}_bucket${formatLabels({ le: b, ...shared })} ${acc}`);
      });
      out.push(`${this.name}_bucket${formatLabels({ le: '+Inf', ...shared })} ${s.count}`);
      out.push(`${this.name}_sum${formatLabels(shared)} ${formatValue(s.sum)}`);
      out.push(`${this.name}_count${formatLabels(shared)} ${s.count}`);
    }
    return out;
  }
}

export class Registry {
  readonly contentType = 'text/plain; version=0.0.4; charset=utf-8';
  private readonly metricsByName = new Map<string, Metric<string, unknown>>();

  register(m: Metric<string, unknown>): void {
    const had = this.metricsByName.get(m.name);
    if (had && had !== m) throw new Error(`a metric named ${m.name} is already registered`);
    this.metricsByName.set(m.name, m);
  }

  getSingleMetric(name: string): Metric<string, unknown> | undefined {
    return this.metricsByName.get(name);
  }

  /** The registered metric names, in registration order. */
  names(): string[] {
    return [...this.metricsByName.keys()];
  }

  async metrics(): Promise<string> {
    const blocks = await Promise.all([...this.metricsByName.values()].map((m) => m.render()));
    return `${blocks.join('\n\n')}\n`;
  }
}

const defaultRegistry = new Registry();

// ---- process and runtime metrics --------------------------------------------------------------

function statusKiB(text: string, key: string): number | undefined {
  const m = new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text);
  return m ? Number(m[1]) * 1024 : undefined;
}

/**
 * The process_* and nodejs_* series of the common Node client, read at scrape time (the event
 * loop delay is sampled every `eventLoopMonitoringPrecision` ms; GC pauses observed as they
 * happen).
 */
export function collectDefaultMetrics(opts: { register: Registry; eventLoopMonitoringPrecision?: number }): void {
  const registers = [opts.register];
  const startSeconds = Math.round(Date.now() / 1000 - process.uptime());
  const cpu = (name: string, help: string, read: (u: NodeJS.CpuUsage) => number) =>
    new Counter({
      name,
      help,
      registers,
      collect() {
        this.reset();
        this.inc(read(process.cpuUsage()) / 1e6);
      },
    });
  cpu('process_cpu_user_seconds_total', 'Total user CPU time spent in seconds.', (u) => u.user);
  cpu('process_cpu_system_seconds_total', 'Total system CPU time spent in seconds.', (u) => u.system);
  cpu('process_cpu_seconds_total', 'Total user and system CPU time spent in seconds.', (u) => u.user + u.system);
  new Gauge({ name: 'process_start_time_seconds', help: 'Start time of the process since unix epoch in seconds.', registers }).set(startSeconds);
  const status = (name: string, help: string, key: string) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        try {
          const v = statusKiB(readFileSync('/proc/self/status', 'utf8'), key);
          if (v !== undefined) this.set(v);
        } catch {
          // no /proc: the series stays at its last value
        }
      },
    });
  status('process_resident_memory_bytes', 'Resident memory size in bytes.', 'VmRSS');
  status('process_virtual_memory_bytes', 'Virtual memory size in bytes.', 'VmSize');
  status('process_heap_bytes', 'Process heap size in bytes.', 'VmData');
  new Gauge({
    name: 'process_open_fds',
    help: 'Number of open file descriptors.',
    registers,
    collect() {
      try {
        this.set(readdirSync('/proc/self/fd').length - 1); // the directory's own descriptor
      } catch {
        // no /proc
      }
    },
  });
  new Gauge({
    name: 'process_max_fds',
    help: 'Maximum number of open file descriptors.',
    registers,
    collect() {
      try {
        const m = /^Max open files\s+(\d+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
        if (m) this.set(Number(m[1]));
      } catch {
        // no /proc
      }
    },
  });
  const mem = (name: string, help: string, read: (m: NodeJS.MemoryUsage) => number) =>
    new Gauge({
      name,
      help,
      registers,
      collect() {
        this.set(read(process.memoryUsage()));
      },
    });
  mem('nodejs_heap_size_total_bytes', 'Process heap size from Node.js in bytes.', (m) => m.heapTotal);
  mem('nodejs_heap_size_used_bytes', 'Process heap size used from Node.js in bytes.', (m) => m.heapUsed);
  mem('nodejs_external_memory_bytes', 'Node.js external memory size in bytes.', (m) => m.external);
  const space = (name: string, help: string, read: (s: v8.HeapSpaceInfo) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['space'],
      registers,
      collect() {
        for (const s of v8.getHeapSpaceStatistics()) this.set({ space: s.space_name.replace(/_space$/, '') }, read(s));
      },
    });
  space('nodejs_heap_space_size_total_bytes', 'Process heap space size total from Node.js in bytes.', (s) => s.space_size);
  space('nodejs_heap_space_size_used_bytes', 'Process heap space size used from Node.js in bytes.', (s) => s.space_used_size);
  space('nodejs_heap_space_size_available_bytes', 'Process heap space size available from Node.js in bytes.', (s) => s.space_available_size);
  new Gauge({
    name: 'nodejs_active_resources_total',
    help: 'Total number of active resources.',
    registers,
    collect() {
      this.set(process.getActiveResourcesInfo().length);
    },
  });
  const [major, minor, patch] = process.versions.node.split('.').map(Number);
  new Gauge({ name: 'nodejs_version_info', help: 'Node.js version info.', labelNames: ['version', 'major', 'minor', 'patch'], registers }).set(
    { version: process.version, major: major ?? 0, minor: minor ?? 0, patch: patch ?? 0 },
    1,
  );
  // The event loop: the delay sampled on a timer, its distribution since the last scrape.
  const delay: IntervalHistogram = monitorEventLoopDelay({ resolution: opts.eventLoopMonitoringPrecision ?? 10 });
  delay.enable();
  new Gauge({
    name: 'nodejs_eventloop_lag_seconds',
    help: 'Lag of event loop in seconds.',
    registers,
    async collect() {
      const t0 = process.hrtime.bigint();
      await new Promise((r) => setImmediate(r));
      this.set(Number(process.hrtime.bigint() - t0) / 1e9);
    },
  });
  const lag = (suffix: string, help: string, read: (h: IntervalHistogram) => number) =>
    new Gauge({
      name: `nodejs_eventloop_lag_${suffix}_seconds`,
      help,
      registers,
      collect() {
        const v = read(delay) / 1e9;
        this.set(Number.isFinite(v) ? v : 0);
      },
    });
  lag('min', 'The minimum recorded event loop delay.', (h) => h.min);
  lag('max', 'The maximum recorded event loop delay.', (h) => h.max);
  lag('mean', 'The mean of the recorded event loop delays.', (h) => h.mean);
  lag('stddev', 'The standard deviation of the recorded event loop delays.', (h) => h.stddev);
  lag('p50', 'The 50th percentile of the recorded event loop delays.', (h) => h.percentile(50));
  lag('p90', 'The 90th percentile of the recorded event loop delays.', (h) => h.percentile(90));
  // Collected last of the event-loop family: the distribution restarts after each scrape.
  lag('p99', 'The 99th percentile of the recorded event loop delays.', (h) => {
    const v = h.percentile(99);
    h.reset();
    return v;
  });
  // GC pauses, by kind, as they happen.
  const gc = new Histogram({ name: 'nodejs_gc_duration_seconds', help: 'Garbage collection duration by kind, one of major, minor, incremental or weakcb.', labelNames: ['kind'], buckets: [0.001, 0.01, 0.1, 1, 2, 5], registers });
  const kinds: Record<number, string> = { 1: 'minor', 2: 'major', 4: 'incremental', 8: 'weakcb' };
  const obs = new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      const kind = kinds[(e.detail as { kind?: number } | undefined)?.kind ?? 0];
      if (kind) gc.observe({ kind }, e.duration / 1000);
    }
  });
  obs.observe({ entryTypes: ['gc'] });
  // The observer and the sampling timer must not keep a finished process alive.
  (obs as unknown as { unref?: () => void }).unref?.();
}
