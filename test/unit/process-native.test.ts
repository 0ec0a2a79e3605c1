// The addon's process part that the daemon uses to return memory: malloc_trim, and the release of
// the node executable's resident read-only pages (they must fault back in: the process keeps
// running the code it had unmapped). The release runs in a child node, which it changes.
import { execFileSync } from 'node:child_process';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { native } from '../../src/native/load.js';

const here = dirname(fileURLToPath(import.meta.url));
const NATIVE_JS = resolve(here, '..', '..', 'dist', 'src', 'native', 'load.js');

// Reads the resident bytes of the executable's mappings itself (smaps), releases, reads again,
// then runs code that start-up did not (a regex, JSON, a hash, a sort) and prints a JSON report.
const CHILD = `
import { readFileSync, readlinkSync } from 'node:fs';
import { createHash } from 'node:crypto';
const { native } = await import(process.argv[1]);
const exe = readlinkSync('/proc/self/exe');
const resident = () => {
  let cur = false, kb = 0;
  for (const l of readFileSync('/proc/self/smaps', 'utf8').split('\\n')) {
    const m = /^[0-9a-f]+-[0-9a-f]+ (\\S+) \\S+ \\S+ \\S+\\s*(.*)$/.exec(l);
    if (m) cur = m[2] === exe && m[1][1] === '-';
    else if (cur && l.startsWith('Rss:')) kb += Number(/(\\d+)/.exec(l)[1]);
  }
  return kb * 1024;
};
const before = resident();
const r = native().releaseExecutablePages(process.argv[2] === 'pageout');
const after = resident();
const work = createHash('sha256').update(JSON.stringify([...Array(5000).keys()].map((i) => ({ i, s: String(i).replace(/(\\d)/g, '<$1>') })).sort((a, b) => b.i - a.i))).digest('hex');
process.stdout.write(JSON.stringify({ before, after, r, work, afterWork: resident() }));
`;

function runChild(mode: 'pageout' | 'dontneed'): { before: number; after: number; afterWork: number; work: string; r: { mappings: number; pageout: boolean; rssBefore: number; rssAfter: number } } {
  const out = execFileSync(process.execPath, ['--input-type=module', '-e', CHILD, NATIVE_JS, mode], { encoding: 'utf8', timeout: 30_000 });
  return JSON.parse(out) as ReturnType<typeof runChild>;
}

describe('native process binding', () => {
  it('mallocTrim returns a boolean and mallocStats still reads after it', () => {
    expect(typeof native().mallocTrim()).toBe('boolean');
    expect(native().mallocStats().inUseBytes).toBeGreaterThan(0);
  });

  it('releaseExecutablePages unmaps the executable\'s resident read-only pages, and the code they held runs again (faulted back in)', () => {
    const c = runChild('dontneed');
    expect(c.r.mappings).toBeGreaterThanOrEqual(2); // code (r-x) and constant data (r--) at least
    expect(c.r.pageout).toBe(false);
    expect(c.before).toBeGreaterThan(10 * 1048576); // a started node has well over 10 MiB of its binary resident
    expect(c.r.rssAfter).toBeLessThan(c.r.rssBefore / 4);
    expect(c.after).toBeLessThan(c.before / 4);
    expect(c.work).toMatch(/^[0-9a-f]{64}$/);
    expect(c.afterWork).toBeGreaterThan(c.after); // running code brought pages back
  });

  it('with pageout it also asks the kernel to reclaim (Linux 5.4+) and unmaps the rest', () => {
    const c = runChild('pageout');
    expect(c.r.pageout).toBe(true);
    expect(c.r.rssAfter).toBeLessThan(c.r.rssBefore / 4);
    expect(c.work).toMatch(/^[0-9a-f]{64}$/);
  });

  it('lowMemoryNotification collects garbage a plain reference drop left in the heap', () => {
    let junk: unknown[] | undefined = Array.from({ length: 200_000 }, (_, i) => ({ i, s: `item ${i}` }));
    const before = process.memoryUsage().heapUsed;
    expect(junk.length).toBe(200_000);
    junk = undefined;
    native().lowMemoryNotification();
    expect(process.memoryUsage().heapUsed).toBeLessThan(before - 8 * 1048576);
  });

  it('a pageout argument that is not a boolean is a TypeError, never a crash', () => {
    const b = native() as unknown as Record<string, (...args: unknown[]) => unknown>;
    expect(() => b.releaseExecutablePages!()).toThrow(TypeError);
    expect(() => b.releaseExecutablePages!('pageout')).toThrow(/pageout must be a boolean/);
  });
});
