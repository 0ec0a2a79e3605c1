// SO_ORIGINAL_DST and socket address helpers. Plain C++, no V8: used by the sockopt binding
// and by the relay's accept path.
#pragma once
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstdint>
#include <string>

namespace edgemesh {

// A socket address as text: family 4 or 6, address without brackets, port.
struct SockEndpoint {
  int family = 0;
  std::string address;
  uint16_t port = 0;
};

// A sockaddr that fits both families, with its length.
struct SockAddr {
  sockaddr_storage ss{};
  socklen_t len = 0;
  int family() const { return ss.ss_family; }
  uint16_t port() const;
  // "ip:port" or "[ip]:port"
  std::string ToString() const;
  // Just the IP text.
  std::string IpString() const;
  SockEndpoint ToEndpoint() const;
  // Address bytes (4 or 16) without the port.
  std::string IpBytes() const;
  bool SameIpPort(const SockAddr& o) const;
  bool IsAnyAddress() const;
};

// Parses an IPv4 or IPv6 literal. Returns false when `ip` is not one.
bool ParseSockAddr(const std::string& ip, uint16_t port, SockAddr* out);

// Reads the pre-DNAT destination of an accepted TCP socket: SO_ORIGINAL_DST (SOL_IP) for IPv4,
// IP6T_SO_ORIGINAL_DST (SOL_IPV6) for IPv6; an IPv6 socket carrying an IPv4-mapped connection
// is asked at SOL_IP. Returns 0 or the errno of the failed call; `*syscall` names that call.
int GetOriginalDst(int fd, SockAddr* out, const char** syscall);

// The same for a socket whose family is known (AF_INET or AF_INET6 without v4-mapped
// addresses): one syscall, no getsockname. The relay's accept path uses this.
int GetOriginalDstKnownFamily(int fd, int family, SockAddr* out);

// The same, throwing SysError (code = errno name, syscall = "getsockopt" or "getsockname").
SockEndpoint OriginalDstOrThrow(int fd);

}  // namespace edgemesh
