// LeakSanitizer (and a live-heap check) over the relay's mutual-TLS tunnel: two Proxies in one
// process, every success path and every refusal path, with credentials made by certs_core.
// Run by scripts/test-asan.sh inside a network namespace it prepared:
//   lo holds 169.254.96.16 (both service proxies), .17 (the edge's echo endpoint) and .18 (the
//   edge's tunnel listener); 10.10.0.0/16 is routed to lo and nat OUTPUT DNATs 10.10.0.16/28
//   port 80 to 169.254.96.16:40001 (the cloud proxy), as EDGE-MESH-TCP would.
//   tunnel_leak [connections=2000]
//   tunnel_leak --leak-canary    (leaks an SSL_CTX, an SSL and a buffer: LSan must report them)
//
// The cloud proxy's routes name tunnel endpoints on node "edge"; the edge proxy's tunnel
// listener serves shop/web:80 -> 169.254.96.17:8080 (an echo server). Driven, bounded:
//  - short tunnelled connections (a few bytes, half-close), single and in bursts, and bulk ones
//    (1-4 MiB each way, half-close), every byte checked;
//  - failover: a route whose first tunnel endpoint has no listener (connect refused);
//  - refusals by the peer, seen from both sides: not-local, no-service; a name mismatch;
//  - raw TLS clients made here: no certificate, another CA's certificate, an expired one, a cut
//    mid-handshake (FIN and RST), garbage after a valid handshake, a request whose length byte
//    is beyond the protocol's maximum, an unknown type, a partial request left hanging
//    (authenticated, then the handshake timeout), and idle connections beyond
//    maxPendingHandshakes (the excess reset at once, the rest timed out);
//  - a credential rotation on both proxies while tunnelled connections are open.
// Exit 0: every check held, nothing is active or pending, the live heap over the steady part did
// not grow, and (at exit) LeakSanitizer found nothing.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "certs/certs_core.h"
#include "relay/relay_core.h"

using namespace edgemesh;

extern "C" size_t __sanitizer_get_current_allocated_bytes();

namespace {

constexpr const char* kProxyIp = "169.254.96.16";
constexpr const char* kEchoIp = "169.254.96.17";
constexpr const char* kTunnelIp = "169.254.96.18";
constexpr uint16_t kEchoPort = 8080;
constexpr uint16_t kTunnelPort = 20006;
constexpr uint16_t kDeadTunnelPort = 20007;  // nothing listens there
constexpr uint32_t kHandshakeTimeoutMs = 800;
constexpr uint32_t kMaxPending = 16;

// The services behind the cloud proxy (DNATed to it).
constexpr const char* kSvcOk = "10.10.0.20";        // tunnel to edge: served
constexpr const char* kSvcFailover = "10.10.0.21";  // dead tunnel listener first, then edge
constexpr const char* kSvcNotLocal = "10.10.0.22";  // edge serves shop/web, not that endpoint
constexpr const char* kSvcNoService = "10.10.0.23";  // edge serves no shop/none
constexpr const char* kSvcWrongName = "10.10.0.24";  // the certificate must say "other"

int64_t NowMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

void Expect(bool ok, const std::string& what) {
  if (ok) return;
  std::fprintf(stderr, "tunnel_leak: FAILED: %s\n", what.c_str());
  std::exit(1);
}

SockAddr Addr(const char* ip, uint16_t port) {
  SockAddr a;
  Expect(ParseSockAddr(ip, port, &a), std::string("address ") + ip);
  return a;
}

void SetTimeouts(int fd, int ms) {
  timeval tv{ms / 1000, (ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

// A blocking client socket connected to ip:port (5 s send/receive timeouts), or -1.
int Connect(const char* ip, uint16_t port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  SockAddr a = Addr(ip, port);
  SetTimeouts(fd, 5000);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&a.ss), a.len) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

void CloseRst(int fd) {
  linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
  close(fd);
}

// ---------------------------------------------------------------- the echo endpoint

// Echoes every connection concurrently (one epoll thread, a bounded buffer per connection):
// EOF from the client is passed on as a FIN once everything read was written back.
class EchoServer {
 public:
  EchoServer() {
    lfd_ = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    SockAddr a = Addr(kEchoIp, kEchoPort);
    Expect(bind(lfd_, reinterpret_cast<const sockaddr*>(&a.ss), a.len) == 0, std::string("bind echo: ") + std::strerror(errno));
    Expect(listen(lfd_, 256) == 0, "listen echo");
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    Add(lfd_, EPOLLIN, nullptr);
    thread_ = std::thread([this] { Run(); });
  }
  ~EchoServer() {
    stop_ = true;
    thread_.join();
    for (auto& kv : conns_) close(kv.first);
    close(lfd_);
    close(ep_);
  }
  uint64_t accepted() const { return accepted_; }

 private:
  struct C {
    int fd;
    std::string buf;  // read, not yet written back
    size_t off = 0;
    bool eof = false;
  };
  static constexpr size_t kMaxBuf = 256 << 10;

  void Add(int fd, uint32_t events, C* c) {
    epoll_event ev{};
    ev.events = events;
    ev.data.ptr = c;
    epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev);
  }
  void Mod(C* c) {
    epoll_event ev{};
    ev.events = (c->eof || c->buf.size() - c->off >= kMaxBuf ? 0u : static_cast<uint32_t>(EPOLLIN)) | (c->off < c->buf.size() ? static_cast<uint32_t>(EPOLLOUT) : 0u);
    ev.data.ptr = c;
    epoll_ctl(ep_, EPOLL_CTL_MOD, c->fd, &ev);
  }
  void Drop(C* c) {
    close(c->fd);
    conns_.erase(c->fd);  // frees c
  }
  void Run() {
    epoll_event evs[64];
    char tmp[64 << 10];
    while (!stop_) {
      int n = epoll_wait(ep_, evs, 64, 50);
      for (int i = 0; i < n; i++) {
        C* c = static_cast<C*>(evs[i].data.ptr);
        if (!c) {
          for (;;) {
            int fd = accept4(lfd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0) break;
            accepted_++;
            auto owned = std::make_unique<C>();
            owned->fd = fd;
            C* raw = owned.get();
            conns_[fd] = std::move(owned);
            Add(fd, EPOLLIN, raw);
          }
          continue;
        }
        bool dead = false;
        if ((evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c->eof && c->buf.size() - c->off < kMaxBuf) {
          ssize_t r = read(c->fd, tmp, sizeof tmp);
          if (r > 0) {
            if (c->off == c->buf.size()) {
              c->buf.clear();
              c->off = 0;
            }
            c->buf.append(tmp, static_cast<size_t>(r));
          } else if (r == 0) {
            c->eof = true;
          } else if (errno != EAGAIN) {
            dead = true;
          }
        }
        while (!dead && c->off < c->buf.size()) {
          ssize_t w = write(c->fd, c->buf.data() + c->off, c->buf.size() - c->off);
          if (w > 0) {
            c->off += static_cast<size_t>(w);
          } else {
            if (errno != EAGAIN) dead = true;
            break;
          }
        }
        if (!dead && c->eof && c->off == c->buf.size()) {
          shutdown(c->fd, SHUT_WR);
          dead = true;  // the client's half-close went all the way round
        }
        if (dead) Drop(c);
        else Mod(c);
      }
    }
  }

  int lfd_ = -1, ep_ = -1;
  std::atomic<bool> stop_{false};
  std::atomic<uint64_t> accepted_{0};
  std::unordered_map<int, std::unique_ptr<C>> conns_;
  std::thread thread_;
};

// ---------------------------------------------------------------- tunnelled clients

// The byte at `off` of a stream seeded with `seed`.
inline char Pattern(uint64_t seed, uint64_t off) { return static_cast<char>((off * 131 + seed * 7 + (off >> 9)) & 0xff); }

// Writes `total` pattern bytes through `fd` while reading the echo, half-closes after the last
// byte, reads to EOF. True when exactly the bytes sent came back. Bounded by `deadlineMs`.
bool Exchange(int fd, uint64_t seed, size_t total, int64_t deadlineMs) {
  fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
  size_t sent = 0, got = 0;
  bool shut = false;
  char out[32 << 10], in[64 << 10];
  while (NowMs() < deadlineMs) {
    if (!shut && sent == total) {
      shutdown(fd, SHUT_WR);
      shut = true;
    }
    pollfd p{fd, static_cast<short>(POLLIN | (shut ? 0 : POLLOUT)), 0};
    if (poll(&p, 1, 100) < 0) return false;
    if (!shut && (p.revents & POLLOUT)) {
      size_t n = std::min(sizeof out, total - sent);
      for (size_t i = 0; i < n; i++) out[i] = Pattern(seed, sent + i);
      ssize_t w = write(fd, out, n);
      if (w > 0) sent += static_cast<size_t>(w);
      else if (w < 0 && errno != EAGAIN) return false;
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t r = read(fd, in, sizeof in);
      if (r == 0) return shut && got == total;
      if (r < 0) {
        if (errno == EAGAIN) continue;
        return false;
      }
      for (ssize_t i = 0; i < r; i++) {
        if (in[i] != Pattern(seed, got + static_cast<size_t>(i))) return false;
      }
      got += static_cast<size_t>(r);
      if (got > total) return false;
    }
  }
  return false;
}

bool OneShort(const char* svc, uint64_t seed) {
  int fd = Connect(svc, 80);
  if (fd < 0) return false;
  bool ok = Exchange(fd, seed, 16 + seed % 48, NowMs() + 10000);
  close(fd);
  return ok;
}

// `k` connections open at once, all written and half-closed before any is read back.
bool Burst(int k, uint64_t seed) {
  std::vector<int> fds;
  bool ok = true;
  for (int i = 0; i < k; i++) {
    int fd = Connect(kSvcOk, 80);
    if (fd < 0) {
      ok = false;
      break;
    }
    fds.push_back(fd);
  }
  char out[64];
  for (size_t i = 0; i < fds.size(); i++) {
    for (size_t j = 0; j < sizeof out; j++) out[j] = Pattern(seed + i, j);
    if (write(fds[i], out, sizeof out) != static_cast<ssize_t>(sizeof out)) ok = false;
    shutdown(fds[i], SHUT_WR);
  }
  for (size_t i = 0; i < fds.size(); i++) {
    std::string got;
    char in[256];
    for (;;) {
      ssize_t n = read(fds[i], in, sizeof in);
      if (n <= 0) break;
      got.append(in, static_cast<size_t>(n));
    }
    if (got.size() != sizeof out) ok = false;
    for (size_t j = 0; ok && j < got.size(); j++) ok = got[j] == Pattern(seed + i, j);
    close(fds[i]);
  }
  return ok;
}

// A connection to a service that must not reach anything: the proxy resets it (or closes it
// without a byte).
bool RefusedService(const char* svc) {
  int fd = Connect(svc, 80);
  if (fd < 0) return true;
  const char hello[] = "hello";
  ssize_t w = write(fd, hello, sizeof hello);
  (void)w;
  char in[16];
  ssize_t n = read(fd, in, sizeof in);
  close(fd);
  return n <= 0;
}

// ---------------------------------------------------------------- raw TLS clients

struct Pem {
  std::string cert, key;
};

// A client SSL_CTX of our own (TLS 1.3; the server is not verified: its refusals are what is
// tested), with `id` as its certificate when given.
SSL_CTX* RawCtx(const Pem* id) {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  Expect(ctx != nullptr, "SSL_CTX_new");
  SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  if (id) {
    BIO* cb = BIO_new_mem_buf(id->cert.data(), static_cast<int>(id->cert.size()));
    X509* x = PEM_read_bio_X509(cb, nullptr, nullptr, nullptr);
    BIO_free(cb);
    BIO* kb = BIO_new_mem_buf(id->key.data(), static_cast<int>(id->key.size()));
    EVP_PKEY* k = PEM_read_bio_PrivateKey(kb, nullptr, nullptr, nullptr);
    BIO_free(kb);
    Expect(x && k && SSL_CTX_use_certificate(ctx, x) == 1 && SSL_CTX_use_PrivateKey(ctx, k) == 1, "raw client identity");
    X509_free(x);
    EVP_PKEY_free(k);
  }
  return ctx;
}

struct RawConn {
  int fd = -1;
  SSL* ssl = nullptr;
  ~RawConn() {
    if (ssl) SSL_free(ssl);
    if (fd >= 0) close(fd);
    ERR_clear_error();
  }
};

// Handshakes with the edge's tunnel listener. TLS 1.3: the client's side completes before the
// server has judged the client's certificate; a refusal shows on the first read.
bool RawHandshake(SSL_CTX* ctx, RawConn* c) {
  c->fd = Connect(kTunnelIp, kTunnelPort);
  if (c->fd < 0) return false;
  c->ssl = SSL_new(ctx);
  SSL_set_fd(c->ssl, c->fd);
  return SSL_connect(c->ssl) == 1;
}

// Reads the tunnel's 5-byte answer; -1 when the stream ended (or failed) before it came.
int RawResponse(RawConn* c) {
  uint8_t r[kResponseSize];
  size_t got = 0;
  while (got < sizeof r) {
    size_t n = 0;
    if (SSL_read_ex(c->ssl, r + got, sizeof r - got, &n) != 1) return -1;
    got += n;
  }
  TunnelStatus st;
  return DecodeResponse(r, got, &st) > 0 ? static_cast<int>(st) : -1;
}

// A client whose certificate the edge must refuse: the handshake "succeeds" here (TLS 1.3) or
// not, but no application byte ever comes back.
bool RawRefusedAtHandshake(SSL_CTX* ctx) {
  RawConn c;
  if (!RawHandshake(ctx, &c)) return true;
  const char x[] = "EMT1";
  SSL_write(c.ssl, x, 4);
  return RawResponse(&c) == -1;
}

// After a valid handshake, `bytes` instead of a request: the answer must be `want`, at once (a
// request the edge cannot parse is refused as soon as it shows, not at the handshake timeout).
bool RawBadRequest(SSL_CTX* ctx, const std::string& bytes, TunnelStatus want) {
  RawConn c;
  if (!RawHandshake(ctx, &c)) return false;
  const int64_t start = NowMs();
  if (SSL_write(c.ssl, bytes.data(), static_cast<int>(bytes.size())) != static_cast<int>(bytes.size())) return false;
  int got = RawResponse(&c);
  const int64_t took = NowMs() - start;
  if (got != static_cast<int>(want) || took >= kHandshakeTimeoutMs / 2) {
    std::fprintf(stderr, "tunnel_leak: a %zu-byte bad request was answered %d (want %d) after %lld ms\n", bytes.size(), got, static_cast<int>(want), static_cast<long long>(took));
    return false;
  }
  return true;
}

// Sends a ClientHello (made through memory BIOs, so that nothing of the server's answer is
// read) and goes away, with a FIN or a RST.
void RawCutMidHandshake(SSL_CTX* ctx, bool rst) {
  SSL* ssl = SSL_new(ctx);
  BIO* rb = BIO_new(BIO_s_mem());
  BIO* wb = BIO_new(BIO_s_mem());
  SSL_set_bio(ssl, rb, wb);  // the SSL owns both
  int r = SSL_connect(ssl);
  Expect(r != 1 && SSL_get_error(ssl, r) == SSL_ERROR_WANT_READ, "a ClientHello into a memory BIO");
  char* hello = nullptr;
  long n = BIO_get_mem_data(wb, &hello);
  Expect(n > 0, "ClientHello bytes");
  int fd = Connect(kTunnelIp, kTunnelPort);
  Expect(fd >= 0, "connect to the tunnel listener");
  Expect(write(fd, hello, static_cast<size_t>(n)) == n, "write the ClientHello");
  SSL_free(ssl);
  ERR_clear_error();
  usleep(20000);  // the edge reads the hello and answers
  if (rst) CloseRst(fd);
  else close(fd);
}

// ---------------------------------------------------------------- the two proxies

struct Sink {
  std::mutex mu;
  std::map<std::string, uint64_t> byReason;  // EndReason name (+ "/" + refusal)
  uint64_t total = 0;
  void Take(std::vector<ConnEvent>&& evs) {
    std::lock_guard<std::mutex> g(mu);
    for (const auto& e : evs) {
      total++;
      std::string k = EndReasonName(e.reason);
      if (e.refusal != Refusal::kNone) k += std::string("/") + RefusalName(e.refusal);
      byReason[k]++;
    }
  }
  uint64_t Total() {
    std::lock_guard<std::mutex> g(mu);
    return total;
  }
  std::string Text() {
    std::lock_guard<std::mutex> g(mu);
    std::string s;
    for (auto& kv : byReason) s += " " + kv.first + "=" + std::to_string(kv.second);
    return s;
  }
};

RouteEndpoint TunnelEp(const char* node, uint16_t epPort, uint16_t tunnelPort) {
  RouteEndpoint ep;
  ep.addr = Addr(kEchoIp, epPort);
  ep.text = ep.addr.ToString();
  ep.path = EndpointPath::kTunnel;
  ep.node = node;
  ep.tunnel = Addr(kTunnelIp, tunnelPort);
  return ep;
}

void AddRoute(RouteTable* t, const char* svcIp, const char* serviceName, std::vector<RouteEndpoint> eps) {
  auto e = std::make_unique<RouteEntry>();
  e->serviceName = serviceName;
  e->servicePort = 80;
  e->service = std::string(serviceName) + ":http";
  e->endpoints = std::move(eps);
  Expect(t->Add(Addr(svcIp, 80), std::move(e)), "route");
}

std::shared_ptr<TlsCreds> Creds(const certs::KeyPair& ca, const certs::KeyPair& node) {
  TlsPem pem;
  pem.ca = ca.certPem;
  pem.cert = node.certPem;
  pem.key = node.keyPem;
  return TlsCreds::Build(pem, false);
}

certs::KeyPair Issue(const certs::KeyPair& ca, const char* name, int64_t notBefore = -certs::kHour, int64_t notAfter = certs::kDay) {
  certs::IssueSpec s;
  s.caCertPem = ca.certPem;
  s.caKeyPem = ca.keyPem;
  s.name = name;
  s.notBeforeOffset = notBefore;
  s.notAfterOffset = notAfter;
  return certs::IssueCert(s);
}

template <typename Pred>
bool WaitFor(Pred p, int ms) {
  for (int64_t end = NowMs() + ms; NowMs() < end; usleep(5000)) {
    if (p()) return true;
  }
  return p();
}

void LeakCanary() {
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  SSL* ssl = SSL_new(ctx);
  char* buf = new char[4096];
  std::memset(buf, 1, 4096);
  std::printf("tunnel_leak: leaked %p %p %p on purpose\n", static_cast<void*>(ctx), static_cast<void*>(ssl), static_cast<void*>(buf));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 2 && std::string(argv[1]) == "--leak-canary") {
    LeakCanary();
    return 0;
  }
  const int count = argc > 1 ? std::atoi(argv[1]) : 2000;
  Expect(count >= 400, "at least 400 connections");
  const int64_t t0 = NowMs();

  const certs::KeyPair ca = certs::GenerateCa(certs::CaSpec{});
  const certs::KeyPair otherCa = certs::GenerateCa(certs::CaSpec{});
  const certs::KeyPair cloudCert = Issue(ca, "cloud"), edgeCert = Issue(ca, "edge");
  const certs::KeyPair foreign = Issue(otherCa, "cloud");
  const certs::KeyPair expired = Issue(ca, "cloud", -2 * certs::kDay, -certs::kDay);

  EchoServer echo;
  Sink cloudEvents, edgeEvents;
  {
    ProxyConfig cc;
    cc.address = kProxyIp;
    cc.port = 40001;
    cc.threads = 2;
    cc.handshakeTimeoutMs = 3000;
    cc.connectTimeoutMs = 2000;
    Proxy cloud(cc, [&](std::vector<ConnEvent>&& e) { cloudEvents.Take(std::move(e)); });
    ProxyConfig ec;
    ec.address = kProxyIp;
    ec.port = 40002;
    ec.threads = 2;
    ec.tunnelAddress = kTunnelIp;
    ec.tunnelPort = kTunnelPort;
    ec.handshakeTimeoutMs = kHandshakeTimeoutMs;
    ec.maxPendingHandshakes = kMaxPending;
    ec.tlsBufferSize = 64 << 10;
    Proxy edge(ec, [&](std::vector<ConnEvent>&& e) { edgeEvents.Take(std::move(e)); });

    cloud.SetTunnelCreds(Creds(ca, cloudCert));
    edge.SetTunnelCreds(Creds(ca, edgeCert));
    auto serve = std::make_shared<LocalServeTable>();
    serve->Add("shop/web", 80, Addr(kEchoIp, kEchoPort));
    edge.SetLocalServe(serve);
    auto table = std::make_shared<RouteTable>();
    AddRoute(table.get(), kSvcOk, "shop/web", {TunnelEp("edge", kEchoPort, kTunnelPort)});
    AddRoute(table.get(), kSvcFailover, "shop/web", {TunnelEp("edge", kEchoPort, kDeadTunnelPort), TunnelEp("edge", kEchoPort, kTunnelPort)});
    AddRoute(table.get(), kSvcNotLocal, "shop/web", {TunnelEp("edge", 9999, kTunnelPort)});
    AddRoute(table.get(), kSvcNoService, "shop/none", {TunnelEp("edge", kEchoPort, kTunnelPort)});
    AddRoute(table.get(), kSvcWrongName, "shop/web", {TunnelEp("other", kEchoPort, kTunnelPort)});
    cloud.SetRoutes(table);

    uint64_t okConns = 0;  // tunnelled connections that must have echoed (edge: inOk)
    // ---- short connections: a warm-up, then the measured steady part (live heap)
    const int warmup = 300;
    size_t liveAfterWarmup = 0;
    for (int i = 0; i < count; i++) {
      Expect(OneShort(kSvcOk, static_cast<uint64_t>(i)), "short connection " + std::to_string(i) + " did not echo intact");
      okConns++;
      if (i + 1 == warmup) {
        Expect(WaitFor([&] { return cloud.Stats().active == 0 && edge.Stats().active == 0; }, 5000), "connections still active after the warm-up");
        liveAfterWarmup = __sanitizer_get_current_allocated_bytes();
      }
    }
    Expect(WaitFor([&] { return cloud.Stats().active == 0 && edge.Stats().active == 0; }, 5000), "connections still active after the short ones");
    const size_t liveAfterShort = __sanitizer_get_current_allocated_bytes();
    const int64_t tShort = NowMs();

    // ---- bursts (several handshakes in flight at once; sockets handed between workers)
    constexpr int kBursts = 25, kBurst = 8;
    for (int b = 0; b < kBursts; b++) Expect(Burst(kBurst, 1000 + b * kBurst), "burst " + std::to_string(b) + " did not echo intact");
    okConns += kBursts * kBurst;

    // ---- bulk: 1-4 MiB each way, half-close, two at a time
    constexpr int kBulk = 8;
    for (int i = 0; i < kBulk; i += 2) {
      std::atomic<int> good{0};
      std::vector<std::thread> ts;
      for (int j = i; j < i + 2; j++) {
        ts.emplace_back([&, j] {
          int fd = Connect(kSvcOk, 80);
          size_t size = (1u << 20) + static_cast<size_t>(j) * (3u << 20) / (kBulk - 1);
          if (fd >= 0 && Exchange(fd, 7000 + j, size, NowMs() + 30000)) good++;
          if (fd >= 0) close(fd);
        });
      }
      for (auto& t : ts) t.join();
      Expect(good == 2, "bulk pair " + std::to_string(i / 2) + ": " + std::to_string(good.load()) + " of 2 echoed intact");
    }
    okConns += kBulk;
    const int64_t tBulk = NowMs();

    // ---- failover: the first tunnel endpoint has no listener (round robin: every other time)
    constexpr int kFailover = 20;
    for (int i = 0; i < kFailover; i++) Expect(OneShort(kSvcFailover, 9000 + i), "failover connection " + std::to_string(i));
    okConns += kFailover;

    // ---- refusals by the peer (seen from both sides) and a name mismatch (cloud side only)
    constexpr int kRefusals = 10;
    for (int i = 0; i < kRefusals; i++) {
      Expect(RefusedService(kSvcNotLocal), "a not-local request reached something");
      Expect(RefusedService(kSvcNoService), "a no-service request reached something");
      Expect(RefusedService(kSvcWrongName), "a connection to a wrongly named peer reached something");
    }

    // ---- raw TLS clients refused at the handshake, or right after it
    SSL_CTX* noCert = RawCtx(nullptr);
    Pem foreignId{foreign.certPem, foreign.keyPem}, expiredId{expired.certPem, expired.keyPem}, validId{cloudCert.certPem, cloudCert.keyPem};
    SSL_CTX* foreignCtx = RawCtx(&foreignId);
    SSL_CTX* expiredCtx = RawCtx(&expiredId);
    SSL_CTX* validCtx = RawCtx(&validId);
    constexpr int kRaw = 5;
    // A length byte beyond the protocol's 253, then an IPv6 family: a request of 6+255+3+16+2
    // bytes, more than kMaxRequestSize (the edge's buffer for it).
    std::string tooLong = std::string("EMT1\x01", 5) + static_cast<char>(255) + std::string(255, 'a') + std::string("\x00\x50\x06", 3) + std::string(18, '\x01');
    std::string badType = std::string("EMT1\x02\x08", 6) + "shop/web" + std::string("\x00\x50\x04\xa9\xfe\x60\x11\x1f\x90", 9);
    for (int i = 0; i < kRaw; i++) {
      Expect(RawRefusedAtHandshake(noCert), "a client without a certificate was served");
      Expect(RawRefusedAtHandshake(foreignCtx), "a client with another CA's certificate was served");
      Expect(RawRefusedAtHandshake(expiredCtx), "a client with an expired certificate was served");
      Expect(RawBadRequest(validCtx, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", TunnelStatus::kBadRequest), "garbage after the handshake: not answered bad-request");
      Expect(RawBadRequest(validCtx, tooLong, TunnelStatus::kBadRequest), "an over-long request: not answered bad-request");
      Expect(RawBadRequest(validCtx, badType, TunnelStatus::kBadRequest), "an unknown request type: not answered bad-request");
      RawCutMidHandshake(noCert, false);
      RawCutMidHandshake(noCert, true);
    }
    // The raw clients' refusals are counted on the edge's worker threads: wait for them before
    // the pending-handshake check below reads the counters.
    Expect(WaitFor([&] { return edge.Stats().active == 0; }, 5000), "raw connections still active on the edge");

    // Authenticated, then half a request and silence: answered bad-request at the timeout.
    {
      RawConn c;
      Expect(RawHandshake(validCtx, &c), "handshake for the partial request");
      Expect(SSL_write(c.ssl, "EMT1\x01", 5) == 5, "partial request");
      Expect(RawResponse(&c) == static_cast<int>(TunnelStatus::kBadRequest), "a partial request: not answered bad-request at the timeout");
    }

    // ---- idle unauthenticated connections: beyond maxPendingHandshakes reset at once, the rest
    // time out (handshakeTimeoutMs)
    const uint64_t limitBefore = edge.Stats().tunnel.pendingLimit;
    const uint64_t timeoutsBefore = edge.Stats().tunnel.inTlsFail[static_cast<int>(TlsFail::kTimeout)];
    constexpr int kIdle = kMaxPending + 8;
    std::vector<int> idle;
    for (int i = 0; i < kIdle; i++) {
      int fd = Connect(kTunnelIp, kTunnelPort);
      Expect(fd >= 0, "idle connection " + std::to_string(i));
      idle.push_back(fd);
    }
    Expect(WaitFor([&] { return edge.Stats().tunnel.pendingLimit - limitBefore == kIdle - kMaxPending; }, 3000),
           "over the pending-handshake limit: " + std::to_string(edge.Stats().tunnel.pendingLimit - limitBefore) + " reset, want " + std::to_string(kIdle - kMaxPending));
    Expect(WaitFor([&] { return edge.Stats().tunnel.inTlsFail[static_cast<int>(TlsFail::kTimeout)] - timeoutsBefore == kMaxPending; }, kHandshakeTimeoutMs + 3000),
           "idle handshakes timed out: " + std::to_string(edge.Stats().tunnel.inTlsFail[static_cast<int>(TlsFail::kTimeout)] - timeoutsBefore) + ", want " + std::to_string(kMaxPending));
    for (int fd : idle) close(fd);
    Expect(WaitFor([&] { return edge.Stats().tunnel.pending == 0; }, 2000), "pending handshakes left");
    // A valid connection goes through again once the slots are free.
    Expect(OneShort(kSvcOk, 4242), "a connection after the pending-limit test");
    okConns++;

    // ---- rotation: new certificates on both sides while tunnelled connections are open
    {
      constexpr int kLive = 6;
      std::vector<int> live;
      char msg[32];
      for (int i = 0; i < kLive; i++) {
        int fd = Connect(kSvcOk, 80);
        Expect(fd >= 0, "live connection");
        std::snprintf(msg, sizeof msg, "before-%d", i);
        Expect(write(fd, msg, std::strlen(msg)) == static_cast<ssize_t>(std::strlen(msg)), "write before rotation");
        char in[64];
        size_t got = 0;
        while (got < std::strlen(msg)) {
          ssize_t n = read(fd, in + got, sizeof in - got);
          Expect(n > 0, "echo before rotation");
          got += static_cast<size_t>(n);
        }
        Expect(std::memcmp(in, msg, got) == 0, "echo before rotation intact");
        live.push_back(fd);
      }
      cloud.SetTunnelCreds(Creds(ca, Issue(ca, "cloud")));
      edge.SetTunnelCreds(Creds(ca, Issue(ca, "edge")));
      // New connections use the new generation (no session of the old one to resume)...
      for (int i = 0; i < 20; i++) Expect(OneShort(kSvcOk, 5000 + i), "a connection after the rotation");
      okConns += 20;
      // ... and the open ones, made from the old generation, keep running to a clean end.
      for (int i = 0; i < kLive; i++) {
        std::snprintf(msg, sizeof msg, "after-%d", i);
        Expect(write(live[i], msg, std::strlen(msg)) == static_cast<ssize_t>(std::strlen(msg)), "write after rotation");
        shutdown(live[i], SHUT_WR);
        std::string got;
        char in[64];
        for (;;) {
          ssize_t n = read(live[i], in, sizeof in);
          if (n <= 0) break;
          got.append(in, static_cast<size_t>(n));
        }
        Expect(got == msg, "a connection opened before the rotation: got \"" + got + "\" after it");
        close(live[i]);
      }
      okConns += kLive;
    }

    Expect(WaitFor([&] { return cloud.Stats().active == 0 && edge.Stats().active == 0; }, 5000), "connections still active at the end");
    const size_t liveAtEnd = __sanitizer_get_current_allocated_bytes();

    // ---- counters
    ProxyStats cs = cloud.Stats(), es = edge.Stats();
    const TunnelStats &ct = cs.tunnel, &et = es.tunnel;
    auto tf = [](const uint64_t* a, TlsFail f) { return a[static_cast<int>(f)]; };
    auto ts = [](const uint64_t* a, TunnelStatus s) { return a[static_cast<int>(s)]; };
    std::printf("tunnel_leak: %llu tunnelled connections echoed (%d short, %d in bursts of %d, %d bulk of 1-4 MiB, %d with failover, %d around a rotation), %llu tunnel bytes out / %llu in (cloud)\n",
                static_cast<unsigned long long>(okConns), count, kBursts * kBurst, kBurst, kBulk, kFailover, 26, static_cast<unsigned long long>(ct.bytesOut),
                static_cast<unsigned long long>(ct.bytesIn));
    std::printf("tunnel_leak: cloud: dialed %llu ok %llu resumed %llu connect-failed %llu failovers %llu; refused by peer: not-local %llu no-service %llu; name-mismatch %llu; events:%s\n",
                static_cast<unsigned long long>(ct.dialed), static_cast<unsigned long long>(ct.dialOk), static_cast<unsigned long long>(ct.resumed),
                static_cast<unsigned long long>(ct.dialConnectFailed), static_cast<unsigned long long>(cs.failovers),
                static_cast<unsigned long long>(ts(ct.dialRefused, TunnelStatus::kNotLocal)), static_cast<unsigned long long>(ts(ct.dialRefused, TunnelStatus::kNoService)),
                static_cast<unsigned long long>(tf(ct.dialTlsFail, TlsFail::kNameMismatch)), cloudEvents.Text().c_str());
    std::string inFails;
    for (int i = 1; i < static_cast<int>(TlsFail::kCount); i++) inFails += std::string(" ") + TlsFailName(static_cast<TlsFail>(i)) + "=" + std::to_string(et.inTlsFail[i]);
    std::printf("tunnel_leak: edge: accepted %llu ok %llu pending-limit %llu; refused: bad-request %llu not-local %llu no-service %llu; handshake failures:%s; events:%s\n",
                static_cast<unsigned long long>(et.inAccepted), static_cast<unsigned long long>(et.inOk), static_cast<unsigned long long>(et.pendingLimit),
                static_cast<unsigned long long>(ts(et.inRefused, TunnelStatus::kBadRequest)), static_cast<unsigned long long>(ts(et.inRefused, TunnelStatus::kNotLocal)),
                static_cast<unsigned long long>(ts(et.inRefused, TunnelStatus::kNoService)), inFails.c_str(), edgeEvents.Text().c_str());
    const long growth = static_cast<long>(liveAtEnd) - static_cast<long>(liveAfterShort);
    const long steady = static_cast<long>(liveAfterShort) - static_cast<long>(liveAfterWarmup);
    std::printf("tunnel_leak: live heap after %d short connections: %zu bytes, after %d more: %zu (%+ld), at the end: %zu (%+ld); %lld ms short, %lld ms bursts+bulk, %lld ms in all\n",
                warmup, liveAfterWarmup, count - warmup, liveAfterShort, steady, liveAtEnd, growth, static_cast<long long>(tShort - t0),
                static_cast<long long>(tBulk - tShort), static_cast<long long>(NowMs() - t0));

    Expect(et.inOk == okConns, "edge served " + std::to_string(et.inOk) + " tunnelled connections, want " + std::to_string(okConns));
    Expect(ct.dialOk == okConns, "cloud: " + std::to_string(ct.dialOk) + " dials answered ok, want " + std::to_string(okConns));
    Expect(ct.dialConnectFailed == kFailover / 2 && cs.failovers == kFailover / 2, "failover: connect-failed " + std::to_string(ct.dialConnectFailed) + ", failovers " + std::to_string(cs.failovers));
    Expect(ts(ct.dialRefused, TunnelStatus::kNotLocal) == kRefusals && ts(et.inRefused, TunnelStatus::kNotLocal) == kRefusals, "not-local refusals counted");
    Expect(ts(ct.dialRefused, TunnelStatus::kNoService) == kRefusals && ts(et.inRefused, TunnelStatus::kNoService) == kRefusals, "no-service refusals counted");
    Expect(tf(ct.dialTlsFail, TlsFail::kNameMismatch) == kRefusals, "name mismatches counted");
    Expect(ts(et.inRefused, TunnelStatus::kBadRequest) == 3 * kRaw + 1, "bad requests counted");
    Expect(tf(et.inTlsFail, TlsFail::kNoCertificate) == kRaw, "no-certificate handshakes counted");
    Expect(tf(et.inTlsFail, TlsFail::kUnknownCa) == kRaw, "unknown-CA handshakes counted");
    Expect(tf(et.inTlsFail, TlsFail::kExpired) == kRaw, "expired-certificate handshakes counted");
    Expect(tf(et.inTlsFail, TlsFail::kClosed) >= 2 * kRaw, "handshakes cut (FIN, RST) counted");
    Expect(et.pendingLimit == kIdle - kMaxPending && tf(et.inTlsFail, TlsFail::kTimeout) == kMaxPending, "pending-limit and timeout counts");
    Expect(ct.bytesOut == ct.bytesIn && et.bytesOut == et.bytesIn && ct.bytesOut == et.bytesIn, "tunnel bytes: every byte sent came back, as many on both sides");
    Expect(ct.resumed > 0, "no TLS session was ever resumed");
    Expect(es.active == 0 && cs.active == 0 && et.pending == 0, "active or pending connections left");
    Expect(cs.handoffs + es.handoffs > 0, "no connection was handed between workers");
    Expect(growth < 256 * 1024 && steady < 256 * 1024, "the live heap grew (" + std::to_string(steady) + " over the steady part, " + std::to_string(growth) + " after it)");

    SSL_CTX_free(noCert);
    SSL_CTX_free(foreignCtx);
    SSL_CTX_free(expiredCtx);
    SSL_CTX_free(validCtx);
    cloud.Shutdown();
    edge.Shutdown();
  }
  std::printf("tunnel_leak: echo endpoint accepted %llu connections\n", static_cast<unsigned long long>(echo.accepted()));
  return 0;
}
