// libFuzzer target for the tunnel's request/response codec (tunnel_proto.h), which parses the
// first bytes an authenticated peer sends (and the answer a dialled peer gives) before anything
// else happens. Pure parsing: no TLS, no sockets.
//
// Input: the bytes as received. Properties checked besides "no crash, no ASan/UBSan report",
// for every prefix length n of the input (the relay decodes after every read):
//  - RequestSizeSoFar never asks for more than kMaxRequestSize (the reader's buffer) nor for
//    fewer than 6 bytes;
//  - DecodeRequest: need-more (0) only when RequestSizeSoFar(n) > n; a decoded request (k > 0)
//    is exactly RequestSizeSoFar(n) bytes long, decodes the same from those k bytes alone, and
//    once malformed a prefix stays malformed as bytes are added;
//  - round trip: a decoded request encodes back to exactly the k bytes it came from;
//  - DecodeResponse: decoded only from 5 bytes, and its status encodes back to the same bytes.
#include <arpa/inet.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "relay/tunnel_proto.h"

using namespace edgemesh;

namespace {

[[noreturn]] void Fail(const char* what, const uint8_t* p, size_t n, long a, long b) {
  std::fprintf(stderr, "fuzz_tunnel_proto: %s (prefix of %zu bytes; %ld, %ld):", what, n, a, b);
  for (size_t i = 0; i < n && i < 64; i++) std::fprintf(stderr, " %02x", p[i]);
  std::fprintf(stderr, "\n");
  std::abort();
}

bool SameRequest(const TunnelRequest& a, const TunnelRequest& b) {
  return a.type == b.type && a.service == b.service && a.servicePort == b.servicePort && a.endpoint.family() == b.endpoint.family() &&
         a.endpoint.IpBytes() == b.endpoint.IpBytes() && a.endpoint.port() == b.endpoint.port();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 2 * kMaxRequestSize) return 0;
  // A copy of exactly `size` bytes: a read past the end is an ASan report, not luck.
  uint8_t* p = static_cast<uint8_t*>(std::malloc(size ? size : 1));
  if (size) std::memcpy(p, data, size);

  bool malformed = false;
  for (size_t n = 1; n <= size; n++) {
    const size_t need = RequestSizeSoFar(p, n);
    if (need > kMaxRequestSize || need < 6) Fail("RequestSizeSoFar out of range", p, n, static_cast<long>(need), 0);
    TunnelRequest req;
    const int k = DecodeRequest(p, n, &req);
    if (malformed && k >= 0) Fail("a malformed prefix became valid", p, n, k, 0);
    if (k < 0) malformed = true;
    if (k == 0 && need <= n) Fail("need-more, yet RequestSizeSoFar says it is all there", p, n, k, static_cast<long>(need));
    if (k > 0) {
      if (static_cast<size_t>(k) != need || static_cast<size_t>(k) > n) Fail("decoded size differs from RequestSizeSoFar", p, n, k, static_cast<long>(need));
      TunnelRequest again;
      if (DecodeRequest(p, static_cast<size_t>(k), &again) != k || !SameRequest(req, again)) Fail("the request alone decodes differently", p, n, k, 0);
      std::string enc;
      if (req.type == RequestType::kRegister) enc = EncodeRegister();
      else if (!EncodeRequest(req, &enc)) Fail("a decoded request does not encode", p, n, k, 0);
      if (enc.size() != static_cast<size_t>(k) || std::memcmp(enc.data(), p, enc.size()) != 0) Fail("encode(decode(x)) != x", p, n, k, static_cast<long>(enc.size()));
    }

    // The relay's plaintext headers (join, data) are read into the same buffer.
    const size_t pneed = PlainSizeSoFar(p, n);
    if (pneed > kMaxPlainHeader || pneed < 5) Fail("PlainSizeSoFar out of range", p, n, static_cast<long>(pneed), 0);
    PlainKind kind = PlainKind::kUnknown;
    std::string node;
    uint8_t token[kTokenSize];
    const int pk = DecodePlain(p, n, &kind, &node, token);
    if (pk > 0) {
      if (static_cast<size_t>(pk) != pneed) Fail("plain header size differs from PlainSizeSoFar", p, n, pk, static_cast<long>(pneed));
      const std::string enc = kind == PlainKind::kJoin ? EncodeJoin(node) : EncodeData(token);
      if (enc.size() != static_cast<size_t>(pk) || std::memcmp(enc.data(), p, enc.size()) != 0) Fail("encode(decode(plain)) != plain", p, n, pk, 0);
    } else if (pk == 0 && pneed <= n) {
      Fail("plain need-more, yet PlainSizeSoFar says it is all there", p, n, pk, static_cast<long>(pneed));
    }
    TunnelStatus js = TunnelStatus::kCount;
    if (DecodeJoinResponse(p, n, &js) > 0) {
      uint8_t back[kResponseSize];
      EncodeJoinResponse(js, back);
      if (std::memcmp(back, p, kResponseSize) != 0) Fail("encode(decode(join response)) != join response", p, n, 0, 0);
    }

    TunnelStatus st = TunnelStatus::kCount;
    const int r = DecodeResponse(p, n, &st);
    if (r > 0) {
      if (r != static_cast<int>(kResponseSize) || n < kResponseSize || st >= TunnelStatus::kCount) Fail("bad response decode", p, n, r, static_cast<long>(st));
      uint8_t back[kResponseSize];
      EncodeResponse(st, back);
      if (std::memcmp(back, p, kResponseSize) != 0) Fail("encode(decode(response)) != response", p, n, r, 0);
    } else if (r == 0 && n >= kResponseSize) {
      Fail("response need-more with 5 bytes there", p, n, r, 0);
    }
  }
  std::free(p);
  return 0;
}
