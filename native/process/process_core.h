// The agent's own process: re-executing itself with V8 flags, and glibc's heap figures.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace edgemesh {

// execve(path, argv, env). Returns only on failure, by throwing SysError (the errno of execve).
// The calling process is replaced; stdin, stdout and stderr pass on (their close-on-exec flag,
// which Node sets at start-up, is cleared first), every other descriptor of Node's is closed.
[[noreturn]] void Reexec(const std::string& path, const std::vector<std::string>& argv, const std::vector<std::string>& env);

struct MallocStats {
  uint64_t arenaBytes = 0;  // obtained from the kernel with brk/mmap for the arenas (all threads)
  uint64_t mmapBytes = 0;   // in chunks mmapped on their own
  uint64_t inUseBytes = 0;  // handed out and not freed, arenas and mmapped chunks
  uint64_t freeBytes = 0;   // free inside the arenas (what malloc_trim could return, at most)
};

MallocStats ReadMallocStats();

// malloc_trim(0): hands the free memory at the top of every arena and the free pages inside them
// back to the kernel. True when some memory was released.
bool TrimMalloc();

// The node executable's read-only mappings (its code and constant data: r-x and r--, never the
// writable ones), as /proc/self/smaps shows them, before and after a release.
struct ReleaseResult {
  int mappings = 0;        // mappings unmapped (MADV_DONTNEED)
  bool pageout = false;    // MADV_PAGEOUT was applied (false: not asked, or a kernel before 5.4)
  uint64_t rssBefore = 0;  // their resident bytes before
  uint64_t rssAfter = 0;   // and after
};

// Releases the node executable's resident read-only pages, which fault back in when touched:
// - pageout: first MADV_PAGEOUT, which reclaims the pages that only this process maps (clean file
//   pages leave the page cache; a later touch reads them from the file again);
// - then MADV_DONTNEED, which unmaps the rest from this process (they stay in the page cache;
//   a later touch is a minor fault). A mapping holding private copies (a relocated page) is
//   skipped: DONTNEED would discard them.
// Throws SysError (readlink, open, madvise).
ReleaseResult ReleaseExecutablePages(bool pageout);

}  // namespace edgemesh
