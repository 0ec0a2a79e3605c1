// The pessimistic reconcile loop (kube-proxy's BoundedFrequencyRunner + needFullSync):
// - no writes before the sources' first complete list (desired() returns undefined until then);
// - one sync at a time, at most one per minSyncPeriod for events; a full resync every syncPeriod;
// - every sync is a full read + diff + one atomic apply per (backend, family); nothing is written
//   when live equals desired;
// - a failed sync is logged with its reason and retried with capped exponential backoff;
// - an order watchdog polls each backend's cheap change token four times per orderCheckPeriod
//   and syncs at once (bypassing minSyncPeriod) when somebody else wrote the table, which moves
//   our jump back to rule 1 if it was displaced: detection takes at most a quarter of the period,
//   which leaves the rest of it for the repairing commit (hundreds of ms on a big legacy table).
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import type { FamilyIntent } from '../intent/desired.js';
import type { Family } from './rules.js';
import type { NatBackend, SyncOutcome } from './types.js';
import { silentLogger, type Logger } from '../log.js';

/** Token polls per --order-check-period (the period bounds detection + repair, not detection alone). */
export const WATCHDOG_POLLS_PER_PERIOD = 4;

export type SyncReason = 'initial' | 'event' | 'periodic' | 'order' | 'retry' | 'manual';

export interface SyncReport {
  reason: SyncReason;
  ok: boolean;
  outcomes: SyncOutcome[];
  error?: Error;
  durationMs: number;
  /** Set when sources have not completed their first list yet: nothing was written. */
  skipped?: 'not-synced';
  /** The source generation the desired state was computed from (with options.generation). */
  generation?: number;
}

export interface ReconcilerOptions {
  backends: readonly NatBackend[];
  /** The intent by family, or undefined while the sources have not listed everything once. */
  desired: () => Readonly<Partial<Record<Family, FamilyIntent>>> | undefined;
  minSyncPeriodMs: number;
  syncPeriodMs: number;
  orderCheckPeriodMs: number;
  /** The sources' generation, read just before desired(): a sync report names what it includes. */
  generation?: () => number;
  /**
   * Called once, just before the first sync that has something to write reads the tables: the
   * agent returns the start-up garbage then, so that it does not add to the memory of the first
   * table read (a failure is logged and ignored).
   */
  beforeFirstWrite?: () => void;
  /** Cap of the retry backoff after failures (default 30 s). */
  maxBackoffMs?: number;
  log?: Logger;
}

export interface ReconcilerStats {
  syncs: number;
  failures: number;
  writes: number;
  orderRepairs: number;
  lastSuccessAt: number | undefined;
  lastDurationMs: number | undefined;
  firstSyncDone: boolean;
  /** Date.now() when the oldest change not yet applied was queued (events, order repairs); undefined: none. */
  queuedSince: number | undefined;
  /** Date.now() of the first of the failures in a row; undefined after a success. */
  failingSince: number | undefined;
  consecutiveFailures: number;
}

/** What /healthz reports: kube-proxy's rule (a queued change or a repair late past the bound). */
export interface HealthVerdict {
  ok: boolean;
  /** Why not ok, in one line. */
  reason?: string;
}

export class Reconciler extends EventEmitter<{ sync: [SyncReport] }> {
  readonly stats: ReconcilerStats = {
    syncs: 0,
    failures: 0,
    writes: 0,
    orderRepairs: 0,
    lastSuccessAt: undefined,
    lastDurationMs: undefined,
    firstSyncDone: false,
    queuedSince: undefined,
    failingSince: undefined,
    consecutiveFailures: 0,
  };

  private readonly opts: Required<Omit<ReconcilerOptions, 'log' | 'generation' | 'beforeFirstWrite'>> & Pick<ReconcilerOptions, 'generation' | 'beforeFirstWrite'> & { log: Logger };
  private running: Promise<SyncReport> | undefined;
  private pending: SyncReason | undefined;
  private timer: NodeJS.Timeout | undefined;
  private periodic: NodeJS.Timeout | undefined;
  private watchdog: NodeJS.Timeout | undefined;
  private watchdogBusy = false;
  private beforeFirstWriteDone = false;
  private lastRunStart = -Infinity;
  private consecutiveFailures = 0;
  private stopped = true;
  private readonly tokens = new Map<NatBackend, string>();

  constructor(opts: ReconcilerOptions) {
    super();
    this.opts = { maxBackoffMs: 30_000, ...opts, log: opts.log ?? silentLogger };
  }

  /** Starts the loop: an initial sync as soon as allowed, the periodic resync and the watchdog. */
  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    // The periodic resync keeps the process alive while the loop runs (stop() clears it).
    this.periodic = setInterval(() => this.requestSync('periodic'), this.opts.syncPeriodMs);
    this.watchdog = setInterval(() => void this.checkTokens(), Math.max(1, Math.round(this.opts.orderCheckPeriodMs / WATCHDOG_POLLS_PER_PERIOD)));
    this.watchdog.unref();
    this.requestSync('initial');
  }

  /** Stops timers and waits for a sync in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.periodic);
    clearInterval(this.watchdog);
    clearTimeout(this.timer);
    this.timer = undefined;
    this.pending = undefined;
    if (this.running) await this.running.catch(() => undefined);
  }

  /** Asks for a sync. Events are coalesced and rate-limited; 'order' and 'manual' run as soon as the current sync ends. */
  requestSync(reason: SyncReason): void {
    if (this.stopped) return;
    // A periodic resync is routine, not a queued change (as kube-proxy's health server counts).
    if (reason !== 'periodic' && this.stats.queuedSince === undefined) this.stats.queuedSince = Date.now();
    if (this.running) {
      if (!this.pending || reason === 'order') this.pending = reason;
      return;
    }
    if (this.timer) {
      if (reason !== 'order') return; // already scheduled; an order repair may go earlier
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    const urgent = reason === 'order' || reason === 'manual' || reason === 'initial';
    const wait = urgent ? 0 : Math.max(0, this.lastRunStart + this.opts.minSyncPeriodMs - performance.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.runSync(reason);
    }, wait);
  }

  /** One sync now (used by `run --once` and tests), serialized with the loop. */
  async syncNow(reason: SyncReason = 'manual'): Promise<SyncReport> {
    while (this.running) await this.running.catch(() => undefined);
    return this.runSync(reason);
  }

  private runSync(reason: SyncReason): Promise<SyncReport> {
    const p = this.doSync(reason).finally(() => {
      this.running = undefined;
      const next = this.pending;
      this.pending = undefined;
      if (next && !this.stopped) this.requestSync(next);
    });
    this.running = p;
    return p;
  }

  /**
   * kube-proxy's liveness rule: unhealthy only when a change queued more than `boundMs` ago is
   * still not applied, or syncs have failed for longer than that. Never because the sources have
   * not answered yet: with nothing listed there is nothing that should have been written.
   */
  health(boundMs: number, now = Date.now()): HealthVerdict {
    const { queuedSince, failingSince, consecutiveFailures } = this.stats;
    if (failingSince !== undefined && now - failingSince > boundMs) {
      return { ok: false, reason: `syncs failing for ${Math.round((now - failingSince) / 1000)}s (${consecutiveFailures} in a row; bound ${Math.round(boundMs / 1000)}s)` };
    }
    if (queuedSince !== undefined && now - queuedSince > boundMs) {
      return { ok: false, reason: `a change queued ${Math.round((now - queuedSince) / 1000)}s ago is not applied (bound ${Math.round(boundMs / 1000)}s)` };
    }
    return { ok: true };
  }

  private async doSync(requested: SyncReason): Promise<SyncReport> {
    this.lastRunStart = performance.now();
    const t0 = this.lastRunStart;
    const startedAt = Date.now();
    const settled = () => {
      // Changes queued before this sync started are covered by it; later ones wait for the next.
      if (this.stats.queuedSince !== undefined && this.stats.queuedSince <= startedAt) this.stats.queuedSince = undefined;
    };
    const generation = this.opts.generation?.();
    // The desired state is a pure function of the sources; should it throw all the same, that is
    // a failed sync (logged, retried with backoff), never an unhandled rejection.
    let desired: ReturnType<ReconcilerOptions['desired']>;
    let desiredError: unknown;
    try {
      desired = this.opts.desired();
    } catch (e) {
      desiredError = e;
    }
    // The first sync that has something to write is the initial one, whatever change asked for it
    // (an API source lists after the loop started: its 'initial' request found nothing listed).
    // A retry after a failed one stays a retry, and a manual sync manual.
    const reason: SyncReason = !this.stats.firstSyncDone && desired && requested !== 'manual' && requested !== 'retry' ? 'initial' : requested;
    if (!desired && desiredError === undefined) {
      settled(); // nothing listed yet, nothing that could be written: not late
      const r: SyncReport = { reason, ok: true, outcomes: [], durationMs: 0, skipped: 'not-synced' };
      this.emit('sync', r);
      return r;
    }
    this.stats.syncs++;
    if (desired && !this.beforeFirstWriteDone) {
      this.beforeFirstWriteDone = true;
      try {
        this.opts.beforeFirstWrite?.();
      } catch (e) {
        this.opts.log.warn({ err: { message: (e as Error).message } }, `before the first sync: ${(e as Error).message}`);
      }
    }
    const outcomes: SyncOutcome[] = [];
    try {
      if (desiredError !== undefined || !desired) throw desiredError;
      for (const backend of this.opts.backends) {
        const intent = desired[backend.family];
        if (!intent) continue;
        const before = await backend.changeToken();
        // Periodic resyncs and watchdog checks usually find nothing to do: let the backend look first.
        const outcome = await backend.sync(intent, { expectChange: reason !== 'periodic' && reason !== 'order' });
        outcomes.push(outcome);
        // Remember the table as we left it: after our own write, the token our commit left (every
        // backend returns it, taken before anybody else could write: no second read that could
        // miss a write in between); when we wrote nothing, the one from before our read (a write
        // in between is seen next check).
        this.tokens.set(backend, (outcome.changed ? outcome.apply?.tokenAfter : undefined) ?? before);
        if (outcome.changed) this.stats.writes++;
        this.stats.orderRepairs += outcome.orderRepairs;
      }
      this.consecutiveFailures = 0;
      this.stats.consecutiveFailures = 0;
      this.stats.failingSince = undefined;
      settled();
      this.stats.lastSuccessAt = Date.now();
      this.stats.firstSyncDone = true;
      const report: SyncReport = { reason, ok: true, outcomes, durationMs: performance.now() - t0, ...(generation !== undefined ? { generation } : {}) };
      this.stats.lastDurationMs = report.durationMs;
      this.logReport(report);
      this.emit('sync', report);
      return report;
    } catch (e) {
      const error = e instanceof Error ? e : new Error(String(e));
      this.stats.failures++;
      this.consecutiveFailures++;
      this.stats.consecutiveFailures = this.consecutiveFailures;
      this.stats.failingSince ??= startedAt;
      const backoff = Math.min(this.opts.maxBackoffMs, this.opts.minSyncPeriodMs * 2 ** (this.consecutiveFailures - 1));
      this.opts.log.error(
        { reason, err: { message: error.message, code: (error as { code?: unknown }).code }, retryInMs: backoff, failures: this.consecutiveFailures },
        `sync failed: ${error.message}`,
      );
      // Forget what we believed about the tables: the next sync reads everything again.
      this.tokens.clear();
      if (!this.stopped) {
        clearTimeout(this.timer);
        this.timer = setTimeout(() => {
          this.timer = undefined;
          if (this.running) this.pending = 'retry';
          else void this.runSync('retry');
        }, backoff);
      }
      const report: SyncReport = { reason, ok: false, outcomes, error, durationMs: performance.now() - t0 };
      this.emit('sync', report);
      return report;
    }
  }

  private logReport(r: SyncReport): void {
    const changed = r.outcomes.filter((o) => o.changed);
    if (changed.length === 0) {
      this.opts.log.debug({ reason: r.reason, durationMs: Math.round(r.durationMs) }, 'sync: no change');
      return;
    }
    const parts = changed.map(
      (o) => `${o.family}: +${o.added} -${o.removed}${o.orderRepairs ? ` order-repairs ${o.orderRepairs}` : ''} (${o.ops.length} ops, ${Math.round(o.durationMs)} ms)`,
    );
    this.opts.log.info(
      {
        reason: r.reason,
        durationMs: Math.round(r.durationMs),
        changes: changed.map((o) => ({ family: o.family, added: o.added, removed: o.removed, orderRepairs: o.orderRepairs, ops: o.ops.length, attempts: o.apply?.attempts, lockWaitMs: o.apply?.lockWaitMs })),
      },
      `sync (${r.reason}) wrote ${parts.join('; ')}`,
    );
  }

  /** The watchdog: a backend whose table changed since we last left it gets a sync now. */
  private async checkTokens(): Promise<void> {
    if (this.watchdogBusy || this.stopped || !this.stats.firstSyncDone) return;
    this.watchdogBusy = true;
    try {
      for (const backend of this.opts.backends) {
        const known = this.tokens.get(backend);
        if (known === undefined) continue;
        const now = await backend.changeToken();
        if (now !== known) {
          this.opts.log.debug({ family: backend.family, backend: backend.name, was: known, now }, 'table changed by another writer: checking our rules');
          this.requestSync('order');
          return;
        }
      }
    } catch (e) {
      this.opts.log.warn({ err: { message: (e as Error).message } }, 'order check failed');
    } finally {
      this.watchdogBusy = false;
    }
  }
}
