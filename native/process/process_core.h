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

}  // namespace edgemesh
