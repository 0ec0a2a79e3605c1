#include "process/process_core.h"

#include <fcntl.h>
#include <malloc.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "common/syserror.h"

namespace edgemesh {

void Reexec(const std::string& path, const std::vector<std::string>& argv, const std::vector<std::string>& env) {
  std::vector<char*> av;
  av.reserve(argv.size() + 1);
  for (const auto& a : argv) av.push_back(const_cast<char*>(a.c_str()));
  av.push_back(nullptr);
  std::vector<char*> ev;
  ev.reserve(env.size() + 1);
  for (const auto& e : env) ev.push_back(const_cast<char*>(e.c_str()));
  ev.push_back(nullptr);
  // Node marks every descriptor it inherited close-on-exec at start-up, stdio included: the new
  // image must get the same stdin, stdout and stderr.
  for (int fd = 0; fd <= 2; fd++) {
    const int flags = fcntl(fd, F_GETFD);
    if (flags >= 0 && (flags & FD_CLOEXEC)) fcntl(fd, F_SETFD, flags & ~FD_CLOEXEC);
  }
  execve(path.c_str(), av.data(), ev.data());
  const int e = errno;
  throw SysError(e, "execve", "cannot re-execute " + path + ": " + std::strerror(e));
}

MallocStats ReadMallocStats() {
  const struct mallinfo2 mi = mallinfo2();
  MallocStats s;
  s.arenaBytes = mi.arena;
  s.mmapBytes = mi.hblkhd;
  s.inUseBytes = mi.uordblks + mi.hblkhd;
  s.freeBytes = mi.fordblks;
  return s;
}

}  // namespace edgemesh
