// Small helpers for the pure source tests: the seed fixture, a static load, the seed's config.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DesiredConfig } from '../../src/intent/desired.js';
import { parseCidr, parseHostPort } from '../../src/net.js';
import { DEFAULT_SELECTION } from '../../src/intent/selection.js';
import { StaticSource } from '../../src/cluster/static.js';
import { ClusterStore } from '../../src/cluster/store.js';

export const SEED_MONITORING_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'seed-monitoring');

/** The seed's node: service CIDR 10.10.0.0/16, the default proxy address. */
export const SEED_CONFIG: DesiredConfig = {
  serviceCidrs: [parseCidr('10.10.0.0/16')],
  proxyAddrs: [parseHostPort('169.254.96.16:40001')],
  selection: DEFAULT_SELECTION,
};

/** Loads a directory once through the static source (no watching) and returns the store. */
export async function loadDir(dir: string, errors: string[] = []): Promise<ClusterStore> {
  const store = new ClusterStore();
  const src = new StaticSource({ dir, store, rescanIntervalMs: 0, onFileError: (p, m) => errors.push(`${p}: ${m}`) });
  await src.start();
  src.stop();
  return store;
}
