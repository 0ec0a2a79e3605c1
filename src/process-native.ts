// The addon's process part: re-executing the agent with V8 flags, glibc's heap figures and trim.

export interface MallocStats {
  /** Bytes the arenas (every thread's) obtained from the kernel. */
  arenaBytes: number;
  /** Bytes in chunks mmapped on their own. */
  mmapBytes: number;
  /** Bytes handed out and not freed. */
  inUseBytes: number;
  /** Bytes free inside the arenas: at most what malloc_trim could return. */
  freeBytes: number;
}

export interface ExecutableRelease {
  /** Mappings unmapped. */
  mappings: number;
  /** MADV_PAGEOUT was applied (false: not asked, or a kernel before 5.4). */
  pageout: boolean;
  rssBefore: number;
  rssAfter: number;
}

export interface NativeProcessBinding {
  /** execve(2): replaces the process; returns only by throwing (code, errno, syscall "execve"). */
  reexec(path: string, argv: string[], env: string[]): never;
  mallocStats(): MallocStats;
  /** malloc_trim(0): returns glibc's free memory to the kernel; true when some was released. */
  mallocTrim(): boolean;
  /** V8's low-memory collection (repeated full collections, weak caches cleared, compacting). */
  lowMemoryNotification(): void;
  /**
   * Releases the node executable's resident read-only pages (code, constant data): with `pageout`
   * first MADV_PAGEOUT (reclaims the pages only this process maps), then MADV_DONTNEED (unmaps the
   * rest; they stay in the page cache). Pages fault back in when touched. rssBefore/rssAfter: the
   * resident bytes of those mappings. Throws (code, errno, syscall) when madvise fails.
   */
  releaseExecutablePages(pageout: boolean): ExecutableRelease;
}
