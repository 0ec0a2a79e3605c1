// `edgemesh-agent status`: the running agent's sync loop and sources, from its GET /status. Pure
// text rendering (tested without an agent).
import type { AgentStatus } from './agent.js';

const secs = (s: number | null): string => (s === null ? 'never' : `${s}s ago`);

export function renderAgentStatus(s: Pick<AgentStatus, 'sync' | 'source'> | undefined): string {
  if (!s?.sync || !s.source) return '';
  const y = s.sync;
  const src = s.source;
  const lines = [
    `# sync: ${y.ready ? 'ready' : 'NOT ready (first full sync not done)'}; ${y.healthy ? 'healthy' : 'UNHEALTHY'}; last success ${secs(y.lastSuccessSecondsAgo)}` +
      (y.pendingSeconds !== null ? `; a change pending for ${y.pendingSeconds}s` : '') +
      (y.failingSeconds !== null ? `; failing for ${y.failingSeconds}s (${y.consecutiveFailures} in a row)` : ''),
    `# source ${src.kind}: ${src.synced ? 'listed' : 'NOT listed yet'}; ${src.answered ? `last answer ${src.secondsSinceAnswer}s ago` : `no answer in ${src.secondsSinceAnswer}s`}; errors ${
      Object.entries(src.errors)
        .map(([r, n]) => `${r} ${n}`)
        .join(', ') || 'none'
    }`,
  ];
  if (src.lastError) lines.push(`# last source error (${src.lastError.secondsAgo}s ago, ${src.lastError.resource}): ${src.lastError.message}`);
  return `${lines.join('\n')}\n`;
}
