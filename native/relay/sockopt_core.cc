#include "relay/sockopt_core.h"

#include <arpa/inet.h>

#include <cerrno>
#include <cstring>

#include "common/syserror.h"

#ifndef SO_ORIGINAL_DST
#define SO_ORIGINAL_DST 80  // linux/netfilter_ipv4.h
#endif
#ifndef IP6T_SO_ORIGINAL_DST
#define IP6T_SO_ORIGINAL_DST 80  // linux/netfilter_ipv6/ip6_tables.h
#endif

namespace edgemesh {

uint16_t SockAddr::port() const {
  if (ss.ss_family == AF_INET) return ntohs(reinterpret_cast<const sockaddr_in*>(&ss)->sin_port);
  if (ss.ss_family == AF_INET6) return ntohs(reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_port);
  return 0;
}

std::string SockAddr::IpString() const {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr, buf, sizeof buf);
  } else if (ss.ss_family == AF_INET6) {
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr, buf, sizeof buf);
  } else {
    return "";
  }
  return buf;
}

std::string SockAddr::ToString() const {
  if (ss.ss_family == AF_INET6) return "[" + IpString() + "]:" + std::to_string(port());
  if (ss.ss_family == AF_INET) return IpString() + ":" + std::to_string(port());
  return "";
}

SockEndpoint SockAddr::ToEndpoint() const {
  SockEndpoint e;
  e.family = ss.ss_family == AF_INET6 ? 6 : ss.ss_family == AF_INET ? 4 : 0;
  e.address = IpString();
  e.port = port();
  return e;
}

std::string SockAddr::IpBytes() const {
  if (ss.ss_family == AF_INET) {
    return std::string(reinterpret_cast<const char*>(&reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr), 4);
  }
  if (ss.ss_family == AF_INET6) {
    return std::string(reinterpret_cast<const char*>(&reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr), 16);
  }
  return "";
}

bool SockAddr::SameIpPort(const SockAddr& o) const {
  return ss.ss_family == o.ss.ss_family && port() == o.port() && IpBytes() == o.IpBytes();
}

bool SockAddr::IsAnyAddress() const {
  if (ss.ss_family == AF_INET) return reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr.s_addr == htonl(INADDR_ANY);
  if (ss.ss_family == AF_INET6) return IN6_IS_ADDR_UNSPECIFIED(&reinterpret_cast<const sockaddr_in6*>(&ss)->sin6_addr);
  return false;
}

bool ParseSockAddr(const std::string& ip, uint16_t port, SockAddr* out) {
  *out = SockAddr{};
  auto* sin = reinterpret_cast<sockaddr_in*>(&out->ss);
  if (inet_pton(AF_INET, ip.c_str(), &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    sin->sin_port = htons(port);
    out->len = sizeof(sockaddr_in);
    return true;
  }
  *out = SockAddr{};
  auto* sin6 = reinterpret_cast<sockaddr_in6*>(&out->ss);
  if (inet_pton(AF_INET6, ip.c_str(), &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(port);
    out->len = sizeof(sockaddr_in6);
    return true;
  }
  *out = SockAddr{};
  return false;
}

int GetOriginalDst(int fd, SockAddr* out, const char** syscall) {
  SockAddr local;
  local.len = sizeof local.ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&local.ss), &local.len) != 0) {
    *syscall = "getsockname";
    return errno;
  }
  *out = SockAddr{};
  *syscall = "getsockopt";
  bool v4 = local.family() == AF_INET;
  if (local.family() == AF_INET6) {
    const auto* l6 = reinterpret_cast<const sockaddr_in6*>(&local.ss);
    v4 = IN6_IS_ADDR_V4MAPPED(&l6->sin6_addr);
  } else if (!v4) {
    return EAFNOSUPPORT;
  }
  if (v4) {
    socklen_t len = sizeof(sockaddr_in);
    if (getsockopt(fd, SOL_IP, SO_ORIGINAL_DST, &out->ss, &len) != 0) return errno;
    out->len = sizeof(sockaddr_in);
    return 0;
  }
  socklen_t len = sizeof(sockaddr_in6);
  if (getsockopt(fd, SOL_IPV6, IP6T_SO_ORIGINAL_DST, &out->ss, &len) != 0) return errno;
  out->len = sizeof(sockaddr_in6);
  return 0;
}

int GetOriginalDstKnownFamily(int fd, int family, SockAddr* out) {
  *out = SockAddr{};
  socklen_t len = family == AF_INET ? sizeof(sockaddr_in) : sizeof(sockaddr_in6);
  int level = family == AF_INET ? SOL_IP : SOL_IPV6;
  int opt = family == AF_INET ? SO_ORIGINAL_DST : IP6T_SO_ORIGINAL_DST;
  if (getsockopt(fd, level, opt, &out->ss, &len) != 0) return errno;
  out->len = len;
  return 0;
}

SockEndpoint OriginalDstOrThrow(int fd) {
  SockAddr a;
  const char* call = "getsockopt";
  int e = GetOriginalDst(fd, &a, &call);
  if (e != 0) {
    std::string msg = std::string(call) + " SO_ORIGINAL_DST on fd " + std::to_string(fd) + ": " + strerror(e);
    if (e == ENOENT) msg += " (no conntrack entry for this connection)";
    throw SysError(e, call, msg);
  }
  return a.ToEndpoint();
}

}  // namespace edgemesh
