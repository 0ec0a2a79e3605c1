// The addon's process part: re-executing the agent with V8 flags, and glibc's heap figures.

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

export interface NativeProcessBinding {
  /** execve(2): replaces the process; returns only by throwing (code, errno, syscall "execve"). */
  reexec(path: string, argv: string[], env: string[]): never;
  mallocStats(): MallocStats;
}
