// Loads the addon and declares its surface once. Each native part adds its functions to
// NativeBinding here; the TypeScript wrappers (backends/, proxy/, tunnel/) are the only callers.
import { createRequire } from 'node:module';
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NativeLoadError } from '../errors.js';
import type { NativeIptcBinding } from './binding.js';
import type { NativeNftBinding } from './binding.js';
import type { NativeProxyBinding } from './binding.js';
import type { NativeCertsBinding } from './binding.js';
import type { NativeProcessBinding } from './binding.js';

export interface NativeBinding extends NativeIptcBinding, NativeNftBinding, NativeProxyBinding, NativeCertsBinding, NativeProcessBinding {
  /** Names of the native parts compiled in (iptc, sockopt, relay, nft, certs...). */
  readonly modules: readonly string[];
}

let cached: NativeBinding | undefined;

function packageRoot(): string {
  // dist/src/native/load.js or src/native/load.ts -> the package root holds binding.gyp
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 4; i++) {
    if (existsSync(join(dir, 'binding.gyp'))) return dir;
    dir = dirname(dir);
  }
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
}

/** The addon, loaded on first use. Throws NativeLoadError naming every path tried. */
export function native(): NativeBinding {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  const root = packageRoot();
  const candidates = [
    process.env.EDGEMESH_NATIVE_PATH,
    join(root, 'build', 'Release', 'edgemesh_native.node'),
    join(root, 'build', 'Debug', 'edgemesh_native.node'),
  ].filter((p): p is string => typeof p === 'string' && p.length > 0);
  const failures: string[] = [];
  for (const p of candidates) {
    if (!existsSync(p)) {
      failures.push(`${p}: not found`);
      continue;
    }
    try {
      cached = require(p) as NativeBinding;
      return cached;
    } catch (e) {
      failures.push(`${p}: ${(e as Error).message}`);
    }
  }
  throw new NativeLoadError(`cannot load the native addon (run "npm run build:native"); tried ${failures.join('; ')}`);
}
