#include "relay/relay_core.h"

#include <fcntl.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <deque>
#include <random>

#include "common/netns.h"
#include "common/syserror.h"

namespace edgemesh {

namespace {

int64_t MonoMs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

int64_t MonoNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1000000000LL + ts.tv_nsec;
}

void CloseFd(int* fd) {
  if (*fd >= 0) {
    close(*fd);
    *fd = -1;
  }
}

// An abortive close: the peer gets a RST instead of a FIN.
void SetLingerZero(int fd) {
  if (fd < 0) return;
  linger l{1, 0};
  setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof l);
}

void SetNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

// Errors after which trying another endpoint makes sense.
bool Retryable(int err) {
  return err == ECONNREFUSED || err == ETIMEDOUT || err == EHOSTUNREACH || err == ENETUNREACH || err == ECONNRESET ||
         err == EADDRNOTAVAIL || err == ECONNABORTED;
}

constexpr uint64_t kTagListen = 2;
constexpr uint64_t kTagWake = 4;
constexpr uint64_t kTagTunnelListen = 6;

double WallMs() {
  timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<double>(ts.tv_sec) * 1000.0 + static_cast<double>(ts.tv_nsec / 1000000);
}

// SSL_write_ex / SSL_read_ex in the relay's terms: > 0 bytes; 0 (read only) the peer's
// close_notify; -1 with errno (EAGAIN: would block; ECONNRESET: the TLS stream was cut without
// close_notify; EPROTO: a TLS error). The thread's OpenSSL error queue is left empty.
ssize_t SslWriteSome(SSL* ssl, const char* p, size_t n) {
  size_t w = 0;
  int r = SSL_write_ex(ssl, p, n, &w);
  if (r == 1) return static_cast<ssize_t>(w);
  int e = SSL_get_error(ssl, r);
  int sys = errno;
  ClearTlsErrors();
  errno = e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ ? EAGAIN
          : e == SSL_ERROR_SYSCALL && sys != 0                  ? sys
          : e == SSL_ERROR_SYSCALL                              ? ECONNRESET
                                                                : EPROTO;
  return -1;
}

ssize_t SslReadSome(SSL* ssl, char* p, size_t n) {
  size_t got = 0;
  int r = SSL_read_ex(ssl, p, n, &got);
  if (r == 1) return static_cast<ssize_t>(got);
  int e = SSL_get_error(ssl, r);
  int sys = errno;
  if (e == SSL_ERROR_ZERO_RETURN) {
    ClearTlsErrors();
    return 0;
  }
  unsigned long q = ERR_peek_error();
  ClearTlsErrors();
  if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) errno = EAGAIN;
  else if (e == SSL_ERROR_SYSCALL) errno = sys != 0 ? sys : ECONNRESET;
  else errno = q != 0 && ERR_GET_REASON(q) == SSL_R_UNEXPECTED_EOF_WHILE_READING ? ECONNRESET : EPROTO;
  return -1;
}

// Fills `p` with as many records as are there (SSL_read_ex returns one record at a time), so
// the plain side gets one large write instead of one per 16 KiB record.
ssize_t SslFill(SSL* ssl, char* p, size_t cap) {
  size_t got = 0;
  while (got < cap) {
    ssize_t n = SslReadSome(ssl, p + got, cap - got);
    if (n > 0) {
      got += static_cast<size_t>(n);
      continue;
    }
    if (got > 0) return static_cast<ssize_t>(got);  // EOF or an error shows again on the next call
    return n;
  }
  return static_cast<ssize_t>(got);
}

}  // namespace

const char* EndReasonName(EndReason r) {
  switch (r) {
    case EndReason::kEof: return "eof";
    case EndReason::kReset: return "reset";
    case EndReason::kIdleTimeout: return "idle-timeout";
    case EndReason::kCancelled: return "cancelled";
    case EndReason::kError: return "error";
    case EndReason::kConnectFailed: return "connect-failed";
    case EndReason::kRefused: return "refused";
  }
  return "error";
}

const char* RefusalName(Refusal r) {
  switch (r) {
    case Refusal::kNone: return "";
    case Refusal::kOverLimit: return "over-limit";
    case Refusal::kNoOriginalDst: return "no-original-dst";
    case Refusal::kLoop: return "loop";
    case Refusal::kNoRoute: return "no-route";
    case Refusal::kNoEndpoints: return "no-endpoints";
    case Refusal::kTunnelHandshake: return "tunnel-handshake";
    case Refusal::kTunnelRequest: return "tunnel-request";
    case Refusal::kCount: break;
  }
  return "";
}

const char* EndpointPathName(EndpointPath p) {
  switch (p) {
    case EndpointPath::kDirect: return "direct";
    case EndpointPath::kLocal: return "local";
    case EndpointPath::kTunnel: return "tunnel";
    case EndpointPath::kRelay: return "relay";
  }
  return "direct";
}

// ---------------------------------------------------------------- routing table

std::string RouteTable::Key(const SockAddr& a) {
  std::string k = a.IpBytes();
  uint16_t p = a.port();
  k.push_back(static_cast<char>(p >> 8));
  k.push_back(static_cast<char>(p & 0xff));
  return k;
}

bool RouteTable::Add(const SockAddr& serviceAddr, std::unique_ptr<RouteEntry> entry) {
  return map_.emplace(Key(serviceAddr), std::move(entry)).second;
}

const RouteEntry* RouteTable::Find(const SockAddr& dst) const {
  auto it = map_.find(Key(dst));
  return it == map_.end() ? nullptr : it->second.get();
}

static std::string ServeKey(const std::string& service, uint16_t port) { return service + '|' + std::to_string(port); }

void LocalServeTable::Add(const std::string& service, uint16_t servicePort, const SockAddr& endpoint) {
  map_[ServeKey(service, servicePort)].push_back(RouteTable::Key(endpoint));
}

TunnelStatus LocalServeTable::Check(const TunnelRequest& r) const {
  auto it = map_.find(ServeKey(r.service, r.servicePort));
  if (it == map_.end()) return TunnelStatus::kNoService;
  std::string k = RouteTable::Key(r.endpoint);
  for (const auto& e : it->second) {
    if (e == k) return TunnelStatus::kOk;
  }
  return TunnelStatus::kNotLocal;
}

// ---------------------------------------------------------------- connections

namespace {

struct Pipe {
  int r = -1, w = -1;
  size_t cap = 0;
  int64_t idleSinceMs = 0;  // when it went back to the pool
};

struct Conn;

// One direction of a connection: src -> (pipe or buffer) -> dst.
struct Dir {
  Pipe pipe;
  std::unique_ptr<char[]> buf;
  size_t bufSize = 0;
  size_t pending = 0;  // bytes taken from src, not yet written to dst
  size_t off = 0;      // copy mode: start of pending bytes in buf
  bool copy = false;
  SSL* rssl = nullptr;    // src is a TLS end: read through it
  SSL* wssl = nullptr;    // dst is a TLS end: its close_notify goes through it
  bool sslWrite = false;  // ... and so do its bytes (false when the kernel encrypts: kTLS)
  bool eof = false;       // src said EOF
  bool shut = false;      // dst got shutdown(SHUT_WR)
  uint64_t bytes = 0;     // delivered to dst
};

// kService: kConnecting -> [relay endpoint: kJoinOut] -> [tunnel or relay endpoint: kHandshake
//           -> kRequest -> kResponse] -> kRelay
// kTunnelIn: kSniff -> kHandshake -> kRequest -> kConnecting (to our endpoint) -> kRelay; or, as
//           a registered node's data connection for a join: kDataConnecting -> kHandshake -> ...
// kPlainIn (relay): kSniff -> kPlainHeader -> becomes kJoin (kJoinWait -> kRelay, spliced to the
//           node's data connection) or hands its socket to that join
// kSessionIn (relay) / kSessionOut (registered node): kHandshake -> kRequest -> kResponse ->
//           kSessionUp (pings, pongs, notifies)
enum class Kind : uint8_t { kService, kTunnelIn, kPlainIn, kJoin, kSessionIn, kSessionOut };
enum class Phase : uint8_t {
  kConnecting,
  kHandshake,
  kRequest,
  kResponse,
  kRelay,
  kSniff,
  kPlainHeader,
  kJoinWait,
  kJoinOut,
  kDataConnecting,
  kSessionUp
};

struct Conn {
  uint64_t id = 0;
  int cfd = -1, ufd = -1;
  Kind kind = Kind::kService;
  Phase phase = Phase::kConnecting;
  bool connecting = true;               // phase != kRelay
  SSL* cssl = nullptr;                  // kTunnelIn: the TLS end towards the dialling agent (on cfd)
  SSL* ussl = nullptr;                  // kService via the tunnel: the TLS end towards the peer agent (on ufd)
  std::shared_ptr<TlsCreds> creds;      // the generation both SSLs were made from
  std::string peer;                     // the peer agent's node name
  std::unique_ptr<RouteEndpoint> inEp;  // kTunnelIn: the endpoint the peer asked for
  std::string inService;                // kTunnelIn: "namespace/name:port" for events
  uint8_t hdr[kMaxRequestSize];         // the request (kTunnelIn) or response (kService) being read
  size_t hdrLen = 0;
  std::string out;  // kService: the request being written
  size_t outOff = 0;
  TlsFail tlsFail = TlsFail::kNone;
  TunnelStatus tunnelStatus = TunnelStatus::kOk;
  bool resumed = false, ktls = false, pendingSlot = false;
  bool counted = true;                 // holds a slot of `active` (sessions do not)
  size_t relayIdx = 0;                 // kService, relay endpoint: which of its relays this attempt uses
  size_t relayTries = 0;               // ... and how many of them this endpoint has tried
  std::string token;                   // kJoin: its pending join; kTunnelIn data connection: the join's
  SockAddr dial;                       // kTunnelIn data connection / kSessionOut: the relay dialled
  int slot = -1;                       // kSessionOut: index of its relay in the worker's session table
  int64_t lastRxMs = 0, lastTxMs = 0;  // sessions: keepalive
  bool dead = false;
  bool queued = false;  // on the worker's "pump again" list
  bool cRd = true, cWr = true, uRd = false, uWr = false;
  Dir up, down;                             // up: client -> upstream
  std::shared_ptr<const RouteTable> table;  // keeps `route` alive
  const RouteEntry* route = nullptr;
  std::vector<bool> tried;
  size_t epIndex = 0;
  uint32_t attempts = 0, failovers = 0;
  SockAddr client, odst;
  int64_t startNs = 0;
  int64_t lastActiveMs = 0;
  int64_t deadlineMs = 0;
  Conn* prev = nullptr;
  Conn* next = nullptr;
  int list = 0;  // 0 none, 1 connecting, 2 idle, 3 handshaking (tunnel)
};

const RouteEndpoint& Ep(const Conn* c) { return c->kind == Kind::kTunnelIn ? *c->inEp : c->route->endpoints[c->epIndex]; }
std::string EpText(const Conn* c) {
  if (c->kind == Kind::kService) return c->route->endpoints[c->epIndex].text;
  if (c->kind == Kind::kTunnelIn) return c->inEp ? c->inEp->text : std::string();
  return c->odst.len ? c->odst.ToString() : std::string();  // kJoin: the node's data connection
}
std::string ServiceText(const Conn* c) {
  if (c->kind == Kind::kService) return c->route->service;
  return c->kind == Kind::kTunnelIn ? c->inService : std::string();
}
const char* PathText(const Conn* c) {
  switch (c->kind) {
    case Kind::kService: return EndpointPathName(Ep(c).path);
    case Kind::kTunnelIn: return "tunnel-in";
    case Kind::kJoin: return "relayed";
    case Kind::kPlainIn: return "relay-in";
    case Kind::kSessionIn:
    case Kind::kSessionOut: return "session";
  }
  return "";
}
// The address a kService attempt dialled: the endpoint, its node's agent, or one of its relays.
const SockAddr& DialAddr(const Conn* c) {
  const RouteEndpoint& ep = Ep(c);
  if (ep.path == EndpointPath::kTunnel) return ep.tunnel;
  if (ep.path == EndpointPath::kRelay) return ep.relays[c->relayIdx];
  return ep.addr;
}

// Intrusive FIFO; ordered by deadline because every entry gets the same timeout.
struct ConnList {
  Conn* head = nullptr;
  Conn* tail = nullptr;
  void PushBack(Conn* c) {
    c->prev = tail;
    c->next = nullptr;
    if (tail) tail->next = c;
    else head = c;
    tail = c;
  }
  void Remove(Conn* c) {
    if (c->prev) c->prev->next = c->next;
    else head = c->next;
    if (c->next) c->next->prev = c->prev;
    else tail = c->prev;
    c->prev = c->next = nullptr;
  }
};

}  // namespace

struct StartLatch {
  explicit StartLatch(int n) : left(n) {}
  void Done(int e) {
    std::lock_guard<std::mutex> g(mu);
    if (e != 0) err = e;
    if (--left == 0) cv.notify_all();
  }
  bool Wait() {
    std::unique_lock<std::mutex> lk(mu);
    cv.wait(lk, [this] { return left == 0; });
    return err == 0;
  }
  std::mutex mu;
  std::condition_variable cv;
  int left;
  int err = 0;
};

// An accepted socket on its way to another worker: closed here unless the receiver took it (a
// command that never runs, because its worker quit first, still closes its fd exactly once).
class PassedFd {
 public:
  explicit PassedFd(int fd) : fd_(fd) {}
  ~PassedFd() { CloseFd(&fd_); }
  PassedFd(const PassedFd&) = delete;
  PassedFd& operator=(const PassedFd&) = delete;
  int Take() {
    int fd = fd_;
    fd_ = -1;
    return fd;
  }

 private:
  int fd_;
};

class Worker {
 public:
  Worker(Proxy* proxy, int index)
      : proxy_(proxy), cfg_(proxy->config()), index_(index), rng_(std::random_device{}() + static_cast<unsigned>(index)) {}
  ~Worker() {
    for (Pipe& p : pool_) ClosePipe(&p);
    CloseFd(&ep_);
    CloseFd(&wake_);
  }

  // Creates epoll + eventfd (on the caller's thread: fds are not namespaced).
  void Init() {
    ep_ = epoll_create1(EPOLL_CLOEXEC);
    if (ep_ < 0) throw SysError(errno, "epoll_create1", std::string("epoll_create1: ") + strerror(errno));
    wake_ = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake_ < 0) throw SysError(errno, "eventfd", std::string("eventfd: ") + strerror(errno));
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kTagWake;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, wake_, &ev) != 0) throw SysError(errno, "epoll_ctl", std::string("epoll_ctl: ") + strerror(errno));
    ArmListen();
  }

  void Start(int nsFd, StartLatch* latch) {
    thread_ = std::thread([this, nsFd, latch] { Run(nsFd, latch); });
  }

  void Join() {
    if (thread_.joinable()) thread_.join();
  }

  // Connections this worker relays, plus those on their way to it.
  int Load() const { return load_.load(std::memory_order_relaxed) + inbox_.load(std::memory_order_relaxed); }

  // --- commands from other threads ---
  void PostAccepted(int fd, const SockAddr& peer, bool tunnel) {
    inbox_.fetch_add(1, std::memory_order_relaxed);
    auto passed = std::make_shared<PassedFd>(fd);
    Post([this, passed, peer, tunnel] {
      inbox_.fetch_sub(1, std::memory_order_relaxed);
      if (tunnel) AcceptedTunnel(passed->Take(), peer);
      else Accepted(passed->Take(), peer);
    });
  }
  void PostCancel(uint64_t id) {
    Post([this, id] { CancelId(id); });
  }
  void PostStopAccept(std::function<void()> ack) {
    Post([this, ack] {
      acceptStopped_ = true;
      DisarmListen();
      ack();
    });
  }
  void PostList(std::function<void(std::vector<ConnInfo>&&)> done) {
    Post([this, done] {
      std::vector<ConnInfo> out;
      int64_t nowNs = MonoNs();
      for (auto& kv : conns_) {
        Conn* c = kv.second;
        ConnInfo i;
        i.id = c->id;
        i.client = c->client.ToString();
        i.originalDst = c->odst.ToString();
        i.endpoint = EpText(c);
        i.service = ServiceText(c);
        i.connecting = c->connecting;
        i.path = PathText(c);
        i.peer = c->peer;
        i.bytesUp = c->up.bytes;
        i.bytesDown = c->down.bytes;
        i.ageMs = static_cast<double>(nowNs - c->startNs) / 1e6;
        i.worker = index_;
        out.push_back(std::move(i));
      }
      done(std::move(out));
    });
  }
  void PostQuit() {
    Post([this] { quit_ = true; });
  }
  // Relay: tell a registered node's session to open a data connection for this join.
  void PostNotify(uint64_t sessionId, const std::string& token) {
    Post([this, sessionId, token] { Notify(sessionId, token); });
  }
  // Relay: the node's data connection for a join this worker holds.
  void PostPair(uint64_t joinId, int fd, const SockAddr& from) {
    auto passed = std::make_shared<PassedFd>(fd);
    Post([this, joinId, passed, from] { PairJoin(joinId, passed->Take(), from); });
  }
  void PostSetRelays(std::vector<SockAddr> relays) {
    Post([this, relays] { SetRelays(relays); });
  }

 private:
  using Cmd = std::function<void()>;

  void Post(Cmd c) {
    {
      std::lock_guard<std::mutex> g(cmdMu_);
      cmds_.push_back(std::move(c));
    }
    uint64_t one = 1;
    ssize_t n = write(wake_, &one, sizeof one);
    (void)n;
  }

  void RunCommands() {
    uint64_t v;
    ssize_t n = read(wake_, &v, sizeof v);
    (void)n;
    std::vector<Cmd> cmds;
    {
      std::lock_guard<std::mutex> g(cmdMu_);
      cmds.swap(cmds_);
    }
    for (auto& c : cmds) c();
  }

  void ArmListen() {
    if (listenArmed_ || acceptStopped_) return;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLEXCLUSIVE;
    ev.data.u64 = kTagListen;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, proxy_->listenFd(), &ev) == 0) listenArmed_ = true;
    if (proxy_->tunnelFd() >= 0) {
      ev.data.u64 = kTagTunnelListen;
      if (epoll_ctl(ep_, EPOLL_CTL_ADD, proxy_->tunnelFd(), &ev) == 0) tunnelArmed_ = true;
    }
  }

  void DisarmListen() {
    if (listenArmed_) epoll_ctl(ep_, EPOLL_CTL_DEL, proxy_->listenFd(), nullptr);
    if (tunnelArmed_) epoll_ctl(ep_, EPOLL_CTL_DEL, proxy_->tunnelFd(), nullptr);
    listenArmed_ = tunnelArmed_ = false;
  }

  void Run(int nsFd, StartLatch* latch) {
    // This thread lives in the proxy's namespace for good: the sockets it creates (upstream
    // connections) belong there. On failure the Proxy constructor shuts everything down.
    int e = 0;
    if (nsFd >= 0 && setns(nsFd, CLONE_NEWNET) != 0) e = errno;
    latch->Done(e);  // `latch` is gone after this
    if (e != 0) {
      DisarmListen();
      return;
    }
    constexpr int kMaxEvents = 256;
    epoll_event evs[kMaxEvents];
    while (!quit_) {
      int timeout = NextTimeoutMs();
      int n = epoll_wait(ep_, evs, kMaxEvents, timeout);
      now_ = MonoMs();
      if (n < 0) {
        if (errno == EINTR) continue;
        std::fprintf(stderr, "edgemesh relay: epoll_wait failed: %s\n", strerror(errno));
        break;
      }
      for (int i = 0; i < n; i++) {
        uint64_t tag = evs[i].data.u64;
        if (tag == kTagWake) {
          RunCommands();
        } else if (tag == kTagListen) {
          OnListen(proxy_->listenFd(), false);
        } else if (tag == kTagTunnelListen) {
          OnListen(proxy_->tunnelFd(), true);
        } else {
          Conn* c = reinterpret_cast<Conn*>(tag & ~uint64_t{1});
          if (!c->dead) OnConnEvent(c, (tag & 1) != 0, evs[i].events);
        }
      }
      RunAgain();
      RunTimers();
      Reap();
    }
    // Quit: end every connection, report, free.
    std::vector<Conn*> all;
    all.reserve(conns_.size());
    for (auto& kv : conns_) all.push_back(kv.second);
    for (Conn* c : all) Finish(c, EndReason::kCancelled, 0, "");
    Reap();
    DisarmListen();
  }

  int NextTimeoutMs() {
    if (!again_.empty()) return 0;
    int64_t next = INT64_MAX;
    if (connecting_.head) next = std::min(next, connecting_.head->deadlineMs);
    if (handshaking_.head) next = std::min(next, handshaking_.head->deadlineMs);
    if (idle_.head && cfg_.idleTimeoutMs > 0) next = std::min(next, idle_.head->lastActiveMs + cfg_.idleTimeoutMs);
    if (backoffUntil_ > 0) next = std::min(next, backoffUntil_);
    if (!pool_.empty()) next = std::min(next, pool_.front().idleSinceMs + static_cast<int64_t>(cfg_.pipeIdleMs));
    if (!sessions_.empty() || !out_.empty()) next = std::min(next, nextSessionCheckMs_);
    if (next == INT64_MAX) return -1;
    int64_t d = next - MonoMs();
    // The coarse clock can lag by a tick: never spin at 0 for a deadline in the past.
    if (d < 1) d = 1;
    if (d > 60000) d = 60000;
    return static_cast<int>(d);
  }

  void RunTimers() {
    while (connecting_.head && connecting_.head->deadlineMs <= now_) ConnectFailed(connecting_.head, ETIMEDOUT, "connect");
    while (handshaking_.head && handshaking_.head->deadlineMs <= now_)
      TunnelFailed(handshaking_.head, TlsFail::kTimeout, TunnelStatus::kOk, ETIMEDOUT);
    if (!sessions_.empty() || !out_.empty()) RunSessions();
    if (cfg_.idleTimeoutMs > 0) {
      while (idle_.head && idle_.head->lastActiveMs + static_cast<int64_t>(cfg_.idleTimeoutMs) <= now_) {
        Finish(idle_.head, EndReason::kIdleTimeout, ETIMEDOUT, "");
      }
    }
    if (backoffUntil_ > 0 && backoffUntil_ <= now_) {
      backoffUntil_ = 0;
      ArmListen();
    }
    // Pipes idle in the pool longer than pipeIdleMs are closed (oldest first), so a burst does
    // not pin fds and pipe memory for ever and an idle proxy holds no pipes at all.
    while (!pool_.empty() && pool_.front().idleSinceMs + static_cast<int64_t>(cfg_.pipeIdleMs) <= now_) {
      ClosePipe(&pool_.front());
      pool_.pop_front();
    }
  }

  // ---------------------------------------------------------------- accept

  void OnListen(int listenFd, bool tunnel) {
    if (acceptStopped_) return;
    auto& k = proxy_->counters();
    for (int i = 0; i < 64; i++) {
      SockAddr peer;
      peer.len = sizeof peer.ss;
      int fd = accept4(listenFd, reinterpret_cast<sockaddr*>(&peer.ss), &peer.len, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        int e = errno;
        if (e == EAGAIN || e == EWOULDBLOCK) return;
        if (e == EINTR || e == ECONNABORTED || e == EPROTO) continue;
        k.acceptErrors.fetch_add(1, std::memory_order_relaxed);
        if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
          // Out of descriptors or memory: stop accepting for a while instead of spinning on a
          // level-triggered listener; the pending connections wait in the backlog.
          k.acceptBackoffs.fetch_add(1, std::memory_order_relaxed);
          DisarmListen();
          backoffMs_ = backoffMs_ == 0 ? 10 : std::min<int64_t>(backoffMs_ * 2, 1000);
          backoffUntil_ = MonoMs() + backoffMs_;
        }
        return;
      }
      backoffMs_ = 0;
      Worker* to = proxy_->PickWorker(this);
      if (to == this) {
        if (tunnel) AcceptedTunnel(fd, peer);
        else Accepted(fd, peer);
      } else {
        k.handoffs.fetch_add(1, std::memory_order_relaxed);
        to->PostAccepted(fd, peer, tunnel);
      }
    }
  }

  void Refuse(int fd, const SockAddr& peer, const SockAddr* odst, Refusal why, int err, const char* call) {
    auto& k = proxy_->counters();
    k.refused[static_cast<int>(why)].fetch_add(1, std::memory_order_relaxed);
    k.ended[static_cast<int>(EndReason::kRefused)].fetch_add(1, std::memory_order_relaxed);
    SetLingerZero(fd);
    close(fd);
    if (cfg_.events == EventFilter::kNone) return;
    ConnEvent ev;
    ev.id = proxy_->NextId();
    ev.client = peer.ToString();
    if (odst) ev.originalDst = odst->ToString();
    ev.reason = EndReason::kRefused;
    ev.refusal = why;
    ev.err = err;
    if (call) ev.syscall = call;
    events_.push_back(std::move(ev));
  }

  void Accepted(int fd, const SockAddr& peer) {
    auto& k = proxy_->counters();
    k.accepted.fetch_add(1, std::memory_order_relaxed);
    // Reserve the slot first: exact across workers (check-then-add could overshoot).
    if (k.active.fetch_add(1, std::memory_order_relaxed) >= cfg_.maxConnections) {
      k.active.fetch_sub(1, std::memory_order_relaxed);
      Refuse(fd, peer, nullptr, Refusal::kOverLimit, 0, nullptr);
      return;
    }
    auto refuse = [&](const SockAddr* odst, Refusal why, int err, const char* call) {
      k.active.fetch_sub(1, std::memory_order_relaxed);
      Refuse(fd, peer, odst, why, err, call);
    };
    SockAddr odst;
    int e = GetOriginalDstKnownFamily(fd, proxy_->LocalAddress().family(), &odst);
    if (e != 0) {
      refuse(nullptr, Refusal::kNoOriginalDst, e, "getsockopt");
      return;
    }
    if (IsSelf(fd, odst)) {
      refuse(&odst, Refusal::kLoop, 0, nullptr);
      return;
    }
    proxy_->RefreshTable(&tableVersion_, &table_);
    proxy_->RefreshTunnel(&tunnelVersion_, &creds_, &serve_);
    const RouteEntry* route = table_ ? table_->Find(odst) : nullptr;
    if (!route) {
      refuse(&odst, Refusal::kNoRoute, 0, nullptr);
      return;
    }
    if (route->endpoints.empty()) {
      refuse(&odst, Refusal::kNoEndpoints, 0, nullptr);
      return;
    }
    Conn* c = new Conn();
    c->id = proxy_->NextId();
    c->cfd = fd;
    c->client = peer;
    c->odst = odst;
    c->table = table_;
    c->route = route;
    c->tried.assign(route->endpoints.size(), false);
    c->startNs = MonoNs();
    c->lastActiveMs = now_;
    conns_.emplace(c->id, c);
    load_.fetch_add(1, std::memory_order_relaxed);
    // TCP_NODELAY comes from the listener (accepted sockets inherit it).
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = reinterpret_cast<uint64_t>(c);
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      Finish(c, EndReason::kError, errno, "epoll_ctl");
      return;
    }
    c->epIndex = PickFirst(c);
    StartConnect(c);
  }

  // The original destination is the proxy itself (a direct connection, or a rule loop).
  bool IsSelf(int fd, const SockAddr& odst) {
    SockAddr local = proxy_->LocalAddress();
    if (odst.port() != local.port()) return false;
    if (!local.IsAnyAddress()) return odst.SameIpPort(local);
    SockAddr me;
    me.len = sizeof me.ss;
    if (getsockname(fd, reinterpret_cast<sockaddr*>(&me.ss), &me.len) != 0) return false;
    return odst.SameIpPort(me);
  }

  size_t PickFirst(Conn* c) {
    const RouteEntry& r = *c->route;
    size_t n = r.endpoints.size();
    if (r.clientIpAffinity) {
      std::string ep;
      if (proxy_->AffinityLookup(r, c->client, now_, &ep)) {
        for (size_t i = 0; i < n; i++) {
          if (r.endpoints[i].text == ep) return i;
        }
      }
    }
    if (cfg_.selection == Selection::kRandom) return std::uniform_int_distribution<size_t>(0, n - 1)(rng_);
    return r.next.fetch_add(1, std::memory_order_relaxed) % n;
  }

  // ---------------------------------------------------------------- connect + failover

  // An inbound tunnel connection: TLS first (the peer must present a certificate of our CA),
  // then its request, then a connect to the one local endpoint it names.
  void AcceptedTunnel(int fd, const SockAddr& peer) {
    auto& k = proxy_->counters();
    k.tInAccepted.fetch_add(1, std::memory_order_relaxed);
    proxy_->RefreshTunnel(&tunnelVersion_, &creds_, &serve_);
    auto drop = [&](TunnelStatus st, bool pendingLimit) {
      if (pendingLimit) k.tPendingLimit.fetch_add(1, std::memory_order_relaxed);
      else k.tInRefused[static_cast<int>(st)].fetch_add(1, std::memory_order_relaxed);
      SetLingerZero(fd);
      close(fd);
    };
    if (!creds_) {
      // Credentials not loaded (yet): nothing to authenticate with.
      k.tInTlsFail[static_cast<int>(TlsFail::kProtocol)].fetch_add(1, std::memory_order_relaxed);
      SetLingerZero(fd);
      close(fd);
      return;
    }
    // Unauthenticated connections are bounded on their own, so that a flood of them cannot
    // take the slots of authenticated ones (or of the service proxy).
    if (k.tPending.fetch_add(1, std::memory_order_relaxed) >= cfg_.maxPendingHandshakes) {
      k.tPending.fetch_sub(1, std::memory_order_relaxed);
      drop(TunnelStatus::kOverLimit, true);
      return;
    }
    if (k.active.fetch_add(1, std::memory_order_relaxed) >= cfg_.maxConnections) {
      k.active.fetch_sub(1, std::memory_order_relaxed);
      k.tPending.fetch_sub(1, std::memory_order_relaxed);
      drop(TunnelStatus::kOverLimit, false);
      return;
    }
    k.accepted.fetch_add(1, std::memory_order_relaxed);
    Conn* c = new Conn();
    c->id = proxy_->NextId();
    c->kind = Kind::kTunnelIn;
    c->phase = Phase::kHandshake;
    c->pendingSlot = true;
    c->cfd = fd;
    c->client = peer;
    c->creds = creds_;
    c->startNs = MonoNs();
    c->lastActiveMs = now_;
    conns_.emplace(c->id, c);
    load_.fetch_add(1, std::memory_order_relaxed);
    c->phase = Phase::kSniff;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = reinterpret_cast<uint64_t>(c);
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      Finish(c, EndReason::kError, errno, "epoll_ctl");
      return;
    }
    c->deadlineMs = MonoMs() + cfg_.handshakeTimeoutMs;
    ListMove(c, 3);
    Sniff(c);
  }

  // The first byte tells a TLS handshake (0x16: a tunnel connection or a node registering) from
  // a relay's plaintext header ('E': a join, or a node's data connection for one).
  void Sniff(Conn* c) {
    uint8_t b = 0;
    ssize_t n = recv(c->cfd, &b, 1, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) return;
    if (n <= 0) {
      TunnelFailed(c, TlsFail::kClosed, TunnelStatus::kOk, n == 0 ? ECONNRESET : errno);
      return;
    }
    if (b == 'E') {
      c->kind = Kind::kPlainIn;
      c->phase = Phase::kPlainHeader;
      DrivePlain(c);
      return;
    }
    c->cssl = c->creds->NewServer(c->cfd);
    if (!c->cssl) {
      Finish(c, EndReason::kError, ENOMEM, "SSL_new");
      return;
    }
    c->phase = Phase::kHandshake;
    DriveIn(c);
  }

  // ---------------------------------------------------------------- relay (plaintext side)

  // Reads a join or data header, exactly (nothing after it is consumed).
  void DrivePlain(Conn* c) {
    auto& k = proxy_->counters();
    for (;;) {
      PlainKind kind = PlainKind::kUnknown;
      std::string node;
      uint8_t token[kTokenSize];
      int got = c->hdrLen > 0 ? DecodePlain(c->hdr, c->hdrLen, &kind, &node, token) : 0;
      if (got < 0) {
        k.rJoinsRefused[static_cast<int>(TunnelStatus::kBadRequest)].fetch_add(1, std::memory_order_relaxed);
        Finish(c, EndReason::kRefused, 0, "", Refusal::kTunnelRequest);
        return;
      }
      if (got == 0) {
        size_t need = PlainSizeSoFar(c->hdr, c->hdrLen);
        ssize_t n = recv(c->cfd, c->hdr + c->hdrLen, need - c->hdrLen, 0);
        if (n > 0) {
          c->hdrLen += static_cast<size_t>(n);
          continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
        if (n < 0 && errno == EINTR) continue;
        Finish(c, EndReason::kReset, n == 0 ? ECONNRESET : errno, "recv");
        return;
      }
      c->hdrLen = 0;
      if (kind == PlainKind::kJoin) OnJoin(c, node);
      else OnData(c, std::string(reinterpret_cast<const char*>(token), kTokenSize));
      return;
    }
  }

  void JoinRefuse(Conn* c, TunnelStatus st) {
    proxy_->counters().rJoinsRefused[static_cast<int>(st)].fetch_add(1, std::memory_order_relaxed);
    c->tunnelStatus = st;
    uint8_t resp[kResponseSize];
    EncodeJoinResponse(st, resp);
    ssize_t w = send(c->cfd, resp, sizeof resp, MSG_NOSIGNAL);
    (void)w;
    Finish(c, EndReason::kRefused, 0, "", Refusal::kTunnelRequest);
  }

  // A dialler asks to be joined to `node`: only a registered node, within the pending and rate
  // bounds. The node is asked (through its session) to open a data connection carrying a token.
  void OnJoin(Conn* c, const std::string& node) {
    c->peer = node;
    if (!proxy_->TakeJoinToken(now_)) {
      proxy_->counters().rRateLimited.fetch_add(1, std::memory_order_relaxed);
      JoinRefuse(c, TunnelStatus::kOverLimit);
      return;
    }
    Worker* w = nullptr;
    uint64_t sessionId = 0;
    if (!proxy_->FindRegistration(node, &w, &sessionId)) {
      JoinRefuse(c, TunnelStatus::kNotRegistered);
      return;
    }
    std::string token(kTokenSize, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(&token[0]), static_cast<int>(kTokenSize)) != 1) {
      ClearTlsErrors();
      Finish(c, EndReason::kError, EIO, "RAND_bytes");
      return;
    }
    if (!proxy_->AddJoin(token, this, c->id)) {
      JoinRefuse(c, TunnelStatus::kOverLimit);
      return;
    }
    c->kind = Kind::kJoin;
    c->phase = Phase::kJoinWait;
    c->token = token;
    ReleasePending(c);  // bounded as a pending join from here on (maxPendingJoins)
    ListMove(c, 0);
    c->deadlineMs = MonoMs() + cfg_.handshakeTimeoutMs;
    ListMove(c, 3);
    if (w == this) Notify(sessionId, token);
    else w->PostNotify(sessionId, token);
  }

  // A node's data connection: hand its socket to the join it names (on whichever worker).
  void OnData(Conn* c, const std::string& token) {
    Worker* w = nullptr;
    uint64_t joinId = 0;
    if (!proxy_->TakeJoin(token, &w, &joinId)) {
      proxy_->counters().rUnknownToken.fetch_add(1, std::memory_order_relaxed);
      Finish(c, EndReason::kRefused, 0, "", Refusal::kTunnelRequest);
      return;
    }
    SockAddr from = c->client;
    int fd = Detach(c);
    if (w == this) PairJoin(joinId, fd, from);
    else w->PostPair(joinId, fd, from);
  }

  // Gives up a connection's client socket without closing it (it moves to another Conn).
  int Detach(Conn* c) {
    int fd = c->cfd;
    epoll_ctl(ep_, EPOLL_CTL_DEL, fd, nullptr);
    c->cfd = -1;
    c->dead = true;
    ListMove(c, 0);
    ReleasePending(c);
    conns_.erase(c->id);
    load_.fetch_sub(1, std::memory_order_relaxed);
    if (c->counted) proxy_->counters().active.fetch_sub(1, std::memory_order_relaxed);
    dead_.push_back(c);
    return fd;
  }

  // The node's data connection arrived for join `joinId`: answer the dialler, splice the two.
  // From here the relay moves ciphertext it holds no key for.
  void PairJoin(uint64_t joinId, int fd, const SockAddr& from) {
    auto it = conns_.find(joinId);
    if (it == conns_.end() || it->second->phase != Phase::kJoinWait) {
      SetLingerZero(fd);
      close(fd);
      return;
    }
    Conn* c = it->second;
    c->token.clear();
    c->ufd = fd;
    c->odst = from;
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = reinterpret_cast<uint64_t>(c) | 1;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      Finish(c, EndReason::kError, errno, "epoll_ctl");
      return;
    }
    uint8_t resp[kResponseSize];
    EncodeJoinResponse(TunnelStatus::kOk, resp);
    if (send(c->cfd, resp, sizeof resp, MSG_NOSIGNAL) != static_cast<ssize_t>(sizeof resp)) {
      Finish(c, EndReason::kReset, errno ? errno : ENOBUFS, "send");
      return;
    }
    proxy_->counters().rJoinsOk.fetch_add(1, std::memory_order_relaxed);
    c->uWr = true;
    c->uRd = true;
    StartRelay(c);
  }

  // ---------------------------------------------------------------- relay sessions

  void Notify(uint64_t sessionId, const std::string& token) {
    auto it = conns_.find(sessionId);
    if (it == conns_.end() || it->second->kind != Kind::kSessionIn || it->second->phase != Phase::kSessionUp) return;  // the join times out
    Conn* s = it->second;
    std::string frame(1, static_cast<char>(kFrameNotify));
    frame += token;
    QueueFrame(s, frame);
  }

  void QueueFrame(Conn* s, const std::string& frame) {
    if (s->outOff == s->out.size()) {
      s->out.clear();
      s->outOff = 0;
    }
    s->out += frame;
    FlushSession(s);
  }

  bool FlushSession(Conn* s) {
    SSL* ssl = s->kind == Kind::kSessionIn ? s->cssl : s->ussl;
    while (s->outOff < s->out.size()) {
      ssize_t n = SslWriteSome(ssl, s->out.data() + s->outOff, s->out.size() - s->outOff);
      if (n > 0) {
        s->outOff += static_cast<size_t>(n);
        s->lastTxMs = now_;
        continue;
      }
      if (errno == EAGAIN) return true;
      Fail(s, errno, "SSL_write");
      return false;
    }
    return true;
  }

  // Frames both ways once a session is up: pings answered, notifies turned into data connections.
  void DriveSession(Conn* s) {
    SSL* ssl = s->kind == Kind::kSessionIn ? s->cssl : s->ussl;
    for (;;) {
      size_t need = s->hdrLen == 0 ? 1 : FrameSize(s->hdr[0]);
      // Unknown frames, and notifies towards the relay, end the session.
      if (need == 0 || (s->hdrLen > 0 && s->hdr[0] == kFrameNotify && s->kind != Kind::kSessionOut)) {
        Finish(s, EndReason::kError, EPROTO, "session");
        return;
      }
      if (s->hdrLen < need) {
        ssize_t n = SslReadSome(ssl, reinterpret_cast<char*>(s->hdr + s->hdrLen), need - s->hdrLen);
        if (n > 0) {
          s->hdrLen += static_cast<size_t>(n);
          s->lastRxMs = now_;
          continue;
        }
        if (n < 0 && errno == EAGAIN) break;
        if (n == 0) Finish(s, EndReason::kEof, 0, "");
        else Fail(s, errno, "SSL_read");
        return;
      }
      uint8_t type = s->hdr[0];
      s->hdrLen = 0;
      if (type == kFramePing) {
        QueueFrame(s, std::string(1, static_cast<char>(kFramePong)));
        if (s->dead) return;
      } else if (type == kFrameNotify) {
        StartDataConn(s, std::string(reinterpret_cast<const char*>(s->hdr + 1), kTokenSize));
      }
    }
    FlushSession(s);
  }

  // The relay asked for a data connection (a dialler is waiting for us there): dial it, send
  // the token in the clear, then serve it as any inbound tunnel connection, TLS server first.
  void StartDataConn(Conn* s, const std::string& token) {
    auto& k = proxy_->counters();
    k.dataConns.fetch_add(1, std::memory_order_relaxed);
    if (s->slot >= 0 && static_cast<size_t>(s->slot) < out_.size()) {
      out_[s->slot].info.notifies++;
      PublishSessions();
    }
    proxy_->RefreshTunnel(&tunnelVersion_, &creds_, &serve_);
    if (!creds_ || k.active.fetch_add(1, std::memory_order_relaxed) >= cfg_.maxConnections) {
      if (creds_) k.active.fetch_sub(1, std::memory_order_relaxed);
      k.dataConnsFailed.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    Conn* c = new Conn();
    c->id = proxy_->NextId();
    c->kind = Kind::kTunnelIn;
    c->phase = Phase::kDataConnecting;
    c->creds = creds_;
    c->dial = s->dial;
    c->client = s->dial;
    c->token = token;
    c->startNs = MonoNs();
    c->lastActiveMs = now_;
    conns_.emplace(c->id, c);
    load_.fetch_add(1, std::memory_order_relaxed);
    const Opened o = OpenConnecting(c, c->dial, &c->cfd, 0);
    if (o.err != 0 && o.err != EINPROGRESS) {
      k.dataConnsFailed.fetch_add(1, std::memory_order_relaxed);
      Finish(c, o.atConnect ? EndReason::kConnectFailed : EndReason::kError, o.err, o.call);
      return;
    }
    c->deadlineMs = MonoMs() + cfg_.connectTimeoutMs;
    ListMove(c, 1);
  }

  void DataConnected(Conn* c) {
    std::string hdr = EncodeData(reinterpret_cast<const uint8_t*>(c->token.data()));
    c->token.clear();
    if (send(c->cfd, hdr.data(), hdr.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(hdr.size())) {
      proxy_->counters().dataConnsFailed.fetch_add(1, std::memory_order_relaxed);
      Finish(c, EndReason::kReset, errno ? errno : ENOBUFS, "send");
      return;
    }
    c->cssl = c->creds->NewServer(c->cfd);
    if (!c->cssl) {
      Finish(c, EndReason::kError, ENOMEM, "SSL_new");
      return;
    }
    c->phase = Phase::kHandshake;
    ListMove(c, 0);
    c->deadlineMs = MonoMs() + cfg_.handshakeTimeoutMs;
    ListMove(c, 3);
    DriveIn(c);
  }

  // This node's sessions with its relays (worker 0 holds them all).
  struct OutSession {
    SockAddr relay;
    Conn* conn = nullptr;
    int64_t nextAttemptMs = 0, backoffMs = 0;
    SessionInfo info;
  };

  void SetState(OutSession& o, const char* state, const std::string& err = "") {
    o.info.state = state;
    if (!err.empty()) o.info.lastError = err;
    o.info.sinceMs = WallMs();
    PublishSessions();
  }

  void PublishSessions() {
    std::vector<SessionInfo> v;
    for (auto& o : out_) v.push_back(o.info);
    proxy_->PublishSessions(std::move(v));
  }

  void SetRelays(const std::vector<SockAddr>& relays) {
    std::vector<OutSession> next;
    for (const auto& r : relays) {
      OutSession o;
      o.relay = r;
      o.info.relay = r.ToString();
      for (auto& old : out_) {
        if (old.relay.SameIpPort(r) && old.relay.family() == r.family()) {
          o = old;
          old.conn = nullptr;  // moved
          break;
        }
      }
      if (!o.conn && o.info.state.empty()) {
        o.info.state = "connecting";
        o.nextAttemptMs = now_;
      }
      next.push_back(o);
    }
    std::vector<Conn*> drop;
    for (auto& old : out_) {
      if (old.conn) drop.push_back(old.conn);
    }
    out_ = std::move(next);
    for (size_t i = 0; i < out_.size(); i++) {
      if (out_[i].conn) out_[i].conn->slot = static_cast<int>(i);
    }
    for (Conn* c : drop) {
      c->slot = -1;  // no longer ours to redial
      Finish(c, EndReason::kCancelled, ECANCELED, "");
    }
    nextSessionCheckMs_ = 0;
    PublishSessions();
  }

  void StartSession(size_t i) {
    OutSession& o = out_[i];
    o.nextAttemptMs = 0;
    proxy_->RefreshTunnel(&tunnelVersion_, &creds_, &serve_);
    if (!creds_) {
      SetState(o, "no-credentials");
      o.nextAttemptMs = now_ + 1000;
      return;
    }
    Conn* c = new Conn();
    c->id = proxy_->NextId();
    c->kind = Kind::kSessionOut;
    c->phase = Phase::kConnecting;
    c->counted = false;
    c->slot = static_cast<int>(i);
    c->dial = o.relay;
    c->client = o.relay;
    c->creds = creds_;
    c->startNs = MonoNs();
    conns_.emplace(c->id, c);
    load_.fetch_add(1, std::memory_order_relaxed);
    o.conn = c;
    o.info.connects++;
    SetState(o, "connecting");
    const Opened op = OpenConnecting(c, o.relay, &c->ufd, 1);
    if (op.err != 0 && op.err != EINPROGRESS) {
      Finish(c, op.atConnect ? EndReason::kConnectFailed : EndReason::kError, op.err, op.call);
      return;
    }
    c->deadlineMs = MonoMs() + cfg_.connectTimeoutMs;
    ListMove(c, 1);
  }

  void SessionConnected(Conn* c) {
    // The relay is addressed by IP: any certificate of our CA will do (it learns our name from ours).
    c->ussl = c->creds->NewClient(c->ufd, "");
    if (!c->ussl) {
      Finish(c, EndReason::kError, ENOMEM, "SSL_new");
      return;
    }
    c->out = EncodeRegister();
    c->outOff = 0;
    c->phase = Phase::kHandshake;
    ListMove(c, 0);
    c->deadlineMs = MonoMs() + cfg_.handshakeTimeoutMs;
    ListMove(c, 3);
    if (c->slot >= 0) SetState(out_[c->slot], "handshake");
    DriveSessionOut(c);
  }

  void DriveSessionOut(Conn* c) {
    if (c->phase == Phase::kHandshake) {
      int h = HandshakeStep(c->ussl, &c->tlsFail);
      if (h <= 0) {
        if (h < 0) Finish(c, EndReason::kRefused, ECONNABORTED, "SSL_connect");
        return;
      }
      c->peer = PeerName(c->ussl);
      c->phase = Phase::kRequest;
    }
    if (c->phase == Phase::kRequest) {
      if (!FlushSession(c)) return;
      if (c->outOff < c->out.size()) return;
      c->out.clear();
      c->outOff = 0;
      c->phase = Phase::kResponse;
    }
    if (c->phase == Phase::kResponse) {
      while (c->hdrLen < kResponseSize) {
        ssize_t n = SslReadSome(c->ussl, reinterpret_cast<char*>(c->hdr + c->hdrLen), kResponseSize - c->hdrLen);
        if (n > 0) {
          c->hdrLen += static_cast<size_t>(n);
          continue;
        }
        if (n < 0 && errno == EAGAIN) return;
        c->tlsFail = TlsFail::kClosed;  // TLS 1.3: a refused certificate shows up here
        Finish(c, EndReason::kRefused, n == 0 ? ECONNRESET : errno, "SSL_read");
        return;
      }
      TunnelStatus st = TunnelStatus::kBadRequest;
      if (DecodeResponse(c->hdr, c->hdrLen, &st) < 0) st = TunnelStatus::kBadRequest;
      c->hdrLen = 0;
      if (st != TunnelStatus::kOk) {
        c->tunnelStatus = st;
        Finish(c, EndReason::kRefused, ECONNREFUSED, "register");
        return;
      }
      c->phase = Phase::kSessionUp;
      ListMove(c, 0);
      c->lastRxMs = c->lastTxMs = now_;
      sessions_.push_back(c);
      if (c->slot >= 0) {
        OutSession& o = out_[c->slot];
        o.backoffMs = 0;
        o.info.relayNode = c->peer;
        SetState(o, "registered");
      }
    }
    if (c->phase == Phase::kSessionUp) DriveSession(c);
  }

  // The relay side of a REGISTER: this TLS connection becomes the node's session.
  void RegisterIn(Conn* c) {
    uint8_t resp[kResponseSize];
    EncodeResponse(TunnelStatus::kOk, resp);
    if (SslWriteSome(c->cssl, reinterpret_cast<const char*>(resp), sizeof resp) != static_cast<ssize_t>(sizeof resp)) {
      Fail(c, errno == EAGAIN ? ENOBUFS : errno, "SSL_write");
      return;
    }
    c->kind = Kind::kSessionIn;
    c->phase = Phase::kSessionUp;
    c->hdrLen = 0;  // the request is consumed; frames follow
    ListMove(c, 0);
    // A session is not a proxied connection: it leaves the connection limit's count.
    if (c->counted) {
      c->counted = false;
      proxy_->counters().active.fetch_sub(1, std::memory_order_relaxed);
    }
    c->lastRxMs = c->lastTxMs = now_;
    sessions_.push_back(c);
    proxy_->Register(c->peer, this, c->id, c->client.ToString());
    DriveSession(c);
  }

  // Keepalive and redial, at most 4 times a second.
  void RunSessions() {
    if (now_ < nextSessionCheckMs_) return;
    nextSessionCheckMs_ = now_ + 250;
    std::vector<Conn*> dead;
    for (Conn* s : sessions_) {
      if (now_ - s->lastRxMs >= static_cast<int64_t>(cfg_.keepaliveDeadMs)) dead.push_back(s);
      else if (now_ - s->lastTxMs >= static_cast<int64_t>(cfg_.keepaliveMs)) QueueFrame(s, std::string(1, static_cast<char>(kFramePing)));
    }
    for (Conn* s : dead) Finish(s, EndReason::kIdleTimeout, ETIMEDOUT, "keepalive");
    for (size_t i = 0; i < out_.size(); i++) {
      if (!out_[i].conn && out_[i].nextAttemptMs > 0 && out_[i].nextAttemptMs <= now_) StartSession(i);
    }
  }

  // A session of ours ended: redial after a capped, jittered backoff.
  void SessionEnded(Conn* c, const std::string& why) {
    if (c->slot < 0 || static_cast<size_t>(c->slot) >= out_.size() || out_[c->slot].conn != c) return;
    OutSession& o = out_[c->slot];
    o.conn = nullptr;
    o.info.failures++;
    o.backoffMs = o.backoffMs == 0 ? 250 : std::min<int64_t>(o.backoffMs * 2, cfg_.reconnectMaxMs);
    int64_t jitter = std::uniform_int_distribution<int64_t>(0, o.backoffMs / 2)(rng_);
    o.nextAttemptMs = now_ + o.backoffMs + jitter;
    SetState(o, "backoff", why);
  }

  void ReleasePending(Conn* c) {
    if (!c->pendingSlot) return;
    c->pendingSlot = false;
    proxy_->counters().tPending.fetch_sub(1, std::memory_order_relaxed);
  }

  // One step of a non-blocking TLS handshake: 1 done, 0 waiting for the socket, -1 failed
  // (*why says how).
  static int HandshakeStep(SSL* ssl, TlsFail* why) {
    int r = SSL_do_handshake(ssl);
    if (r == 1) return 1;
    int e = SSL_get_error(ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      ClearTlsErrors();
      return 0;
    }
    std::string detail;
    *why = ClassifyHandshakeFailure(ssl, e, &detail);
    return -1;
  }

  // Advances an inbound tunnel connection through its handshake and request.
  void DriveIn(Conn* c) {
    auto& k = proxy_->counters();
    if (c->phase == Phase::kHandshake) {
      TlsFail why = TlsFail::kNone;
      int h = HandshakeStep(c->cssl, &why);
      if (h <= 0) {
        if (h < 0) TunnelFailed(c, why, TunnelStatus::kOk, ECONNABORTED);
        return;
      }
      c->peer = PeerName(c->cssl);
      c->resumed = SSL_session_reused(c->cssl) == 1;
      if (c->resumed) k.tResumed.fetch_add(1, std::memory_order_relaxed);
      c->phase = Phase::kRequest;
      // The peer is authenticated: its slot no longer counts as pending.
      ReleasePending(c);
    }
    if (c->phase != Phase::kRequest) return;
    for (;;) {
      TunnelRequest req;
      // Decoded after every read: a stream that is not a request is refused at its first bytes.
      int got = c->hdrLen > 0 ? DecodeRequest(c->hdr, c->hdrLen, &req) : 0;
      size_t need = RequestSizeSoFar(c->hdr, c->hdrLen);
      // The codec never asks for more than kMaxRequestSize; should it, the request is bad
      // rather than read past hdr.
      if (got == 0 && need > sizeof c->hdr) got = -1;
      if (got == 0 && need > c->hdrLen) {
        ssize_t n = SslReadSome(c->cssl, reinterpret_cast<char*>(c->hdr + c->hdrLen), need - c->hdrLen);
        if (n > 0) {
          c->hdrLen += static_cast<size_t>(n);
          continue;
        }
        if (n < 0 && errno == EAGAIN) return;
        Fail(c, n == 0 ? ECONNRESET : errno, "SSL_read");
        return;
      }
      if (got == 0) got = -1;  // complete by its lengths, yet not decodable
      if (got > 0 && req.type == RequestType::kRegister) {
        // Only on a connection the node dialled itself (not a data connection for a join).
        if (c->phase == Phase::kRequest && c->dial.family() == 0) RegisterIn(c);
        else RefuseIn(c, TunnelStatus::kBadRequest);
        return;
      }
      TunnelStatus st = got < 0 ? TunnelStatus::kBadRequest : serve_ ? serve_->Check(req) : TunnelStatus::kNoService;
      if (got > 0) c->inService = req.service + ':' + std::to_string(req.servicePort);
      if (st != TunnelStatus::kOk) {
        RefuseIn(c, st);
        return;
      }
      c->inEp.reset(new RouteEndpoint());
      c->inEp->addr = req.endpoint;
      c->inEp->text = req.endpoint.ToString();
      c->inEp->path = EndpointPath::kLocal;
      c->phase = Phase::kConnecting;
      ListMove(c, 0);
      StartConnect(c);
      return;
    }
  }

  // Answers an inbound request with a refusal (best effort: the socket has room for 5 bytes
  // plus close_notify on a fresh connection) and ends it.
  void RefuseIn(Conn* c, TunnelStatus st) {
    if (!c->cssl) {  // never reached TLS: nothing to answer through
      Finish(c, EndReason::kRefused, 0, "", Refusal::kTunnelRequest);
      return;
    }
    auto& k = proxy_->counters();
    k.tInRefused[static_cast<int>(st)].fetch_add(1, std::memory_order_relaxed);
    c->tunnelStatus = st;
    proxy_->RecordPeer(c->peer, "in", c->client.ToString(), std::string("refused:") + TunnelStatusName(st), PeerResult::kRefused,
                       c->resumed);
    uint8_t resp[kResponseSize];
    EncodeResponse(st, resp);
    SslWriteSome(c->cssl, reinterpret_cast<const char*>(resp), sizeof resp);
    SSL_shutdown(c->cssl);
    ClearTlsErrors();
    Finish(c, EndReason::kRefused, 0, "", Refusal::kTunnelRequest);
  }

  // A tunnel connection that did not get as far as relaying: the handshake failed or timed
  // out, or the peer refused the request. Dialling: counted per peer, then the next endpoint.
  // Inbound: counted and ended.
  void TunnelFailed(Conn* c, TlsFail why, TunnelStatus refused, int err) {
    auto& k = proxy_->counters();
    switch (c->kind) {
      case Kind::kPlainIn:  // a header that never completed
        k.rJoinsRefused[static_cast<int>(TunnelStatus::kTimeout)].fetch_add(1, std::memory_order_relaxed);
        Finish(c, EndReason::kRefused, err, "relay", Refusal::kTunnelRequest);
        return;
      case Kind::kJoin: {  // the node did not open its data connection in time
        Worker* w;
        uint64_t id;
        proxy_->TakeJoin(c->token, &w, &id);
        JoinRefuse(c, TunnelStatus::kTimeout);
        return;
      }
      case Kind::kSessionOut:
      case Kind::kSessionIn:
        c->tlsFail = why;
        Finish(c, EndReason::kRefused, err, "session");
        return;
      default: break;
    }
    if (c->kind == Kind::kTunnelIn) {
      if (why == TlsFail::kTimeout && c->phase == Phase::kRequest) {
        RefuseIn(c, TunnelStatus::kBadRequest);  // authenticated, but no complete request in time
        return;
      }
      // Before or during the handshake (kSniff: not a byte yet; no SSL exists there).
      k.tInTlsFail[static_cast<int>(why)].fetch_add(1, std::memory_order_relaxed);
      c->tlsFail = why;
      Finish(c, EndReason::kRefused, err, "SSL_accept", Refusal::kTunnelHandshake);
      return;
    }
    const RouteEndpoint& ep = Ep(c);
    std::string result;
    if (refused != TunnelStatus::kOk) {
      k.tDialRefused[static_cast<int>(refused)].fetch_add(1, std::memory_order_relaxed);
      result = std::string("refused:") + TunnelStatusName(refused);
    } else {
      k.tDialTlsFail[static_cast<int>(why)].fetch_add(1, std::memory_order_relaxed);
      result = TlsFailName(why);
      // A failed handshake may have come from a stale session: the next one starts afresh.
      if (c->creds) c->creds->Forget(ep.node);
    }
    proxy_->RecordPeer(ep.node, "out", DialAddr(c).ToString(), result,
                       refused != TunnelStatus::kOk ? PeerResult::kRefused : PeerResult::kHandshakeFailed, false);
    c->tlsFail = why;
    c->tunnelStatus = refused;
    ConnectFailed(c, err, refused != TunnelStatus::kOk ? "tunnel" : "SSL_connect");
  }

  // Frees the upstream side of an attempt (SSL first: it refers to the fd).
  void DropUpstream(Conn* c) {
    if (c->ussl) {
      SSL_free(c->ussl);
      c->ussl = nullptr;
    }
    CloseFd(&c->ufd);  // closing removes it from the epoll set
    c->hdrLen = 0;
    c->out.clear();
    c->outOff = 0;
  }

  void StartConnect(Conn* c) {
    const RouteEndpoint& ep = Ep(c);
    if (c->kind == Kind::kService) c->tried[c->epIndex] = true;
    c->attempts++;
    c->phase = Phase::kConnecting;
    c->connecting = true;
    bool viaTunnel = ep.path == EndpointPath::kTunnel || ep.path == EndpointPath::kRelay;
    if (viaTunnel && !creds_) {
      // No credentials (yet): this endpoint has no path; try the next one.
      c->tlsFail = TlsFail::kProtocol;
      ConnectFailed(c, EHOSTUNREACH, "tunnel");
      return;
    }
    if (ep.path == EndpointPath::kRelay && c->relayTries == 0) {
      // First through the relay that last joined us to this node.
      c->relayIdx = proxy_->PreferredRelay(ep.node) % ep.relays.size();
      c->relayTries = 1;
    }
    const SockAddr& to = c->kind == Kind::kService ? DialAddr(c) : ep.addr;
    if (viaTunnel) proxy_->counters().tDialed.fetch_add(1, std::memory_order_relaxed);
    const Opened o = OpenConnecting(c, to, &c->ufd, 1);
    if (o.err == 0) {
      Connected(c, true);
      return;
    }
    if (o.err != EINPROGRESS) {
      if (o.atConnect) ConnectFailed(c, o.err, o.call);
      else Finish(c, EndReason::kError, o.err, o.call);
      return;
    }
    c->deadlineMs = MonoMs() + cfg_.connectTimeoutMs;
    ListMove(c, 1);
  }

  // What OpenConnecting did: err 0 (connected at once), EINPROGRESS (under way), or the errno of
  // the step named by `call`; atConnect: that step was connect() itself.
  struct Opened {
    int err = 0;
    const char* call = "";
    bool atConnect = false;
  };

  // A non-blocking TCP socket toward `to`, owned by the connection from the moment it exists
  // (*slot: Finish closes it), in the epoll set (`tag` 1 marks the upstream side) and connecting.
  Opened OpenConnecting(Conn* c, const SockAddr& to, int* slot, uint64_t tag) {
    const int fd = socket(to.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return {errno, "socket", false};
    *slot = fd;
    SetNoDelay(fd);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = reinterpret_cast<uint64_t>(c) | tag;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) return {errno, "epoll_ctl", false};
    if (connect(fd, reinterpret_cast<const sockaddr*>(&to.ss), to.len) == 0) return {};
    return {errno, "connect", true};
  }

  void ConnectFailed(Conn* c, int err, const char* call) {
    ListMove(c, 0);
    if (c->kind == Kind::kTunnelIn && c->phase == Phase::kDataConnecting) {
      // Our data connection to a relay did not get through: the dialler's join times out there.
      proxy_->counters().dataConnsFailed.fetch_add(1, std::memory_order_relaxed);
      Finish(c, EndReason::kConnectFailed, err, call);
      return;
    }
    if (c->kind == Kind::kSessionOut) {
      Finish(c, EndReason::kConnectFailed, err, call);
      return;
    }
    proxy_->counters().connectFailures.fetch_add(1, std::memory_order_relaxed);
    EndpointPath path = c->kind == Kind::kService ? Ep(c).path : EndpointPath::kLocal;
    bool tunnelAttempt = path == EndpointPath::kTunnel || path == EndpointPath::kRelay;
    if (tunnelAttempt && c->tlsFail == TlsFail::kNone && c->tunnelStatus == TunnelStatus::kOk && std::strcmp(call, "connect") == 0) {
      // The peer agent's (or relay's) listener did not answer: as much a fact about the peer as a handshake.
      const RouteEndpoint& ep = Ep(c);
      proxy_->counters().tDialConnectFailed.fetch_add(1, std::memory_order_relaxed);
      proxy_->RecordPeer(ep.node, "out", DialAddr(c).ToString(), ErrnoName(err), PeerResult::kConnectFailed, false);
    }
    DropUpstream(c);
    if (path == EndpointPath::kRelay && c->relayTries < Ep(c).relays.size()) {
      // The same endpoint through the next relay (not a failover to another endpoint).
      c->relayIdx = (c->relayIdx + 1) % Ep(c).relays.size();
      c->relayTries++;
      c->attempts--;
      c->tlsFail = TlsFail::kNone;
      c->tunnelStatus = TunnelStatus::kOk;
      StartConnect(c);
      return;
    }
    if (c->kind == Kind::kTunnelIn) {
      // One endpoint, named by the peer: tell it, and end.
      auto& k = proxy_->counters();
      k.tInRefused[static_cast<int>(TunnelStatus::kEndpointFailed)].fetch_add(1, std::memory_order_relaxed);
      c->tunnelStatus = TunnelStatus::kEndpointFailed;
      proxy_->RecordPeer(c->peer, "in", c->client.ToString(), "refused:endpoint-failed", PeerResult::kRefused, c->resumed);
      uint8_t resp[kResponseSize];
      EncodeResponse(TunnelStatus::kEndpointFailed, resp);
      SslWriteSome(c->cssl, reinterpret_cast<const char*>(resp), sizeof resp);
      SSL_shutdown(c->cssl);
      ClearTlsErrors();
      Finish(c, EndReason::kConnectFailed, err, call);
      return;
    }
    const RouteEntry& r = *c->route;
    size_t n = r.endpoints.size();
    uint32_t bound = std::min<uint32_t>(cfg_.maxConnectAttempts, static_cast<uint32_t>(n));
    if (Retryable(err) && c->attempts < bound) {
      for (size_t step = 1; step <= n; step++) {
        size_t i = (c->epIndex + step) % n;
        if (!c->tried[i]) {
          c->epIndex = i;
          c->relayTries = 0;
          c->failovers++;
          c->tlsFail = TlsFail::kNone;
          c->tunnelStatus = TunnelStatus::kOk;
          proxy_->counters().failovers.fetch_add(1, std::memory_order_relaxed);
          StartConnect(c);
          return;
        }
      }
    }
    Finish(c, EndReason::kConnectFailed, err, call);
  }

  // `readable`: the event that said "connected" also said the endpoint sent something. If not,
  // its EPOLLIN edge is still to come (the fd is registered edge-triggered since before the
  // connect), so no read is tried in vain.
  void Connected(Conn* c, bool readable) {
    c->uWr = true;
    c->uRd = readable;
    if (c->kind == Kind::kService && Ep(c).path == EndpointPath::kTunnel) {
      StartTunnel(c);
      return;
    }
    if (c->kind == Kind::kService && Ep(c).path == EndpointPath::kRelay) {
      StartJoinOut(c);
      return;
    }
    if (c->kind == Kind::kTunnelIn) {
      // Tell the peer its endpoint answered; then both ways are plain relaying.
      uint8_t resp[kResponseSize];
      EncodeResponse(TunnelStatus::kOk, resp);
      if (SslWriteSome(c->cssl, reinterpret_cast<const char*>(resp), sizeof resp) != static_cast<ssize_t>(sizeof resp)) {
        Fail(c, errno == EAGAIN ? ENOBUFS : errno, "SSL_write");
        return;
      }
      proxy_->counters().tInOk.fetch_add(1, std::memory_order_relaxed);
      proxy_->RecordPeer(c->peer, "in", c->client.ToString(), "ok", PeerResult::kOk, c->resumed);
    }
    StartRelay(c);
  }

  // Connected to a relay: ask it, in the clear, to join us to the endpoint's node; then TLS with
  // that node through it, exactly as over a direct tunnel.
  void StartJoinOut(Conn* c) {
    c->out = EncodeJoin(Ep(c).node);
    c->outOff = 0;
    c->hdrLen = 0;
    c->phase = Phase::kJoinOut;
    c->deadlineMs = MonoMs() + cfg_.handshakeTimeoutMs;
    ListMove(c, 3);
    DriveJoinOut(c);
  }

  void DriveJoinOut(Conn* c) {
    while (c->outOff < c->out.size()) {
      ssize_t n = send(c->ufd, c->out.data() + c->outOff, c->out.size() - c->outOff, MSG_NOSIGNAL);
      if (n > 0) {
        c->outOff += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n < 0 && errno == EINTR) continue;
      TunnelFailed(c, TlsFail::kNone, TunnelStatus::kOk, n < 0 ? errno : EIO);
      return;
    }
    while (c->hdrLen < kResponseSize) {
      ssize_t n = recv(c->ufd, c->hdr + c->hdrLen, kResponseSize - c->hdrLen, 0);
      if (n > 0) {
        c->hdrLen += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) return;
      if (n < 0 && errno == EINTR) continue;
      TunnelFailed(c, TlsFail::kNone, TunnelStatus::kOk, n == 0 ? ECONNRESET : errno);
      return;
    }
    TunnelStatus st = TunnelStatus::kBadRequest;
    if (DecodeJoinResponse(c->hdr, c->hdrLen, &st) < 0) st = TunnelStatus::kBadRequest;
    auto& k = proxy_->counters();
    if (st != TunnelStatus::kOk) {
      k.dJoinRefused[static_cast<int>(st)].fetch_add(1, std::memory_order_relaxed);
      TunnelFailed(c, TlsFail::kNone, st, ECONNREFUSED);
      return;
    }
    k.dJoinOk.fetch_add(1, std::memory_order_relaxed);
    proxy_->PreferRelay(Ep(c).node, c->relayIdx);
    c->out.clear();
    c->outOff = 0;
    c->hdrLen = 0;
    ListMove(c, 0);
    StartTunnel(c);
  }

  // Connected to the peer agent's tunnel listener: TLS, as a client that accepts only the
  // certificate of the endpoint's node.
  void StartTunnel(Conn* c) {
    const RouteEndpoint& ep = Ep(c);
    c->creds = creds_;
    c->ussl = c->creds->NewClient(c->ufd, ep.node);
    if (!c->ussl) {
      Finish(c, EndReason::kError, ENOMEM, "SSL_new");
      return;
    }
    TunnelRequest req;
    req.service = c->route->serviceName;
    req.servicePort = c->route->servicePort;
    req.endpoint = ep.addr;
    if (!EncodeRequest(req, &c->out)) {
      Finish(c, EndReason::kError, EINVAL, "tunnel");
      return;
    }
    c->phase = Phase::kHandshake;
    c->deadlineMs = MonoMs() + cfg_.handshakeTimeoutMs;
    ListMove(c, 3);
    DriveOut(c);
  }

  // Advances a dialled tunnel connection: handshake, request, response.
  void DriveOut(Conn* c) {
    auto& k = proxy_->counters();
    if (c->phase == Phase::kHandshake) {
      TlsFail why = TlsFail::kNone;
      int h = HandshakeStep(c->ussl, &why);
      if (h <= 0) {
        if (h < 0) TunnelFailed(c, why, TunnelStatus::kOk, ECONNABORTED);
        return;
      }
      c->peer = Ep(c).node;
      c->resumed = SSL_session_reused(c->ussl) == 1;
      if (c->resumed) k.tResumed.fetch_add(1, std::memory_order_relaxed);
      c->phase = Phase::kRequest;
    }
    if (c->phase == Phase::kRequest) {
      while (c->outOff < c->out.size()) {
        ssize_t n = SslWriteSome(c->ussl, c->out.data() + c->outOff, c->out.size() - c->outOff);
        if (n > 0) {
          c->outOff += static_cast<size_t>(n);
          continue;
        }
        if (errno == EAGAIN) return;
        TunnelFailed(c, TlsFail::kClosed, TunnelStatus::kOk, errno);
        return;
      }
      c->phase = Phase::kResponse;
    }
    if (c->phase != Phase::kResponse) return;
    while (c->hdrLen < kResponseSize) {
      ssize_t n = SslReadSome(c->ussl, reinterpret_cast<char*>(c->hdr + c->hdrLen), kResponseSize - c->hdrLen);
      if (n > 0) {
        c->hdrLen += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EAGAIN) return;
      // The peer closed before answering: an agent that could not serve (or a TLS alert
      // about our certificate, which TLS 1.3 delivers after the client's handshake is done).
      TunnelFailed(c, TlsFail::kClosed, TunnelStatus::kOk, n == 0 ? ECONNRESET : errno);
      return;
    }
    TunnelStatus st = TunnelStatus::kBadRequest;
    if (DecodeResponse(c->hdr, c->hdrLen, &st) < 0) st = TunnelStatus::kBadRequest;
    if (st != TunnelStatus::kOk) {
      TunnelFailed(c, TlsFail::kNone, st, ECONNREFUSED);
      return;
    }
    k.tDialOk.fetch_add(1, std::memory_order_relaxed);
    const RouteEndpoint& ep = Ep(c);
    proxy_->RecordPeer(ep.node, "out", DialAddr(c).ToString(), "ok", PeerResult::kOk, c->resumed);
    c->uRd = true;  // the SSL may hold bytes that came with the response
    StartRelay(c);
  }

  void StartRelay(Conn* c) {
    c->phase = Phase::kRelay;
    c->connecting = false;
    ReleasePending(c);
    ListMove(c, cfg_.idleTimeoutMs > 0 ? 2 : 0);
    c->lastActiveMs = now_;
    if (c->kind == Kind::kService) {
      const RouteEntry& r = *c->route;
      if (r.clientIpAffinity) proxy_->AffinityRecord(r, c->client, now_, r.endpoints[c->epIndex].text);
    }
    proxy_->counters().relayed.fetch_add(1, std::memory_order_relaxed);
    // Up: client side -> upstream side. A TLS end is read through its SSL; written through it
    // too unless the kernel took its sending side (kTLS), where splice works as for plain TCP.
    c->up.rssl = c->cssl;
    c->down.rssl = c->ussl;
    c->up.wssl = c->ussl;
    c->down.wssl = c->cssl;
    bool ktlsU = c->ussl && KtlsSendActive(c->ussl), ktlsC = c->cssl && KtlsSendActive(c->cssl);
    c->up.sslWrite = c->ussl && !ktlsU;
    c->down.sslWrite = c->cssl && !ktlsC;
    c->ktls = ktlsU || ktlsC;
    if (c->ktls) proxy_->counters().tKtls.fetch_add(1, std::memory_order_relaxed);
    bool splice = cfg_.mode == RelayMode::kSplice;
    if (!SetupDir(&c->up, splice) || !SetupDir(&c->down, splice)) {
      Finish(c, EndReason::kError, ENOMEM, "malloc");
      return;
    }
    Pump(c);
  }

  void ListMove(Conn* c, int list) {
    if (c->list == 1) connecting_.Remove(c);
    if (c->list == 2) idle_.Remove(c);
    if (c->list == 3) handshaking_.Remove(c);
    c->list = list;
    if (list == 1) connecting_.PushBack(c);
    if (list == 2) idle_.PushBack(c);
    if (list == 3) handshaking_.PushBack(c);
  }

  // ---------------------------------------------------------------- pipes

  static void ClosePipe(Pipe* p) {
    CloseFd(&p->r);
    CloseFd(&p->w);
    p->cap = 0;
  }

  bool GetPipe(Pipe* out) {
    auto& k = proxy_->counters();
    if (!pool_.empty()) {
      *out = pool_.back();  // the most recently used: likely still warm
      pool_.pop_back();
      k.pipesReused.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    int fds[2];
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) return false;
    out->r = fds[0];
    out->w = fds[1];
    // Ask for a large pipe (as Go's splice pool does); over the user's limit the kernel says
    // EPERM and the default stays: still correct, just more syscalls per byte.
    fcntl(out->w, F_SETPIPE_SZ, static_cast<int>(cfg_.pipeSize));
    int got = fcntl(out->w, F_GETPIPE_SZ);
    out->cap = got > 0 ? static_cast<size_t>(got) : 65536;
    k.pipesCreated.fetch_add(1, std::memory_order_relaxed);
    k.pipeSize.store(static_cast<uint32_t>(out->cap), std::memory_order_relaxed);
    return true;
  }

  // Only an empty pipe is reused: leftover bytes would leak into the next connection.
  void PutPipe(Pipe* p, bool empty) {
    if (p->r < 0) return;
    if (empty && pool_.size() < cfg_.pipePoolMax) {
      p->idleSinceMs = now_;
      pool_.push_back(*p);
      *p = Pipe{};
    } else {
      ClosePipe(p);
    }
  }

  // Splice takes a pipe from the pool only while bytes are in flight (PumpDir): an idle
  // connection holds its two sockets and nothing else, as HAProxy and Go's poll do.
  // A direction with a TLS end in user space reads and writes through a buffer (larger than
  // the plain copy path's: whole records, few calls).
  bool SetupDir(Dir* d, bool splice) {
    bool tls = d->rssl || d->sslWrite;
    if (splice && !tls) return true;
    d->copy = true;
    d->bufSize = tls ? cfg_.tlsBufferSize : cfg_.copyBufferSize;
    d->buf.reset(new (std::nothrow) char[d->bufSize]);
    return d->buf != nullptr;
  }

  // ---------------------------------------------------------------- relay

  // A non-blocking connect finished (or not): 1 connected, 0 not yet, -1 failed with *err.
  static int ConnectResult(int fd, uint32_t events, int* err) {
    if (!(events & (EPOLLOUT | EPOLLERR | EPOLLHUP))) return 0;
    *err = 0;
    if (events & (EPOLLERR | EPOLLHUP)) {
      socklen_t len = sizeof *err;
      if (getsockopt(fd, SOL_SOCKET, SO_ERROR, err, &len) != 0) *err = errno;
      if (*err == 0) *err = ECONNREFUSED;
      return -1;
    }
    return 1;
  }

  void OnConnEvent(Conn* c, bool upstream, uint32_t events) {
    if (upstream) {
      if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->uRd = true;
      if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) c->uWr = true;
      // An SSL_read may have been waiting for room to write (a TLS alert or key update).
      if (c->ussl && (events & EPOLLOUT)) c->uRd = true;
    } else {
      if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->cRd = true;
      if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) c->cWr = true;
      if (c->cssl && (events & EPOLLOUT)) c->cRd = true;
    }
    if (c->phase != Phase::kRelay) {
      OnSetupEvent(c, upstream, events);
      return;
    }
    if (events & EPOLLERR) {
      // A pending socket error (a RST) may not surface through the direction still running.
      int err = 0;
      socklen_t len = sizeof err;
      getsockopt(upstream ? c->ufd : c->cfd, SOL_SOCKET, SO_ERROR, &err, &len);
      if (err != 0) {
        Fail(c, err, "getsockopt");
        return;
      }
    }
    Pump(c);
  }

  // Everything before relaying: connects, handshakes, requests, joins, sessions.
  void OnSetupEvent(Conn* c, bool upstream, uint32_t events) {
    int err = 0;
    if (upstream) {
      if (c->phase == Phase::kConnecting) {
        int r = ConnectResult(c->ufd, events, &err);
        if (r < 0) ConnectFailed(c, err, "connect");
        else if (r > 0 && c->kind == Kind::kSessionOut) SessionConnected(c);
        else if (r > 0) Connected(c, (events & (EPOLLIN | EPOLLRDHUP)) != 0);
        return;
      }
      if (c->kind == Kind::kSessionOut) {
        if (c->phase == Phase::kSessionUp) DriveSession(c);
        else DriveSessionOut(c);
      } else if (c->phase == Phase::kJoinOut) {
        DriveJoinOut(c);
      } else {
        DriveOut(c);  // handshake, request, response: the SSL reports errors itself
      }
      return;
    }
    switch (c->phase) {
      case Phase::kDataConnecting: {
        int r = ConnectResult(c->cfd, events, &err);
        if (r < 0) ConnectFailed(c, err, "connect");
        else if (r > 0) DataConnected(c);
        return;
      }
      case Phase::kSniff: Sniff(c); return;
      case Phase::kPlainHeader: DrivePlain(c); return;
      case Phase::kSessionUp: DriveSession(c); return;
      case Phase::kHandshake:
      case Phase::kRequest:
        if (c->kind == Kind::kTunnelIn) {
          DriveIn(c);  // inbound tunnel connections read their client side before relaying
          return;
        }
        break;
      default: break;
    }
    // Waiting for the other side (a connect, a join): only an error or a hangup matters here.
    if (events & (EPOLLERR | EPOLLHUP | EPOLLRDHUP)) {
      int e = 0;
      socklen_t len = sizeof e;
      getsockopt(c->cfd, SOL_SOCKET, SO_ERROR, &e, &len);
      if (c->kind == Kind::kJoin) {
        Worker* w;
        uint64_t id;
        proxy_->TakeJoin(c->token, &w, &id);  // the dialler gave up: no pairing for it
      }
      if ((events & EPOLLERR) || c->kind == Kind::kJoin) Finish(c, EndReason::kReset, e ? e : ECONNRESET, "getsockopt");
    }
  }

  void Pump(Conn* c) {
    if (!PumpDir(c, &c->up, c->cfd, c->ufd, &c->cRd, &c->uWr)) return;
    if (!PumpDir(c, &c->down, c->ufd, c->cfd, &c->uRd, &c->cWr)) return;
    if (c->up.shut && c->down.shut) Finish(c, EndReason::kEof, 0, "");
  }

  void RunAgain() {
    if (again_.empty()) return;
    std::vector<Conn*> list;
    list.swap(again_);
    for (Conn* c : list) {
      c->queued = false;
      if (!c->dead) Pump(c);
    }
  }

  void Touch(Conn* c) {
    if (c->lastActiveMs == now_) return;
    c->lastActiveMs = now_;
    if (c->list == 2) {
      idle_.Remove(c);
      idle_.PushBack(c);
    }
  }

  // Moves bytes src -> dst until one side would block. Returns false when the connection ended.
  bool PumpDir(Conn* c, Dir* d, int src, int dst, bool* srcRd, bool* dstWr) {
    auto& k = proxy_->counters();
    auto& total = d == &c->up ? k.bytesUp : k.bytesDown;
    // A fairness budget: one busy connection must not starve the others on this worker.
    size_t budget = std::max<size_t>(4 * (d->pipe.cap ? d->pipe.cap : d->copy ? d->bufSize : cfg_.copyBufferSize), 1u << 20);
    size_t moved = 0;
    for (;;) {
      if (d->pending > 0) {
        if (!*dstWr) return true;
        ssize_t n = d->sslWrite ? SslWriteSome(d->wssl, d->buf.get() + d->off, d->pending)
                    : d->copy   ? write(dst, d->buf.get() + d->off, d->pending)
                                : splice(d->pipe.r, nullptr, dst, nullptr, d->pending, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
          d->pending -= static_cast<size_t>(n);
          d->off += static_cast<size_t>(n);
          d->bytes += static_cast<uint64_t>(n);
          moved += static_cast<size_t>(n);
          total.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
          if (d->wssl) k.tBytesOut.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
          if (d->rssl) k.tBytesIn.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
          if (c->kind == Kind::kJoin) k.rBytes.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
          Touch(c);
          continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          *dstWr = false;
          return true;
        }
        if (n < 0 && errno == EINTR) continue;
        Fail(c, n < 0 ? errno : EIO, d->sslWrite ? "SSL_write" : d->copy ? "write" : "splice");
        return false;
      }
      if (d->eof) {
        if (!d->shut) {
          if (d->wssl) {
            // TLS 1.3 half-close: close_notify ends our sending side only; the peer agent
            // turns it into a FIN towards its endpoint and may go on sending.
            int r = SSL_shutdown(d->wssl);
            if (r < 0) {
              int e = SSL_get_error(d->wssl, r);
              int sys = errno;
              ClearTlsErrors();
              if (e == SSL_ERROR_WANT_WRITE || e == SSL_ERROR_WANT_READ) {
                *dstWr = false;
                return true;
              }
              Fail(c, e == SSL_ERROR_SYSCALL && sys != 0 ? sys : EPROTO, "SSL_shutdown");
              return false;
            }
          }
          d->shut = true;
          if (shutdown(dst, SHUT_WR) != 0 && errno != ENOTCONN) {
            Fail(c, errno, "shutdown");
            return false;
          }
        }
        return true;
      }
      if (!*srcRd) return true;
      if (moved >= budget) {
        if (!c->queued) {
          c->queued = true;
          again_.push_back(c);
        }
        return true;
      }
      if (!d->copy && d->pipe.r < 0 && !GetPipe(&d->pipe)) {
        Fail(c, errno, "pipe2");
        return false;
      }
      ssize_t n = d->rssl   ? SslFill(d->rssl, d->buf.get(), d->bufSize)
                  : d->copy ? read(src, d->buf.get(), d->bufSize)
                            : splice(src, nullptr, d->pipe.w, nullptr, d->pipe.cap, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
      if (n > 0) {
        d->pending = static_cast<size_t>(n);
        d->off = 0;
        continue;
      }
      if (n == 0) {
        d->eof = true;
        PutPipe(&d->pipe, true);  // empty here: nothing is pending
        continue;
      }
      int e = errno;
      if (e == EAGAIN || e == EWOULDBLOCK) {
        *srcRd = false;
        PutPipe(&d->pipe, true);  // drained: back to the pool until the source is readable again
        return true;
      }
      if (e == EINTR) continue;
      if (!d->copy && (e == EINVAL || e == ENOSYS || e == EOPNOTSUPP)) {
        // splice is not possible for this pair (not a real error): the pipe is empty here, so
        // switch this direction to read/write without losing a byte.
        PutPipe(&d->pipe, true);
        d->copy = true;
        d->bufSize = cfg_.copyBufferSize;
        d->buf.reset(new (std::nothrow) char[d->bufSize]);
        if (!d->buf) {
          Fail(c, ENOMEM, "malloc");
          return false;
        }
        k.spliceFallbacks.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      Fail(c, e, d->rssl ? "SSL_read" : d->copy ? "read" : "splice");
      return false;
    }
  }

  void Fail(Conn* c, int err, const char* call) {
    bool reset = err == ECONNRESET || err == EPIPE || err == ECONNABORTED;
    Finish(c, reset ? EndReason::kReset : EndReason::kError, err, call);
  }

  void Finish(Conn* c, EndReason reason, int err, const char* call, Refusal refusal = Refusal::kNone) {
    if (c->dead) return;
    c->dead = true;
    ListMove(c, 0);
    ReleasePending(c);
    if (c->kind == Kind::kSessionIn || c->kind == Kind::kSessionOut) {
      sessions_.erase(std::remove(sessions_.begin(), sessions_.end(), c), sessions_.end());
      if (c->kind == Kind::kSessionIn && c->phase == Phase::kSessionUp) proxy_->Unregister(c->peer, c->id);
      if (c->kind == Kind::kSessionOut) {
        std::string why = c->tlsFail != TlsFail::kNone           ? TlsFailName(c->tlsFail)
                          : c->tunnelStatus != TunnelStatus::kOk ? std::string("refused:") + TunnelStatusName(c->tunnelStatus)
                          : err != 0                             ? std::string(ErrnoName(err))
                                                                 : std::string("closed");
        SessionEnded(c, why);
      }
    }
    if (c->kind == Kind::kJoin && !c->token.empty()) {
      Worker* w;
      uint64_t id;
      proxy_->TakeJoin(c->token, &w, &id);
    }
    if (refusal != Refusal::kNone) proxy_->counters().refused[static_cast<int>(refusal)].fetch_add(1, std::memory_order_relaxed);
    conns_.erase(c->id);
    load_.fetch_sub(1, std::memory_order_relaxed);
    auto& k = proxy_->counters();
    // Anything but a clean end is passed on as a reset, so neither peer mistakes a truncated
    // stream for a complete one.
    if (reason != EndReason::kEof) {
      SetLingerZero(c->cfd);
      SetLingerZero(c->ufd);
    }
    // The SSLs refer to the fds (their BIOs never close them): free them first.
    if (c->cssl) SSL_free(c->cssl);
    if (c->ussl) SSL_free(c->ussl);
    c->cssl = c->ussl = nullptr;
    c->up.rssl = c->up.wssl = c->down.rssl = c->down.wssl = nullptr;
    ClearTlsErrors();
    CloseFd(&c->cfd);
    CloseFd(&c->ufd);
    PutPipe(&c->up.pipe, c->up.pending == 0);
    PutPipe(&c->down.pipe, c->down.pending == 0);
    c->up.buf.reset();
    c->down.buf.reset();
    if (c->counted) k.active.fetch_sub(1, std::memory_order_relaxed);
    dead_.push_back(c);
    // Sessions are not connections of anyone's: no end reason counted, no event.
    if (c->kind == Kind::kSessionIn || c->kind == Kind::kSessionOut) return;
    k.ended[static_cast<int>(reason)].fetch_add(1, std::memory_order_relaxed);
    if (cfg_.events == EventFilter::kNone || (cfg_.events == EventFilter::kFailures && reason == EndReason::kEof)) return;
    ConnEvent ev;
    ev.id = c->id;
    ev.client = c->client.ToString();
    if (c->kind == Kind::kService) ev.originalDst = c->odst.ToString();
    ev.service = ServiceText(c);
    ev.endpoint = EpText(c);
    ev.refusal = refusal;
    ev.path = PathText(c);
    ev.peer = c->peer;
    ev.tlsFail = c->tlsFail;
    ev.tunnelStatus = c->tunnelStatus;
    ev.resumed = c->resumed;
    ev.ktls = c->ktls;
    ev.bytesUp = c->up.bytes;
    ev.bytesDown = c->down.bytes;
    ev.durationMs = static_cast<double>(MonoNs() - c->startNs) / 1e6;
    ev.reason = reason;
    ev.err = err;
    if (call) ev.syscall = call;
    ev.failovers = c->failovers;
    ev.copied = c->up.copy || c->down.copy;
    events_.push_back(std::move(ev));
  }

  void CancelId(uint64_t id) {
    auto it = conns_.find(id);
    if (it != conns_.end()) Finish(it->second, EndReason::kCancelled, ECANCELED, "");
  }

  // Frees the connections ended in this round (an event later in the same epoll batch may
  // still name one) and hands the round's events to the sink in one batch.
  void Reap() {
    for (Conn* c : dead_) delete c;
    dead_.clear();
    if (!events_.empty()) {
      std::vector<ConnEvent> out;
      out.swap(events_);
      proxy_->Emit(std::move(out));
    }
  }

  Proxy* proxy_;
  const ProxyConfig& cfg_;
  const int index_;
  std::atomic<int> load_{0}, inbox_{0};
  std::mt19937_64 rng_;
  int ep_ = -1, wake_ = -1;
  std::thread thread_;
  std::mutex cmdMu_;
  std::vector<Cmd> cmds_;
  bool quit_ = false;
  bool listenArmed_ = false, tunnelArmed_ = false;
  bool acceptStopped_ = false;
  int64_t backoffMs_ = 0, backoffUntil_ = 0;
  int64_t now_ = MonoMs();
  uint64_t tableVersion_ = 0;
  std::shared_ptr<const RouteTable> table_;
  std::unordered_map<uint64_t, Conn*> conns_;
  ConnList connecting_, idle_, handshaking_;
  std::vector<Conn*> sessions_;  // sessions up (either end), for keepalive
  std::vector<OutSession> out_;  // worker 0: this node's relays
  int64_t nextSessionCheckMs_ = 0;
  uint64_t tunnelVersion_ = 0;
  std::shared_ptr<TlsCreds> creds_;
  std::shared_ptr<const LocalServeTable> serve_;
  std::vector<Conn*> again_, dead_;
  std::vector<ConnEvent> events_;
  std::deque<Pipe> pool_;
};

// ---------------------------------------------------------------- proxy

Proxy::Counters::Counters() {
  for (auto& r : refused) r.store(0);
  for (auto& e : ended) e.store(0);
  for (auto& v : tDialTlsFail) v.store(0);
  for (auto& v : tInTlsFail) v.store(0);
  for (auto& v : tDialRefused) v.store(0);
  for (auto& v : tInRefused) v.store(0);
  for (auto& v : rJoinsRefused) v.store(0);
  for (auto& v : dJoinRefused) v.store(0);
}

namespace {

// A listening TCP socket on `addr` (SO_REUSEADDR, v6-only for IPv6). Throws SysError.
int Listen(const SockAddr& addr, int backlog, SockAddr* bound) {
  int fd = socket(addr.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw SysError(errno, "socket", std::string("socket: ") + strerror(errno));
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // inherited by accepted sockets
  if (addr.family() == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&addr.ss), addr.len) != 0) {
    int e = errno;
    close(fd);
    throw SysError(e, "bind", "bind " + addr.ToString() + ": " + strerror(e));
  }
  if (listen(fd, backlog) != 0) {
    int e = errno;
    close(fd);
    throw SysError(e, "listen", std::string("listen: ") + strerror(e));
  }
  *bound = addr;
  bound->len = sizeof bound->ss;
  if (getsockname(fd, reinterpret_cast<sockaddr*>(&bound->ss), &bound->len) != 0) *bound = addr;
  return fd;
}

}  // namespace

Proxy::Proxy(const ProxyConfig& cfg, EventSink sink) : cfg_(cfg), sink_(std::move(sink)) {
  if (cfg_.threads < 1) cfg_.threads = 1;
  if (cfg_.threads > 64) cfg_.threads = 64;
  if (cfg_.maxConnectAttempts < 1) cfg_.maxConnectAttempts = 1;
  if (cfg_.copyBufferSize < 4096) cfg_.copyBufferSize = 4096;
  if (!ParseSockAddr(cfg_.address, cfg_.port, &local_)) {
    throw SysError(EINVAL, "inet_pton", "proxy address is not an IP address: " + cfg_.address, "EINVAL");
  }
  SockAddr tunnelWant;
  if (!cfg_.tunnelAddress.empty() && !ParseSockAddr(cfg_.tunnelAddress, cfg_.tunnelPort, &tunnelWant)) {
    throw SysError(EINVAL, "inet_pton", "tunnel address is not an IP address: " + cfg_.tunnelAddress, "EINVAL");
  }
  if (cfg_.handshakeTimeoutMs < 1) cfg_.handshakeTimeoutMs = 1;
  if (cfg_.tlsBufferSize < 16384) cfg_.tlsBufferSize = 16384;
  ktls_ = DetectKtls();
  int nsFd = -1;
  try {
    NetnsGuard guard(cfg_.netnsPath);
    if (!cfg_.netnsPath.empty()) {
      nsFd = open(cfg_.netnsPath.c_str(), O_RDONLY | O_CLOEXEC);
      if (nsFd < 0) throw SysError(errno, "open", "cannot open " + cfg_.netnsPath + ": " + strerror(errno));
    }
    SockAddr bound;
    listenFd_ = Listen(local_, cfg_.backlog, &bound);
    local_ = bound;
    if (tunnelWant.family() != 0) tunnelFd_ = Listen(tunnelWant, cfg_.backlog, &tunnelLocal_);
    for (int i = 0; i < cfg_.threads; i++) {
      workers_.emplace_back(new Worker(this, i));
      workers_.back()->Init();
    }
  } catch (...) {
    workers_.clear();
    CloseFd(&listenFd_);
    CloseFd(&tunnelFd_);
    CloseFd(&nsFd);
    throw;
  }
  // Every worker enters the namespace first thing; wait for all before closing the ns fd, and
  // fail the construction (nothing accepted yet) when one could not.
  StartLatch latch(static_cast<int>(workers_.size()));
  for (auto& w : workers_) w->Start(nsFd, &latch);
  bool ok = latch.Wait();
  CloseFd(&nsFd);
  if (!ok) {
    int e = latch.err;
    Shutdown();
    throw SysError(e, "setns", "cannot enter network namespace " + cfg_.netnsPath + ": " + strerror(e));
  }
}

Proxy::~Proxy() { Shutdown(); }

Worker* Proxy::PickWorker(Worker* self) {
  Worker* best = self;
  int bestLoad = self->Load();
  for (auto& w : workers_) {
    int l = w->Load();
    if (l < bestLoad) {
      best = w.get();
      bestLoad = l;
    }
  }
  return bestLoad + 1 < self->Load() ? best : self;
}

bool Proxy::RefreshTable(uint64_t* version, std::shared_ptr<const RouteTable>* out) {
  uint64_t v = tableVersion_.load(std::memory_order_acquire);
  if (v == *version) return false;
  std::lock_guard<std::mutex> g(tableMu_);
  *out = table_;
  *version = tableVersion_.load(std::memory_order_relaxed);
  return true;
}

void Proxy::SetRoutes(std::shared_ptr<const RouteTable> table) {
  {
    std::lock_guard<std::mutex> g(tableMu_);
    table_ = std::move(table);
    tableVersion_.fetch_add(1, std::memory_order_release);
  }
  std::lock_guard<std::mutex> g(affMu_);
  int64_t now = MonoMs();
  for (auto it = affinity_.begin(); it != affinity_.end();) {
    if (it->second.expiresMs <= now) it = affinity_.erase(it);
    else ++it;
  }
}

static std::string AffinityKey(const RouteEntry& r, const SockAddr& client) { return r.service + '|' + client.IpBytes(); }

bool Proxy::AffinityLookup(const RouteEntry& r, const SockAddr& client, int64_t nowMs, std::string* endpoint) {
  std::lock_guard<std::mutex> g(affMu_);
  auto it = affinity_.find(AffinityKey(r, client));
  if (it == affinity_.end()) return false;
  if (it->second.expiresMs <= nowMs) {
    affinity_.erase(it);
    return false;
  }
  *endpoint = it->second.endpoint;
  return true;
}

void Proxy::AffinityRecord(const RouteEntry& r, const SockAddr& client, int64_t nowMs, const std::string& endpoint) {
  std::lock_guard<std::mutex> g(affMu_);
  affinity_[AffinityKey(r, client)] = Affinity{endpoint, nowMs + static_cast<int64_t>(r.affinityTimeoutSec) * 1000};
  if (affinity_.size() >= affPurgeAt_) {
    for (auto it = affinity_.begin(); it != affinity_.end();) {
      if (it->second.expiresMs <= nowMs) it = affinity_.erase(it);
      else ++it;
    }
    affPurgeAt_ = std::max<size_t>(1024, affinity_.size() * 2);
  }
}

namespace {

// A round trip to every worker: each runs a command on its own thread and checks in. State is
// shared so that a caller that gave up waiting (a worker that died would be a bug) leaves
// nothing dangling on its stack.
struct RoundTrip {
  std::mutex m;
  std::condition_variable cv;
  size_t acks = 0;
  std::vector<ConnInfo> conns;
  void Ack() {
    std::lock_guard<std::mutex> g(m);
    acks++;
    cv.notify_all();
  }
  bool Wait(size_t n) {
    std::unique_lock<std::mutex> lk(m);
    return cv.wait_for(lk, std::chrono::seconds(5), [&] { return acks == n; });
  }
};

}  // namespace

void Proxy::StopAccepting() {
  std::lock_guard<std::mutex> life(lifeMu_);
  if (!accepting_ || stopped_) return;
  accepting_ = false;
  auto rt = std::make_shared<RoundTrip>();
  for (auto& w : workers_) w->PostStopAccept([rt] { rt->Ack(); });
  if (!rt->Wait(workers_.size())) std::fprintf(stderr, "edgemesh relay: a worker did not stop accepting within 5 s\n");
  // No worker touches the listeners any more: close them (new connections are refused at once).
  CloseFd(&listenFd_);
  CloseFd(&tunnelFd_);
}

void Proxy::Cancel(uint64_t id) {
  std::lock_guard<std::mutex> life(lifeMu_);
  if (stopped_) return;
  for (auto& w : workers_) w->PostCancel(id);
}

std::vector<ConnInfo> Proxy::List() {
  std::lock_guard<std::mutex> life(lifeMu_);
  if (stopped_) return {};
  auto rt = std::make_shared<RoundTrip>();
  for (auto& w : workers_) {
    w->PostList([rt](std::vector<ConnInfo>&& part) {
      {
        std::lock_guard<std::mutex> g(rt->m);
        for (auto& i : part) rt->conns.push_back(std::move(i));
      }
      rt->Ack();
    });
  }
  rt->Wait(workers_.size());
  std::lock_guard<std::mutex> g(rt->m);
  return rt->conns;
}

void Proxy::Shutdown() {
  std::lock_guard<std::mutex> life(lifeMu_);
  if (stopped_) return;
  stopped_ = true;
  for (auto& w : workers_) w->PostQuit();
  for (auto& w : workers_) w->Join();
  workers_.clear();
  CloseFd(&listenFd_);
  CloseFd(&tunnelFd_);
  {
    std::lock_guard<std::mutex> t(tunnelMu_);
    creds_.reset();
    serve_.reset();
  }
  std::lock_guard<std::mutex> g(tableMu_);
  table_.reset();
}

void Proxy::SetTunnelCreds(std::shared_ptr<TlsCreds> creds) {
  std::lock_guard<std::mutex> g(tunnelMu_);
  creds_ = std::move(creds);
  tunnelVersion_.fetch_add(1, std::memory_order_release);
}

void Proxy::SetLocalServe(std::shared_ptr<const LocalServeTable> table) {
  std::lock_guard<std::mutex> g(tunnelMu_);
  serve_ = std::move(table);
  tunnelVersion_.fetch_add(1, std::memory_order_release);
}

void Proxy::RefreshTunnel(uint64_t* version, std::shared_ptr<TlsCreds>* creds, std::shared_ptr<const LocalServeTable>* serve) {
  uint64_t v = tunnelVersion_.load(std::memory_order_acquire);
  if (v == *version) return;
  std::lock_guard<std::mutex> g(tunnelMu_);
  *creds = creds_;
  *serve = serve_;
  *version = tunnelVersion_.load(std::memory_order_relaxed);
}

void Proxy::RecordPeer(const std::string& node, const char* direction, const std::string& address, const std::string& result,
                       PeerResult kind, bool resumed) {
  std::lock_guard<std::mutex> g(peersMu_);
  PeerInfo& p = peers_[std::string(direction) + '|' + node];
  // Bounded: inbound names come from certificates of our CA, outbound ones from Node objects.
  if (p.node.empty() && peers_.size() > 4096) {
    peers_.erase(std::string(direction) + '|' + node);
    return;
  }
  p.node = node;
  p.direction = direction;
  p.address = address;
  p.lastResult = result;
  p.lastAtMs = WallMs();
  switch (kind) {
    case PeerResult::kOk: p.ok++; break;
    case PeerResult::kHandshakeFailed: p.handshakeFailed++; break;
    case PeerResult::kRefused: p.refused++; break;
    case PeerResult::kConnectFailed: p.connectFailed++; break;
  }
  if (resumed) p.resumed++;
}

void Proxy::SetRelays(std::vector<SockAddr> relays) {
  std::lock_guard<std::mutex> life(lifeMu_);
  if (stopped_ || workers_.empty()) return;
  workers_[0]->PostSetRelays(std::move(relays));
}

void Proxy::Register(const std::string& node, Worker* w, uint64_t connId, const std::string& address) {
  std::lock_guard<std::mutex> g(relayMu_);
  registrations_[node] = Registration{w, connId, address, WallMs()};  // a newer session of the node wins
}

void Proxy::Unregister(const std::string& node, uint64_t connId) {
  std::lock_guard<std::mutex> g(relayMu_);
  auto it = registrations_.find(node);
  if (it != registrations_.end() && it->second.connId == connId) registrations_.erase(it);
}

bool Proxy::FindRegistration(const std::string& node, Worker** w, uint64_t* connId) {
  std::lock_guard<std::mutex> g(relayMu_);
  auto it = registrations_.find(node);
  if (it == registrations_.end()) return false;
  *w = it->second.worker;
  *connId = it->second.connId;
  return true;
}

bool Proxy::AddJoin(const std::string& token, Worker* w, uint64_t connId) {
  std::lock_guard<std::mutex> g(relayMu_);
  if (joins_.size() >= cfg_.maxPendingJoins) return false;
  joins_[token] = PendingJoin{w, connId};
  return true;
}

bool Proxy::TakeJoin(const std::string& token, Worker** w, uint64_t* connId) {
  std::lock_guard<std::mutex> g(relayMu_);
  auto it = joins_.find(token);
  if (it == joins_.end()) return false;
  *w = it->second.worker;
  *connId = it->second.connId;
  joins_.erase(it);
  return true;
}

size_t Proxy::PreferredRelay(const std::string& node) {
  std::lock_guard<std::mutex> g(relayMu_);
  auto it = preferred_.find(node);
  return it == preferred_.end() ? 0 : it->second;
}

void Proxy::PreferRelay(const std::string& node, size_t index) {
  std::lock_guard<std::mutex> g(relayMu_);
  if (preferred_.size() > 65536) preferred_.clear();  // bounded: node names come from the store
  preferred_[node] = index;
}

bool Proxy::TakeJoinToken(int64_t nowMs) {
  std::lock_guard<std::mutex> g(relayMu_);
  double rate = cfg_.joinRatePerSec;
  if (joinRefillMs_ == 0) {
    joinRefillMs_ = nowMs;
    joinTokens_ = rate;
  }
  joinTokens_ = std::min(rate, joinTokens_ + rate * static_cast<double>(nowMs - joinRefillMs_) / 1000.0);
  joinRefillMs_ = nowMs;
  if (joinTokens_ < 1) return false;
  joinTokens_ -= 1;
  return true;
}

void Proxy::PublishSessions(std::vector<SessionInfo> s) {
  std::lock_guard<std::mutex> g(relayMu_);
  sessions_ = std::move(s);
}

std::vector<SessionInfo> Proxy::Sessions() {
  std::lock_guard<std::mutex> g(relayMu_);
  return sessions_;
}

std::vector<RegistrationInfo> Proxy::Registrations() {
  std::lock_guard<std::mutex> g(relayMu_);
  std::vector<RegistrationInfo> out;
  for (auto& kv : registrations_) out.push_back(RegistrationInfo{kv.first, kv.second.address, kv.second.sinceMs});
  return out;
}

std::vector<PeerInfo> Proxy::Peers() {
  std::lock_guard<std::mutex> g(peersMu_);
  std::vector<PeerInfo> out;
  out.reserve(peers_.size());
  for (auto& kv : peers_) out.push_back(kv.second);
  return out;
}

ProxyStats Proxy::Stats() const {
  ProxyStats s;
  const Counters& k = counters_;
  s.active = k.active.load(std::memory_order_relaxed);
  s.accepted = k.accepted.load(std::memory_order_relaxed);
  s.relayed = k.relayed.load(std::memory_order_relaxed);
  s.bytesUp = k.bytesUp.load(std::memory_order_relaxed);
  s.bytesDown = k.bytesDown.load(std::memory_order_relaxed);
  s.failovers = k.failovers.load(std::memory_order_relaxed);
  s.connectFailures = k.connectFailures.load(std::memory_order_relaxed);
  for (int i = 0; i < static_cast<int>(Refusal::kCount); i++) s.refused[i] = k.refused[i].load(std::memory_order_relaxed);
  for (int i = 0; i < 7; i++) s.ended[i] = k.ended[i].load(std::memory_order_relaxed);
  s.acceptErrors = k.acceptErrors.load(std::memory_order_relaxed);
  s.acceptBackoffs = k.acceptBackoffs.load(std::memory_order_relaxed);
  s.handoffs = k.handoffs.load(std::memory_order_relaxed);
  s.pipesCreated = k.pipesCreated.load(std::memory_order_relaxed);
  s.pipesReused = k.pipesReused.load(std::memory_order_relaxed);
  s.spliceFallbacks = k.spliceFallbacks.load(std::memory_order_relaxed);
  s.pipeSize = k.pipeSize.load(std::memory_order_relaxed);
  TunnelStats& t = s.tunnel;
  t.dialed = k.tDialed.load(std::memory_order_relaxed);
  t.dialOk = k.tDialOk.load(std::memory_order_relaxed);
  t.inAccepted = k.tInAccepted.load(std::memory_order_relaxed);
  t.inOk = k.tInOk.load(std::memory_order_relaxed);
  t.resumed = k.tResumed.load(std::memory_order_relaxed);
  t.ktls = k.tKtls.load(std::memory_order_relaxed);
  t.dialConnectFailed = k.tDialConnectFailed.load(std::memory_order_relaxed);
  t.pendingLimit = k.tPendingLimit.load(std::memory_order_relaxed);
  t.pending = k.tPending.load(std::memory_order_relaxed);
  t.bytesOut = k.tBytesOut.load(std::memory_order_relaxed);
  t.bytesIn = k.tBytesIn.load(std::memory_order_relaxed);
  for (int i = 0; i < static_cast<int>(TlsFail::kCount); i++) {
    t.dialTlsFail[i] = k.tDialTlsFail[i].load(std::memory_order_relaxed);
    t.inTlsFail[i] = k.tInTlsFail[i].load(std::memory_order_relaxed);
  }
  for (int i = 0; i < static_cast<int>(TunnelStatus::kCount); i++) {
    t.dialRefused[i] = k.tDialRefused[i].load(std::memory_order_relaxed);
    t.inRefused[i] = k.tInRefused[i].load(std::memory_order_relaxed);
    t.relayJoinsRefused[i] = k.rJoinsRefused[i].load(std::memory_order_relaxed);
    t.dialJoinRefused[i] = k.dJoinRefused[i].load(std::memory_order_relaxed);
  }
  t.relayJoinsOk = k.rJoinsOk.load(std::memory_order_relaxed);
  t.relayUnknownToken = k.rUnknownToken.load(std::memory_order_relaxed);
  t.relayRateLimited = k.rRateLimited.load(std::memory_order_relaxed);
  t.relayBytes = k.rBytes.load(std::memory_order_relaxed);
  t.dialJoinOk = k.dJoinOk.load(std::memory_order_relaxed);
  t.dataConns = k.dataConns.load(std::memory_order_relaxed);
  t.dataConnsFailed = k.dataConnsFailed.load(std::memory_order_relaxed);
  {
    std::lock_guard<std::mutex> g(relayMu_);
    t.registered = registrations_.size();
    t.pendingJoins = joins_.size();
  }
  return s;
}

void RaiseNofileLimit(uint64_t* soft, uint64_t* hard) {
  rlimit rl{};
  getrlimit(RLIMIT_NOFILE, &rl);
  // Privileged: lift the hard limit to fs.nr_open first; otherwise soft up to hard.
  FILE* f = std::fopen("/proc/sys/fs/nr_open", "re");
  if (f) {
    unsigned long long nr = 0;
    if (std::fscanf(f, "%llu", &nr) == 1 && nr > rl.rlim_max) {
      rlimit want{static_cast<rlim_t>(nr), static_cast<rlim_t>(nr)};
      if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
    }
    std::fclose(f);
  }
  if (rl.rlim_cur < rl.rlim_max) {
    rlimit want{rl.rlim_max, rl.rlim_max};
    if (setrlimit(RLIMIT_NOFILE, &want) == 0) rl = want;
  }
  getrlimit(RLIMIT_NOFILE, &rl);
  *soft = rl.rlim_cur;
  *hard = rl.rlim_max;
}

}  // namespace edgemesh
