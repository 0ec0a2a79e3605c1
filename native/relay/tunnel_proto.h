// The tunnel's request and response, plain C++ (no V8, no I/O): what a dialling agent sends
// inside TLS right after the handshake, and the accepting agent's one-byte answer.
//
//   request  = "EMT1" type(1)=1 len(1) service(len: "namespace/name") servicePort(2)
//              family(1)=4|6 endpointIp(4|16) endpointPort(2)          integers big-endian
//   response = "EMT1" status(1)                      0 = ok, then bytes flow both ways
//   register = "EMT1" type(1)=2 len(1)=0             a node without inbound reachability asks a
//              relay to hold this session for it (its name is its certificate's); answered by a
//              response, then session frames both ways: 'P' ping, 'O' pong, 'N' token(16)
//
// Relays. Before any TLS, on the same port, a plaintext header (the relay must read it, and it
// carries nothing secret: the two agents authenticate each other end to end afterwards):
//   join     = "EMJ1" len(1) node(len)    a dialler asks a relay to join it to a registered node;
//              answered "EMJ1" status(1); on 0 the relay splices the two sockets and the dialler
//              starts TLS with the node through it
//   data     = "EMD1" token(16)           the node's fresh outbound connection for one join
//
// Fixed, small and binary: the accepting side parses at most kMaxRequestSize bytes before it
// knows whether it serves the connection, and nothing in it is text to interpret.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

#include "relay/sockopt_core.h"

namespace edgemesh {

enum class TunnelStatus : uint8_t {
  kOk = 0,
  kBadRequest = 1,      // not a request this version understands
  kNoService = 2,       // no such Service port with endpoints on the accepting node
  kNotLocal = 3,        // the endpoint is not one of the accepting node's own for that port
  kEndpointFailed = 4,  // the accepting node could not connect to its endpoint
  kOverLimit = 5,       // the accepting node is at its connection limit
  kNotRegistered = 6,   // relay: no session of that node here
  kTimeout = 7,         // relay: the node did not open its data connection in time
  kCount
};
const char* TunnelStatusName(TunnelStatus s);

enum class RequestType : uint8_t { kConnect = 1, kRegister = 2 };

struct TunnelRequest {
  RequestType type = RequestType::kConnect;
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
std::string EncodeRegister();

// Session frames (inside TLS, after a register was answered ok).
constexpr uint8_t kFramePing = 'P', kFramePong = 'O', kFrameNotify = 'N';
constexpr size_t kTokenSize = 16;
// The size of the frame starting with `type` (0: not a frame type).
size_t FrameSize(uint8_t type);

// Plaintext relay headers.
enum class PlainKind : uint8_t { kUnknown, kJoin, kData };
constexpr size_t kMaxPlainHeader = 4 + 1 + 253;
static_assert(kMaxPlainHeader <= kMaxRequestSize, "one header buffer (kMaxRequestSize) holds either");
std::string EncodeJoin(const std::string& node);
std::string EncodeData(const uint8_t token[kTokenSize]);
// > 0: a complete header of that many bytes (kind, node or token filled); 0: need more; < 0: bad.
int DecodePlain(const uint8_t* p, size_t n, PlainKind* kind, std::string* node, uint8_t token[kTokenSize]);
// How many bytes the plaintext header starting with these `n` bytes has at least.
size_t PlainSizeSoFar(const uint8_t* p, size_t n);
// The relay's answer to a join: "EMJ1" status.
void EncodeJoinResponse(TunnelStatus s, uint8_t out[kResponseSize]);
int DecodeJoinResponse(const uint8_t* p, size_t n, TunnelStatus* out);
// > 0: decoded (kResponseSize); 0: need more; < 0: not a tunnel response.
int DecodeResponse(const uint8_t* p, size_t n, TunnelStatus* out);

}  // namespace edgemesh
