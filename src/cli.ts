#!/usr/bin/env node
// edgemesh-agent: run | status | cleanup | demo (the command line of docs/design.md, a contract) | certs (tunnel/certs-cli.ts)
// | --version.
// Exit codes: 0 done; 1 a runtime failure (message on stderr); 2 bad input (one line naming the
// flag, field or file; the kernel tables were not touched).
import { Agent, managedFamilies } from './agent.js';
import { writeFileSync } from 'node:fs';
import { configFileText, parseArgs, type AgentConfig } from './config.js';
import { ConfigError, EdgeMeshError } from './errors.js';
import { ALL_BACKENDS, createBackend, resolveBackend } from './netfilter/factory.js';
import { renderOps, renderSet } from './netfilter/listing.js';
import { DEFAULT_PROXY_INTERFACE, removeProxyInterface } from './proxy/iface.js';
import { createLogger, type Logger } from './log.js';
import { packageVersion } from './version.js';
import type { SyncReport } from './netfilter/reconciler.js';
import type { AgentStatus, TunnelState } from './agent.js';
import { renderAgentStatus } from './status-render.js';
import { formatHostPortText } from './net.js';
import { renderTunnelStatus } from './tunnel/status.js';

const FAMILIES = ['ipv4', 'ipv6'] as const;

function fail(e: unknown): never {
  const err = e as { code?: unknown; message?: unknown };
  // A --config file with several mistakes gets one line each; anything else, its first line.
  const lines = e instanceof ConfigError ? e.lines : String(err?.message ?? e).split('\n').slice(0, 1);
  for (const line of lines) process.stderr.write(`edgemesh-agent: ${line}\n`);
  process.exit(e instanceof ConfigError || err?.code === 'ECONFIG' ? 2 : 1);
}

export function printReport(r: SyncReport, backend: string, out: (s: string) => void): void {
  for (const o of r.outcomes) {
    if (!o.changed) {
      out(`# ${o.family} (${backend}): already as desired, nothing written\n`);
      continue;
    }
    out(`# ${o.family} (${backend}): +${o.added} -${o.removed}${o.orderRepairs ? `, ${o.orderRepairs} order repairs` : ''}, ${o.ops.length} operations in one transaction\n`);
    out(renderOps(o.ops).join('\n') + '\n');
    for (const s of o.sets ?? []) out(renderSet(s).join('\n') + '\n');
  }
}

async function run(config: AgentConfig, log: Logger): Promise<void> {
  // The daemon (not --once) releases its start-up pages of the node executable (agent.ts).
  const agent = await Agent.create(config, { log, releaseStartupPages: !config.once });
  if (config.once) {
    const report = await agent.once();
    if (!report.ok) throw report.error ?? new EdgeMeshError('ESYNC', 'sync failed');
    printReport(report, agent.backendName, (s) => process.stdout.write(s));
    return;
  }
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopping) {
      log.warn({ signal: sig }, 'second signal: exiting at once');
      process.exit(130);
    }
    stopping = true;
    log.info({ signal: sig }, `${sig}: stopping${config.keepRulesOnExit ? ' (keeping rules)' : ', removing our rules'}`);
    agent
      .stop()
      .then((removed) => {
        log.info({ removed }, 'stopped');
        process.exit(0);
      })
      .catch((e: unknown) => {
        log.error({ err: { message: (e as Error).message } }, `stop failed: ${(e as Error).message}`);
        process.exit(1);
      });
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  await agent.start();
}

/** The running agent's sync loop, sources and tunnel, as GET /status on its metrics address reports them. */
async function tunnelStatus(config: AgentConfig): Promise<string> {
  const a = config.metricsAddr;
  if (!a) return '';
  const url = `http://${formatHostPortText(a)}/status`;
  let body: { node?: string; tunnel?: TunnelState | null } & Partial<Pick<AgentStatus, 'sync' | 'source'>>;
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(1500) });
    if (!res.ok) return `# tunnel: ${url} answered ${res.status}\n`;
    body = (await res.json()) as typeof body;
  } catch (e) {
    return `# tunnel: no agent answered at ${url} (${(e as Error).message}); give --metrics-addr of the running agent\n`;
  }
  return renderAgentStatus(body.sync && body.source ? { sync: body.sync, source: body.source } : undefined) + renderTunnelStatus(body.node ?? '', body.tunnel ?? undefined);
}

async function status(config: AgentConfig, log: Logger): Promise<void> {
  const { name } = await resolveBackend(config.backend, FAMILIES, log);
  for (const f of FAMILIES) {
    const s = await createBackend(name, f, { lockWaitMs: config.lockWaitMs, orderBefore: config.orderBefore }).status();
    if (!s.present) {
      process.stdout.write(`# ${f} (${name}): nothing of ours in this table\n`);
      continue;
    }
    const pos = `PREROUTING ${s.order.positions.PREROUTING}, OUTPUT ${s.order.positions.OUTPUT}`;
    const note = !s.order.ok
      ? `  WARNING: our jump is missing or behind a chain it must precede (${config.orderBefore.join(', ')}): ${pos}; 0 = missing`
      : s.order.positions.PREROUTING !== 1 || s.order.positions.OUTPUT !== 1
        ? `  (our jump is at ${pos}: behind another agent's rule, ahead of ${config.orderBefore.join(', ')}; as intended)`
        : '';
    process.stdout.write(`# ${f} (${name})${note}\n`);
    process.stdout.write(s.text.endsWith('\n') ? s.text : `${s.text}\n`);
  }
  process.stdout.write(await tunnelStatus(config));
}

/** `cleanup` removes what we own from the backend given, or from all three with `auto`, and the proxy interface. */
async function cleanup(config: AgentConfig): Promise<void> {
  const names = config.backend === 'auto' ? ALL_BACKENDS : [config.backend];
  let total = 0;
  for (const name of names) {
    for (const f of FAMILIES) {
      const r = await createBackend(name, f, { lockWaitMs: config.lockWaitMs }).cleanup();
      total += r.removed;
      if (r.removed) process.stdout.write(`${name} ${f}: removed ${r.removed}\n`);
    }
  }
  if (await removeProxyInterface({ name: DEFAULT_PROXY_INTERFACE })) {
    total++;
    process.stdout.write(`interface ${DEFAULT_PROXY_INTERFACE}: removed\n`);
  }
  process.stdout.write(total ? `cleanup done: ${total} objects removed\n` : 'cleanup done: nothing of ours was there\n');
}

async function main(argv: string[]): Promise<void> {
  // `certs` has flags of its own, outside the agent's option table, and loads no configuration.
  if (argv[0] === 'certs') {
    const { runCertsCommand } = await import('./tunnel/certs-cli.js');
    process.exitCode = await runCertsCommand(argv.slice(1), (s) => process.stdout.write(s), (s) => process.stderr.write(s));
    return;
  }
  let parsed;
  try {
    parsed = parseArgs(argv);
  } catch (e) {
    fail(e);
  }
  if (parsed.command === 'help') {
    process.stdout.write(parsed.help);
    return;
  }
  if (parsed.command === 'version') {
    process.stdout.write(`edgemesh-agent ${packageVersion()}\n`);
    return;
  }
  const { command, config, warnings } = parsed;
  for (const w of warnings) process.stderr.write(`edgemesh-agent: warning: ${w}\n`);
  if (config.writeConfigTo !== undefined) {
    try {
      writeFileSync(config.writeConfigTo, configFileText(config));
    } catch (e) {
      fail(new ConfigError(`--write-config-to "${config.writeConfigTo}": ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, 'write-config-to'));
    }
    process.stdout.write(`wrote the effective configuration to ${config.writeConfigTo}\n`);
    return;
  }
  // The one-shot commands print results on stdout: their logs are json lines, warnings only.
  const longRunning = command === 'run' && !config.once;
  const fmt = (f: typeof config.logFormat) => ({ node: config.nodeName, ...(f ? { format: f } : {}) });
  const log = createLogger(config.logLevel, fmt(longRunning ? config.logFormat : (config.logFormat ?? 'json')));
  const quiet = longRunning ? log : createLogger(config.logLevel === 'debug' ? 'debug' : 'warn', fmt(config.logFormat ?? 'json'));
  try {
    switch (command) {
      case 'run':
        if (managedFamilies(config).length === 0) throw new ConfigError('no --service-cidr given');
        await run(config, config.once ? quiet : log);
        break;
      case 'status':
        await status(config, quiet);
        break;
      case 'cleanup':
        await cleanup(config);
        break;
      case 'demo': {
        const { runDemo } = await import('./dev/demo.js');
        process.exitCode = await runDemo(config, (s: string) => process.stdout.write(s));
        break;
      }
    }
  } catch (e) {
    fail(e);
  }
}

void main(process.argv.slice(2));
