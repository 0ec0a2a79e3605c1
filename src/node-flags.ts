// The node flags of `edgemesh-agent run` (bin.ts: its first line, and its re-execution; the
// image's entry point passes the same). Measured with
// `npm run bench -- --only=footprint`; docs/operations.md ("Memory") has the figures.
/**
 * --max-semi-space-size=1: the young generation stays at 1 MiB semi-spaces instead of growing
 *   to 16 MiB each while manifests or API lists are parsed (about 25 MiB of peak and settled RSS).
 * --single-threaded-gc: no background GC threads; the agent's event loop is not latency-bound
 *   (the data path is native), and each helper thread costs stack and arena memory.
 * --expose-gc: the fallback of the memory-reducing collection after the first sync (agent.ts)
 *   when the addon, which asks V8 for its low-memory collection, cannot load.
 */
export const NODE_FLAGS: readonly string[] = ['--max-semi-space-size=1', '--single-threaded-gc', '--expose-gc'];
