#include "relay/tunnel_proto.h"

#include <arpa/inet.h>

#include <cstring>

namespace edgemesh {

namespace {

constexpr uint8_t kMagic[4] = {'E', 'M', 'T', '1'};
constexpr uint8_t kJoinMagic[4] = {'E', 'M', 'J', '1'};
constexpr uint8_t kDataMagic[4] = {'E', 'M', 'D', '1'};
constexpr uint8_t kTypeConnect = 1;
constexpr uint8_t kTypeRegister = 2;

// A node name: a DNS-1123 subdomain (lower-case letters, digits, '-' and '.').
bool ValidNode(const std::string& s) {
  if (s.empty() || s.size() > 253) return false;
  for (char ch : s) {
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.';
    if (!ok) return false;
  }
  return true;
}

// namespace/name: DNS labels and dots around exactly one slash.
bool ValidService(const std::string& s) {
  size_t slash = s.find('/');
  if (slash == std::string::npos || slash == 0 || slash + 1 == s.size() || s.find('/', slash + 1) != std::string::npos) return false;
  for (char ch : s) {
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '/';
    if (!ok) return false;
  }
  return true;
}

}  // namespace

const char* TunnelStatusName(TunnelStatus s) {
  switch (s) {
    case TunnelStatus::kOk: return "ok";
    case TunnelStatus::kBadRequest: return "bad-request";
    case TunnelStatus::kNoService: return "no-service";
    case TunnelStatus::kNotLocal: return "not-local";
    case TunnelStatus::kEndpointFailed: return "endpoint-failed";
    case TunnelStatus::kOverLimit: return "over-limit";
    case TunnelStatus::kNotRegistered: return "not-registered";
    case TunnelStatus::kTimeout: return "timeout";
    case TunnelStatus::kCount: break;
  }
  return "bad-request";
}

bool EncodeRequest(const TunnelRequest& r, std::string* out) {
  if (r.service.empty() || r.service.size() > 253) return false;
  int fam = r.endpoint.family();
  if (fam != AF_INET && fam != AF_INET6) return false;
  out->clear();
  out->append(reinterpret_cast<const char*>(kMagic), 4);
  out->push_back(static_cast<char>(kTypeConnect));
  out->push_back(static_cast<char>(r.service.size()));
  out->append(r.service);
  out->push_back(static_cast<char>(r.servicePort >> 8));
  out->push_back(static_cast<char>(r.servicePort & 0xff));
  out->push_back(static_cast<char>(fam == AF_INET ? 4 : 6));
  out->append(r.endpoint.IpBytes());
  uint16_t p = r.endpoint.port();
  out->push_back(static_cast<char>(p >> 8));
  out->push_back(static_cast<char>(p & 0xff));
  return true;
}

// The longest service name a request may carry (EncodeRequest's limit; kMaxRequestSize is
// computed from it).
constexpr size_t kMaxServiceLen = 253;

size_t RequestSizeSoFar(const uint8_t* p, size_t n) {
  if (n < 6) return 6;
  if (p[4] == kTypeRegister) return 6;
  // A length byte of 254 or 255 is malformed (DecodeRequest refuses it at 6 bytes): never ask
  // for more than kMaxRequestSize, the reader's buffer. Before this check a peer could make the
  // accepting relay read up to 282 bytes into its 280-byte buffer (Conn::hdr, overwriting
  // hdrLen after it).
  if (p[5] > kMaxServiceLen) return 6;
  size_t need = 6 + p[5] + 3;
  if (n < need) return need;
  uint8_t fam = p[need - 1];
  return need + (fam == 6 ? 16 : 4) + 2;
}

int DecodeRequest(const uint8_t* p, size_t n, TunnelRequest* out) {
  size_t need = 6;
  if (n < need) return std::memcmp(p, kMagic, n < 4 ? n : 4) == 0 ? 0 : -1;
  if (std::memcmp(p, kMagic, 4) != 0) return -1;
  if (p[4] == kTypeRegister) {
    if (p[5] != 0) return -1;
    *out = TunnelRequest{};
    out->type = RequestType::kRegister;
    return 6;
  }
  if (p[4] != kTypeConnect) return -1;
  size_t len = p[5];
  if (len == 0 || len > kMaxServiceLen) return -1;
  need += len + 3;
  if (n < need) return 0;
  uint8_t fam = p[6 + len + 2];
  if (fam != 4 && fam != 6) return -1;
  size_t ipLen = fam == 4 ? 4 : 16;
  need += ipLen + 2;
  if (n < need) return 0;
  out->type = RequestType::kConnect;
  out->service.assign(reinterpret_cast<const char*>(p + 6), len);
  if (!ValidService(out->service)) return -1;
  out->servicePort = static_cast<uint16_t>(p[6 + len] << 8 | p[6 + len + 1]);
  const uint8_t* ip = p + 6 + len + 3;
  uint16_t port = static_cast<uint16_t>(ip[ipLen] << 8 | ip[ipLen + 1]);
  if (out->servicePort == 0 || port == 0) return -1;
  out->endpoint = SockAddr{};
  if (fam == 4) {
    auto* sa = reinterpret_cast<sockaddr_in*>(&out->endpoint.ss);
    sa->sin_family = AF_INET;
    std::memcpy(&sa->sin_addr, ip, 4);
    sa->sin_port = htons(port);
    out->endpoint.len = sizeof(sockaddr_in);
  } else {
    auto* sa = reinterpret_cast<sockaddr_in6*>(&out->endpoint.ss);
    sa->sin6_family = AF_INET6;
    std::memcpy(&sa->sin6_addr, ip, 16);
    sa->sin6_port = htons(port);
    out->endpoint.len = sizeof(sockaddr_in6);
  }
  return static_cast<int>(need);
}

void EncodeResponse(TunnelStatus s, uint8_t out[kResponseSize]) {
  std::memcpy(out, kMagic, 4);
  out[4] = static_cast<uint8_t>(s);
}

int DecodeResponse(const uint8_t* p, size_t n, TunnelStatus* out) {
  if (std::memcmp(p, kMagic, n < 4 ? n : 4) != 0) return -1;
  if (n < kResponseSize) return 0;
  if (p[4] >= static_cast<uint8_t>(TunnelStatus::kCount)) return -1;
  *out = static_cast<TunnelStatus>(p[4]);
  return static_cast<int>(kResponseSize);
}

}  // namespace edgemesh

namespace edgemesh {

std::string EncodeRegister() {
  std::string out(reinterpret_cast<const char*>(kMagic), 4);
  out.push_back(static_cast<char>(kTypeRegister));
  out.push_back('\0');
  return out;
}

size_t FrameSize(uint8_t type) {
  switch (type) {
    case kFramePing:
    case kFramePong: return 1;
    case kFrameNotify: return 1 + kTokenSize;
    default: return 0;
  }
}

std::string EncodeJoin(const std::string& node) {
  std::string out(reinterpret_cast<const char*>(kJoinMagic), 4);
  out.push_back(static_cast<char>(node.size()));
  out.append(node);
  return out;
}

std::string EncodeData(const uint8_t token[kTokenSize]) {
  std::string out(reinterpret_cast<const char*>(kDataMagic), 4);
  out.append(reinterpret_cast<const char*>(token), kTokenSize);
  return out;
}

size_t PlainSizeSoFar(const uint8_t* p, size_t n) {
  if (n < 5) return 5;
  if (std::memcmp(p, kDataMagic, 4) == 0) return 4 + kTokenSize;
  if (p[4] == 0 || p[4] > kMaxServiceLen) return 5;  // malformed at 5 bytes (DecodePlain says so)
  return 5 + p[4];
}

int DecodePlain(const uint8_t* p, size_t n, PlainKind* kind, std::string* node, uint8_t token[kTokenSize]) {
  size_t m = n < 4 ? n : 4;
  bool join = std::memcmp(p, kJoinMagic, m) == 0, data = std::memcmp(p, kDataMagic, m) == 0;
  if (!join && !data) return -1;
  if (n < 5) return 0;
  if (data) {
    if (n < 4 + kTokenSize) return 0;
    *kind = PlainKind::kData;
    std::memcpy(token, p + 4, kTokenSize);
    return static_cast<int>(4 + kTokenSize);
  }
  size_t len = p[4];
  if (len == 0 || len > kMaxServiceLen) return -1;
  if (n < 5 + len) return 0;
  node->assign(reinterpret_cast<const char*>(p + 5), len);
  if (!ValidNode(*node)) return -1;
  *kind = PlainKind::kJoin;
  return static_cast<int>(5 + len);
}

void EncodeJoinResponse(TunnelStatus s, uint8_t out[kResponseSize]) {
  std::memcpy(out, kJoinMagic, 4);
  out[4] = static_cast<uint8_t>(s);
}

int DecodeJoinResponse(const uint8_t* p, size_t n, TunnelStatus* out) {
  if (std::memcmp(p, kJoinMagic, n < 4 ? n : 4) != 0) return -1;
  if (n < kResponseSize) return 0;
  if (p[4] >= static_cast<uint8_t>(TunnelStatus::kCount)) return -1;
  *out = static_cast<TunnelStatus>(p[4]);
  return static_cast<int>(kResponseSize);
}

}  // namespace edgemesh
