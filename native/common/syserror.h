// Plain C++ error type carried from the netfilter/socket cores to the binding layer.
// No V8 here: the binding turns a SysError into a JS Error with code/errno/syscall.
#pragma once
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>

namespace edgemesh {

// Name of an errno value ("EAGAIN"), or "E<number>" for an unknown one.
const char* ErrnoName(int err);

struct SysError : std::runtime_error {
  int err;              // errno value (0 when not a syscall failure)
  std::string syscall;  // the call that failed ("iptc_commit", "flock", "getsockopt")
  std::string code;     // stable code; the errno name unless set ("ELOCKTIMEOUT", "EINVALIDOP")
  int opIndex = -1;     // ETRANSACTION: index of the failing operation of a transaction (-1: none)
  SysError(int e, std::string call, const std::string& msg, std::string c = "")
      : std::runtime_error(msg), err(e), syscall(std::move(call)), code(c.empty() ? std::string(ErrnoName(e)) : std::move(c)) {}
};

}  // namespace edgemesh
