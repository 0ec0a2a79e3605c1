// Run a piece of work inside another network namespace on the calling thread only
// (setns(2) is per thread), and come back. Plain C++, no V8.
#pragma once
#include <string>

namespace edgemesh {

// Enters the network namespace at `path` (e.g. /run/netns/NAME, /proc/PID/ns/net) for the
// lifetime of the guard, on this thread. Empty path: does nothing. Throws SysError on failure.
// If switching back fails the process aborts: a pool thread left in a foreign namespace would
// silently run later work in the wrong place.
class NetnsGuard {
 public:
  explicit NetnsGuard(const std::string& path);
  ~NetnsGuard();
  NetnsGuard(const NetnsGuard&) = delete;
  NetnsGuard& operator=(const NetnsGuard&) = delete;

 private:
  int self_ = -1;
};

}  // namespace edgemesh
