// The package version (--version, edgemesh_build_info), read from package.json next to the code:
// ../package.json from src/ (tests), ../../package.json from dist/src/ (the CLI, the image).
import { readFileSync } from 'node:fs';

let cached: string | undefined;

export function packageVersion(): string {
  if (cached !== undefined) return cached;
  for (const rel of ['../package.json', '../../package.json']) {
    try {
      const pkg = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as { name?: string; version?: string };
      if (pkg.name === 'edgemesh-hybrid-nat' && typeof pkg.version === 'string') return (cached = pkg.version);
    } catch {
      // not this one
    }
  }
  return (cached = 'unknown');
}
