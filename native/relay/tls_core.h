// The tunnel's TLS, plain C++ over OpenSSL (no V8): one generation of credentials (a server and
// a client SSL_CTX built from the same CA, certificate and key, TLS 1.3 only, mutual
// authentication), the client's session cache for resumption, the peer's node name, why a
// handshake failed, and whether the kernel can take the record layer (kTLS).
//
// Ownership: a TlsCreds owns its two SSL_CTX and its cached sessions; every SSL made from it
// holds a reference to its SSL_CTX (OpenSSL counts it), so a rotation can drop a generation while
// connections made from it keep running. A connection owns its SSL and frees it before closing
// its socket (the SSL's socket BIO never closes the fd).
#pragma once
#include <openssl/ssl.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>

namespace edgemesh {

// Why a handshake did not complete. Stable names (metrics labels).
enum class TlsFail : uint8_t {
  kNone,
  kNoCertificate,   // the peer presented none
  kUnknownCa,       // not signed by our CA (or the peer said so of ours)
  kExpired,         // outside its validity period
  kNameMismatch,    // the server's certificate is not the node we dialled
  kBadCertificate,  // any other verification failure
  kProtocol,        // not TLS 1.3, no common cipher, a bad record...
  kTimeout,         // not done within the handshake timeout
  kClosed,          // the peer closed or reset during the handshake
  kCount
};
const char* TlsFailName(TlsFail f);

struct TlsPem {
  std::string ca, cert, key;
};

class TlsCreds {
 public:
  // Throws SysError with code ETLSCONFIG and a one-line message naming the part that is wrong.
  // `ktls`: ask OpenSSL to hand the record layer to the kernel where it can.
  static std::shared_ptr<TlsCreds> Build(const TlsPem& pem, bool ktls);
  ~TlsCreds();
  TlsCreds(const TlsCreds&) = delete;
  TlsCreds& operator=(const TlsCreds&) = delete;

  // A server-side SSL on an accepted socket (nullptr when out of memory).
  SSL* NewServer(int fd) const;
  // A client-side SSL on a connected socket that accepts only a certificate for `peerName`
  // ("" : any certificate of our CA), resuming a cached session with that peer when there is one.
  SSL* NewClient(int fd, const std::string& peerName);

  // Our own certificate: its node name and serial (hex), for logs and status.
  const std::string& selfName() const { return selfName_; }
  const std::string& serial() const { return serial_; }
  const std::string& notAfter() const { return notAfter_; }

  // Drops the cached session of a peer (after a failed resumption or a refused connection).
  void Forget(const std::string& peerName);

 private:
  TlsCreds() = default;
  static int OnNewSession(SSL* ssl, SSL_SESSION* session);
  SSL_CTX* server_ = nullptr;
  SSL_CTX* client_ = nullptr;
  std::string selfName_, serial_, notAfter_;
  std::mutex mu_;
  std::unordered_map<std::string, SSL_SESSION*> sessions_;
};

// The node name a peer's certificate gives: its CN, or its first DNS SAN when it has no CN.
std::string PeerName(SSL* ssl);

// After SSL_do_handshake returned <= 0 with `sslErr` (not WANT_READ/WANT_WRITE): why. Empties
// this thread's OpenSSL error queue; `detail` gets OpenSSL's reason text.
TlsFail ClassifyHandshakeFailure(SSL* ssl, int sslErr, std::string* detail);

// Empties this thread's OpenSSL error queue (after any failed SSL call).
void ClearTlsErrors();

struct KtlsSupport {
  bool available = false;
  std::string reason;  // why (not): "tls ULP registered", "kernel has no TLS ULP (CONFIG_TLS)"
};
// Looks once at the kernel (registered TCP ULPs, built-in or loadable tls module) and at OpenSSL.
KtlsSupport DetectKtls();

// Whether OpenSSL moved this connection's sending side into the kernel.
bool KtlsSendActive(SSL* ssl);

}  // namespace edgemesh
