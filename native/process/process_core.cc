#include "process/process_core.h"

#include <fcntl.h>
#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

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

bool TrimMalloc() { return malloc_trim(0) == 1; }

namespace {

struct Mapping {
  uintptr_t start = 0;
  uintptr_t end = 0;
  bool readOnly = false;
  bool exe = false;
  uint64_t rss = 0;
  uint64_t anonymous = 0;
};

std::vector<Mapping> ExecutableMappings() {
  char exe[4096];
  const ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n < 0) {
    const int e = errno;
    throw SysError(e, "readlink", std::string("cannot read /proc/self/exe: ") + std::strerror(e));
  }
  const std::string exePath(exe, static_cast<size_t>(n));
  std::ifstream in("/proc/self/smaps");
  if (!in) {
    const int e = errno;
    throw SysError(e, "open", std::string("cannot read /proc/self/smaps: ") + std::strerror(e));
  }
  std::vector<Mapping> out;
  Mapping* cur = nullptr;
  std::string line;
  while (std::getline(in, line)) {
    unsigned long long start = 0, end = 0;
    char perms[8] = {};
    int pathAt = 0;
    // "start-end perms offset dev inode [path]"; a field line ("Rss:   12 kB") does not match.
    if (std::sscanf(line.c_str(), "%llx-%llx %7s %*s %*s %*s %n", &start, &end, perms, &pathAt) >= 3 && pathAt > 0) {
      Mapping m;
      m.start = static_cast<uintptr_t>(start);
      m.end = static_cast<uintptr_t>(end);
      m.readOnly = perms[0] == 'r' && perms[1] == '-';
      m.exe = line.compare(static_cast<size_t>(pathAt), std::string::npos, exePath) == 0;
      out.push_back(m);
      cur = &out.back();
      continue;
    }
    unsigned long long kb = 0;
    if (cur && std::sscanf(line.c_str(), "Rss: %llu kB", &kb) == 1) cur->rss = kb << 10;
    if (cur && std::sscanf(line.c_str(), "Anonymous: %llu kB", &kb) == 1) cur->anonymous = kb << 10;
  }
  std::vector<Mapping> exeOnly;
  for (const auto& m : out)
    if (m.exe && m.readOnly) exeOnly.push_back(m);
  return exeOnly;
}

}  // namespace

ReleaseResult ReleaseExecutablePages(bool pageout) {
  ReleaseResult r;
  const std::vector<Mapping> before = ExecutableMappings();
  for (const auto& m : before) r.rssBefore += m.rss;
  if (pageout) {
    r.pageout = true;
    for (const auto& m : before) {
      if (madvise(reinterpret_cast<void*>(m.start), m.end - m.start, MADV_PAGEOUT) == 0) continue;
      const int e = errno;
      if (e == EINVAL) {  // MADV_PAGEOUT is Linux 5.4+: unmapping alone still applies
        r.pageout = false;
        break;
      }
      throw SysError(e, "madvise", std::string("madvise(MADV_PAGEOUT) of the executable's pages failed: ") + std::strerror(e));
    }
  }
  for (const auto& m : before) {
    if (m.anonymous != 0) continue;
    if (madvise(reinterpret_cast<void*>(m.start), m.end - m.start, MADV_DONTNEED) != 0) {
      const int e = errno;
      throw SysError(e, "madvise", std::string("madvise(MADV_DONTNEED) of the executable's pages failed: ") + std::strerror(e));
    }
    r.mappings++;
  }
  for (const auto& m : ExecutableMappings()) r.rssAfter += m.rss;
  return r;
}

}  // namespace edgemesh
