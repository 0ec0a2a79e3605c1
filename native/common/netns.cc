#include "common/netns.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>

#include "common/syserror.h"

namespace edgemesh {

NetnsGuard::NetnsGuard(const std::string& path) {
  if (path.empty()) return;
  int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
  if (self < 0) throw SysError(errno, "open", "cannot open /proc/thread-self/ns/net: " + std::string(strerror(errno)));
  int target = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (target < 0) {
    int e = errno;
    close(self);
    throw SysError(e, "open", "cannot open network namespace " + path + ": " + strerror(e));
  }
  if (setns(target, CLONE_NEWNET) != 0) {
    int e = errno;
    close(target);
    close(self);
    throw SysError(e, "setns", "cannot enter network namespace " + path + ": " + strerror(e));
  }
  close(target);
  self_ = self;
}

NetnsGuard::~NetnsGuard() {
  if (self_ < 0) return;
  if (setns(self_, CLONE_NEWNET) != 0) {
    std::fprintf(stderr, "edgemesh: cannot return to the original network namespace: %s\n", strerror(errno));
    std::abort();
  }
  close(self_);
}

}  // namespace edgemesh
