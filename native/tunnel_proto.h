// The tunnel's request and response, plain C++ (no V8, no I/O): what a dialling agent sends
// inside TLS right after the handshake, and the accepting agent's one-byte answer.
//
//   request  = "EMT1" type(1)=1 len(1) service(len: "namespace/name") servicePort(2)
//              family(1)=4|6 endpointIp(4|16) endpointPort(2)          integers big-endian
//   response = "EMT1" status(1)                      0 = ok, then bytes flow both ways
//
// Fixed, small and binary: the accepting side parses at most kMaxRequestSize bytes before it
// knows whether it serves the connection, and nothing in it is text to interpret.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "sockopt_core.h"

namespace edgemesh {

enum class TunnelStatus : uint8_t {
  kOk = 0,
  kBadRequest = 1,      // not a request this version understands
  kNoService = 2,       // no such Service port with endpoints on the accepting node
  kNotLocal = 3,        // the endpoint is not one of the accepting node's own for that port
  kEndpointFailed = 4,  // the accepting node could not connect to its endpoint
  kOverLimit = 5,       // the accepting node is at its connection limit
  kCount
};
const char* TunnelStatusName(TunnelStatus s);

struct TunnelRequest {
  std::string service;  // "namespace/name"
  uint16_t servicePort = 0;
  SockAddr endpoint;
};

constexpr size_t kResponseSize = 5;
constexpr size_t kMaxRequestSize = 4 + 1 + 1 + 253 + 2 + 1 + 16 + 2;

// False when the request cannot be encoded (a service name longer than 253 bytes or empty).
bool EncodeRequest(const TunnelRequest& r, std::string* out);
// How many bytes the request whose first `n` bytes are at `p` has at least (its full size once
// the lengths in it are known). The reader asks for exactly that much, so that nothing after
// the request is consumed with it.
size_t RequestSizeSoFar(const uint8_t* p, size_t n);
// > 0: a complete request of that many bytes was decoded; 0: need more bytes; < 0: malformed.
int DecodeRequest(const uint8_t* p, size_t n, TunnelRequest* out);
void EncodeResponse(TunnelStatus s, uint8_t out[kResponseSize]);
// > 0: decoded (kResponseSize); 0: need more; < 0: not a tunnel response.
int DecodeResponse(const uint8_t* p, size_t n, TunnelStatus* out);

}  // namespace edgemesh
