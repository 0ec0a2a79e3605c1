// Builds the NatBackend of each family from the --backend choice; `auto` asks detect.ts.
import type { Family } from './rules.js';
import type { Logger } from '../log.js';
import { netnsPath } from '../netns-path.js';
import { detectBackend, type Detection } from './detect.js';
import { IptablesNatBackend } from './iptables/iptables.js';
import { LegacyIptablesTable } from './iptables/iptables-legacy.js';
import { NftIptablesTable } from './iptables/iptables-nft.js';
import { NftablesBackend } from './nftables/nftables.js';
import { BACKEND_NAMES, type BackendName, type NatBackend } from './types.js';

export interface BackendOptions {
  /** Network namespace (path, or a name under /run/netns) to work in; default: our own. */
  netns?: string;
  /** Longest wait for the xtables lock (iptables-legacy). */
  lockWaitMs?: number;
  /** Chains our jump must precede (--order-before); checkOrder and status judge the order by it. */
  orderBefore?: readonly string[];
}

export function createBackend(name: BackendName, family: Family, opts: BackendOptions = {}): NatBackend {
  const netns = netnsPath(opts.netns);
  switch (name) {
    case 'iptables-legacy':
      return new IptablesNatBackend(
        new LegacyIptablesTable({ family, ...(netns ? { netns } : {}), ...(opts.lockWaitMs !== undefined ? { lockWaitMs: opts.lockWaitMs } : {}) }),
        opts.orderBefore,
      );
    case 'iptables-nft':
      return new IptablesNatBackend(new NftIptablesTable(family, netns ? { netns } : {}), opts.orderBefore);
    case 'nftables':
      return new NftablesBackend(family, netns ? { netns } : {});
  }
}

/** Resolves `auto` (logging the decision, its reasons and any split-brain warning). */
export async function resolveBackend(choice: BackendName | 'auto', families: readonly Family[], log: Logger, opts: BackendOptions = {}): Promise<{ name: BackendName; detection?: Detection }> {
  if (choice !== 'auto') return { name: choice };
  const netns = netnsPath(opts.netns);
  const detection = await detectBackend({ families, ...(netns ? { netns } : {}) });
  for (const w of detection.warnings) log.warn({ backend: detection.backend }, w);
  log.info({ backend: detection.backend, reasons: detection.reasons }, `backend auto: ${detection.backend} (${detection.reasons.join('; ')})`);
  return { name: detection.backend, detection };
}

export const ALL_BACKENDS: readonly BackendName[] = BACKEND_NAMES;
