#include "relay/tls_core.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>
#include <sys/utsname.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/syserror.h"

namespace edgemesh {

namespace {

// Session tickets stay usable this long; a rotation drops them all (a new generation).
constexpr long kSessionTimeoutSec = 3600;

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using PkeyPtr = std::unique_ptr<EVP_PKEY, PkeyFree>;

std::string LastError() {
  unsigned long e = ERR_peek_last_error();
  char buf[256] = {0};
  if (e != 0) ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return e != 0 ? std::string(buf) : std::string("unknown OpenSSL error");
}

[[noreturn]] void Fail(const std::string& what) { throw SysError(0, "tls", what + ": " + LastError(), "ETLSCONFIG"); }

BioPtr MemBio(const std::string& s) { return BioPtr(BIO_new_mem_buf(s.data(), static_cast<int>(s.size()))); }

std::string NameOf(X509* x) {
  if (!x) return "";
  X509_NAME* subj = X509_get_subject_name(x);
  int idx = subj ? X509_NAME_get_index_by_NID(subj, NID_commonName, -1) : -1;
  if (idx >= 0) {
    ASN1_STRING* d = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subj, idx));
    unsigned char* utf8 = nullptr;
    int n = ASN1_STRING_to_UTF8(&utf8, d);
    if (n >= 0) {
      std::string cn(reinterpret_cast<char*>(utf8), static_cast<size_t>(n));
      OPENSSL_free(utf8);
      return cn;
    }
  }
  std::string out;
  auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(x, NID_subject_alt_name, nullptr, nullptr));
  if (sans) {
    for (int i = 0; i < sk_GENERAL_NAME_num(sans); i++) {
      const GENERAL_NAME* g = sk_GENERAL_NAME_value(sans, i);
      if (g->type == GEN_DNS) {
        const ASN1_STRING* s = g->d.dNSName;
        out.assign(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)), static_cast<size_t>(ASN1_STRING_length(s)));
        break;
      }
    }
    GENERAL_NAMES_free(sans);
  }
  return out;
}

std::string SerialOf(X509* x) {
  BIGNUM* bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), nullptr);
  if (!bn) return "";
  char* hex = BN_bn2hex(bn);
  std::string s = hex ? hex : "";
  OPENSSL_free(hex);
  BN_free(bn);
  return s;
}

std::string TimeOf(const ASN1_TIME* t) {
  struct tm tm {};
  if (!t || ASN1_TIME_to_tm(t, &tm) != 1) return "";
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min,
                tm.tm_sec);
  return buf;
}

int g_credsIndex = -1;
std::once_flag g_indexOnce;

SSL_CTX* NewCtx(bool server, X509_STORE* store, X509* cert, STACK_OF(X509)* chain, EVP_PKEY* key, bool ktls) {
  SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (!ctx) Fail("SSL_CTX_new");
  auto guard = std::unique_ptr<SSL_CTX, void (*)(SSL_CTX*)>(ctx, SSL_CTX_free);
  // Both ends are ours: TLS 1.3 only, AES-128-GCM first (AES-NI, the cheapest per byte here).
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 || SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1) Fail("TLS 1.3");
  if (SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256") != 1)
    Fail("ciphersuites");
  X509_STORE_up_ref(store);
  SSL_CTX_set_cert_store(ctx, store);
  if (SSL_CTX_use_certificate(ctx, cert) != 1) Fail("certificate");
  for (int i = 0; chain && i < sk_X509_num(chain); i++) {
    X509* c = sk_X509_value(chain, i);
    X509_up_ref(c);
    if (SSL_CTX_add_extra_chain_cert(ctx, c) != 1) {
      X509_free(c);
      Fail("certificate chain");
    }
  }
  if (SSL_CTX_use_PrivateKey(ctx, key) != 1) Fail("the private key does not match the certificate");
  if (SSL_CTX_check_private_key(ctx) != 1) Fail("the private key does not match the certificate");
  SSL_CTX_set_verify(ctx, server ? SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT : SSL_VERIFY_PEER, nullptr);
  SSL_CTX_set_verify_depth(ctx, 4);
  // Partial writes and a moving buffer: the relay writes what the socket takes and keeps the
  // rest; idle connections give their record buffers back.
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
  // Read whole socket buffers, not a 5-byte header then a body: half the syscalls per record.
  SSL_CTX_set_read_ahead(ctx, 1);
  SSL_CTX_set_default_read_buffer_len(ctx, 64 * 1024);
  uint64_t opts = SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_COMPRESSION;
  if (ktls) opts |= SSL_OP_ENABLE_KTLS;
  SSL_CTX_set_options(ctx, opts);
  SSL_CTX_set_timeout(ctx, kSessionTimeoutSec);
  if (server) {
    // Stateless tickets (one per handshake) let a dialler resume without the signature and
    // certificate checks of a full handshake; the ticket key lives in this SSL_CTX only.
    SSL_CTX_set_num_tickets(ctx, 1);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    static const unsigned char sid[] = "edgemesh-tunnel";
    SSL_CTX_set_session_id_context(ctx, sid, sizeof sid - 1);
  } else {
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_CLIENT | SSL_SESS_CACHE_NO_INTERNAL_STORE);
  }
  guard.release();
  return ctx;
}

}  // namespace

const char* TlsFailName(TlsFail f) {
  switch (f) {
    case TlsFail::kNone: return "";
    case TlsFail::kNoCertificate: return "no-certificate";
    case TlsFail::kUnknownCa: return "unknown-ca";
    case TlsFail::kExpired: return "expired";
    case TlsFail::kNameMismatch: return "name-mismatch";
    case TlsFail::kBadCertificate: return "bad-certificate";
    case TlsFail::kProtocol: return "protocol";
    case TlsFail::kTimeout: return "timeout";
    case TlsFail::kClosed: return "closed";
    case TlsFail::kCount: break;
  }
  return "protocol";
}

void ClearTlsErrors() { ERR_clear_error(); }

std::shared_ptr<TlsCreds> TlsCreds::Build(const TlsPem& pem, bool ktls) {
  std::call_once(g_indexOnce, [] { g_credsIndex = SSL_CTX_get_ex_new_index(0, nullptr, nullptr, nullptr, nullptr); });
  ERR_clear_error();
  // The CA bundle: every certificate in the PEM is trusted.
  X509_STORE* store = X509_STORE_new();
  if (!store) Fail("X509_STORE_new");
  std::unique_ptr<X509_STORE, void (*)(X509_STORE*)> storeGuard(store, X509_STORE_free);
  {
    BioPtr bio = MemBio(pem.ca);
    int n = 0;
    while (X509* x = PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)) {
      X509Ptr owned(x);
      if (X509_STORE_add_cert(store, x) != 1) Fail("CA certificate");
      n++;
    }
    ERR_clear_error();  // the loop ends on "no start line"
    if (n == 0) throw SysError(0, "tls", "CA file holds no PEM certificate", "ETLSCONFIG");
  }
  BioPtr certBio = MemBio(pem.cert);
  X509Ptr cert(PEM_read_bio_X509(certBio.get(), nullptr, nullptr, nullptr));
  if (!cert) Fail("certificate file holds no PEM certificate");
  STACK_OF(X509)* chain = sk_X509_new_null();
  while (X509* x = PEM_read_bio_X509(certBio.get(), nullptr, nullptr, nullptr)) sk_X509_push(chain, x);
  ERR_clear_error();
  std::unique_ptr<STACK_OF(X509), void (*)(STACK_OF(X509)*)> chainGuard(chain, [](STACK_OF(X509)* s) { sk_X509_pop_free(s, X509_free); });
  BioPtr keyBio = MemBio(pem.key);
  PkeyPtr key(PEM_read_bio_PrivateKey(keyBio.get(), nullptr, nullptr, nullptr));
  if (!key) Fail("key file holds no PEM private key");

  std::shared_ptr<TlsCreds> c(new TlsCreds());
  c->selfName_ = NameOf(cert.get());
  c->serial_ = SerialOf(cert.get());
  c->notAfter_ = TimeOf(X509_get0_notAfter(cert.get()));
  if (c->selfName_.empty()) throw SysError(0, "tls", "certificate has neither a CN nor a DNS name", "ETLSCONFIG");
  // Our own certificate must verify against the CA we give peers: a mismatch would only show
  // up as refused handshakes on the other side.
  {
    X509_STORE_CTX* vctx = X509_STORE_CTX_new();
    if (!vctx) Fail("X509_STORE_CTX_new");
    X509_STORE_CTX_init(vctx, store, cert.get(), chain);
    int ok = X509_verify_cert(vctx);
    int verr = X509_STORE_CTX_get_error(vctx);
    X509_STORE_CTX_free(vctx);
    ERR_clear_error();
    if (ok != 1) {
      throw SysError(0, "tls", std::string("certificate does not verify against the CA: ") + X509_verify_cert_error_string(verr),
                     "ETLSCONFIG");
    }
  }
  c->server_ = NewCtx(true, store, cert.get(), chain, key.get(), ktls);
  c->client_ = NewCtx(false, store, cert.get(), chain, key.get(), ktls);
  SSL_CTX_set_ex_data(c->client_, g_credsIndex, c.get());
  SSL_CTX_sess_set_new_cb(c->client_, &TlsCreds::OnNewSession);
  return c;
}

TlsCreds::~TlsCreds() {
  for (auto& kv : sessions_) SSL_SESSION_free(kv.second);
  // SSLs still alive hold their own reference; the client ctx's callback must not find us.
  if (client_) {
    SSL_CTX_set_ex_data(client_, g_credsIndex, nullptr);
    SSL_CTX_free(client_);
  }
  if (server_) SSL_CTX_free(server_);
}

SSL* TlsCreds::NewServer(int fd) const {
  SSL* ssl = SSL_new(server_);
  if (!ssl) return nullptr;
  if (SSL_set_fd(ssl, fd) != 1) {
    SSL_free(ssl);
    return nullptr;
  }
  SSL_set_accept_state(ssl);
  return ssl;
}

SSL* TlsCreds::NewClient(int fd, const std::string& peerName) {
  SSL* ssl = SSL_new(client_);
  if (!ssl) return nullptr;
  // An empty name (a relay, dialled by address): any certificate of our CA will do.
  if (SSL_set_fd(ssl, fd) != 1 || (!peerName.empty() && SSL_set1_host(ssl, peerName.c_str()) != 1)) {
    SSL_free(ssl);
    ClearTlsErrors();
    return nullptr;
  }
  SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
  if (!peerName.empty()) SSL_set_tlsext_host_name(ssl, peerName.c_str());
  SSL_set_connect_state(ssl);
  std::lock_guard<std::mutex> g(mu_);
  auto it = peerName.empty() ? sessions_.end() : sessions_.find(peerName);
  if (it != sessions_.end()) {
    if (SSL_SESSION_is_resumable(it->second)) {
      SSL_set_session(ssl, it->second);
    } else {
      SSL_SESSION_free(it->second);
      sessions_.erase(it);
    }
  }
  ClearTlsErrors();
  return ssl;
}

int TlsCreds::OnNewSession(SSL* ssl, SSL_SESSION* session) {
  auto* self = static_cast<TlsCreds*>(SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), g_credsIndex));
  // Keyed by the name we asked for (sent as SNI). Not SSL_get0_peername: that is set by the
  // certificate check, which a resumed handshake skips, so the ticket of every resumed
  // connection would be dropped and only every other connection would resume.
  const char* peer = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
  if (!self || !peer || !*peer) return 0;
  std::lock_guard<std::mutex> g(self->mu_);
  SSL_SESSION*& slot = self->sessions_[peer];
  if (slot) SSL_SESSION_free(slot);
  slot = session;
  return 1;  // we keep the reference
}

void TlsCreds::Forget(const std::string& peerName) {
  std::lock_guard<std::mutex> g(mu_);
  auto it = sessions_.find(peerName);
  if (it == sessions_.end()) return;
  SSL_SESSION_free(it->second);
  sessions_.erase(it);
}

std::string PeerName(SSL* ssl) { return NameOf(SSL_get0_peer_certificate(ssl)); }

TlsFail ClassifyHandshakeFailure(SSL* ssl, int sslErr, std::string* detail) {
  unsigned long e = ERR_peek_error();
  int reason = e ? ERR_GET_REASON(e) : 0;
  if (detail) {
    char buf[256] = {0};
    if (e) ERR_error_string_n(e, buf, sizeof buf);
    *detail = buf;
  }
  ERR_clear_error();
  long v = SSL_get_verify_result(ssl);
  if (v != X509_V_OK) {
    if (detail) *detail = X509_verify_cert_error_string(v);
    switch (v) {
      case X509_V_ERR_CERT_HAS_EXPIRED:
      case X509_V_ERR_CERT_NOT_YET_VALID: return TlsFail::kExpired;
      case X509_V_ERR_HOSTNAME_MISMATCH: return TlsFail::kNameMismatch;
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
      case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
      case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
      case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
      case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
      case X509_V_ERR_CERT_SIGNATURE_FAILURE: return TlsFail::kUnknownCa;
      default: return TlsFail::kBadCertificate;
    }
  }
  switch (reason) {
    case SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE:
    case SSL_R_TLSV13_ALERT_CERTIFICATE_REQUIRED: return TlsFail::kNoCertificate;
    case SSL_R_TLSV1_ALERT_UNKNOWN_CA: return TlsFail::kUnknownCa;
    case SSL_R_SSLV3_ALERT_CERTIFICATE_EXPIRED: return TlsFail::kExpired;
    case SSL_R_SSLV3_ALERT_BAD_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_UNKNOWN:
    case SSL_R_SSLV3_ALERT_UNSUPPORTED_CERTIFICATE:
    case SSL_R_SSLV3_ALERT_CERTIFICATE_REVOKED: return TlsFail::kBadCertificate;
    case SSL_R_UNEXPECTED_EOF_WHILE_READING: return TlsFail::kClosed;
    default: break;
  }
  if (sslErr == SSL_ERROR_SYSCALL || sslErr == SSL_ERROR_ZERO_RETURN) return TlsFail::kClosed;
  return TlsFail::kProtocol;
}

KtlsSupport DetectKtls() {
  KtlsSupport s;
#ifdef OPENSSL_NO_KTLS
  s.reason = "OpenSSL built without kTLS";
  return s;
#else
  std::ifstream ulp("/proc/sys/net/ipv4/tcp_available_ulp");
  std::string line;
  if (ulp && std::getline(ulp, line)) {
    std::istringstream words(line);
    std::string w;
    while (words >> w) {
      if (w == "tls") {
        s.available = true;
        s.reason = "tls ULP registered";
        return s;
      }
    }
  }
  // Not registered yet: a loadable module is pulled in by the first setsockopt(TCP_ULP).
  utsname u{};
  if (uname(&u) == 0) {
    std::string base = std::string("/lib/modules/") + u.release + "/";
    for (const char* f : {"modules.builtin", "modules.dep"}) {
      std::ifstream in(base + f);
      std::string l;
      while (in && std::getline(in, l)) {
        if (l.find("net/tls/tls.ko") != std::string::npos) {
          s.available = true;
          s.reason = std::string("tls module listed in ") + f;
          return s;
        }
      }
    }
  }
  s.reason = "kernel has no TLS ULP (CONFIG_TLS)";
  return s;
#endif
}

bool KtlsSendActive(SSL* ssl) {
#ifdef OPENSSL_NO_KTLS
  (void)ssl;
  return false;
#else
  return BIO_get_ktls_send(SSL_get_wbio(ssl)) != 0;
#endif
}

}  // namespace edgemesh
