#include "relay_core.h"

#include <fcntl.h>
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

#include "netns.h"
#include "syserror.h"

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
    case Refusal::kCount: break;
  }
  return "";
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
  size_t pending = 0;  // bytes taken from src, not yet written to dst
  size_t off = 0;      // copy mode: start of pending bytes in buf
  bool copy = false;
  bool eof = false;    // src said EOF
  bool shut = false;   // dst got shutdown(SHUT_WR)
  uint64_t bytes = 0;  // delivered to dst
};

struct Conn {
  uint64_t id = 0;
  int cfd = -1, ufd = -1;
  bool connecting = true;
  bool dead = false;
  bool queued = false;  // on the worker's "pump again" list
  bool cRd = true, cWr = true, uRd = false, uWr = false;
  Dir up, down;  // up: client -> upstream
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
  int list = 0;  // 0 none, 1 connecting, 2 idle
};

// Intrusive FIFO; ordered by deadline because every entry gets the same timeout.
struct ConnList {
  Conn* head = nullptr;
  Conn* tail = nullptr;
  void PushBack(Conn* c) {
    c->prev = tail;
    c->next = nullptr;
    if (tail) tail->next = c; else head = c;
    tail = c;
  }
  void Remove(Conn* c) {
    if (c->prev) c->prev->next = c->next; else head = c->next;
    if (c->next) c->next->prev = c->prev; else tail = c->prev;
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
  Worker(Proxy* proxy, int index) : proxy_(proxy), cfg_(proxy->config()), index_(index), rng_(std::random_device{}() + static_cast<unsigned>(index)) {}
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
  void PostAccepted(int fd, const SockAddr& peer) {
    inbox_.fetch_add(1, std::memory_order_relaxed);
    auto passed = std::make_shared<PassedFd>(fd);
    Post([this, passed, peer] {
      inbox_.fetch_sub(1, std::memory_order_relaxed);
      Accepted(passed->Take(), peer);
    });
  }
  void PostCancel(uint64_t id) { Post([this, id] { CancelId(id); }); }
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
        i.endpoint = c->route->endpoints[c->epIndex].text;
        i.service = c->route->service;
        i.connecting = c->connecting;
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
  }

  void DisarmListen() {
    if (!listenArmed_) return;
    epoll_ctl(ep_, EPOLL_CTL_DEL, proxy_->listenFd(), nullptr);
    listenArmed_ = false;
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
          OnListen();
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
    if (idle_.head && cfg_.idleTimeoutMs > 0) next = std::min(next, idle_.head->lastActiveMs + cfg_.idleTimeoutMs);
    if (backoffUntil_ > 0) next = std::min(next, backoffUntil_);
    if (!pool_.empty()) next = std::min(next, pool_.front().idleSinceMs + static_cast<int64_t>(cfg_.pipeIdleMs));
    if (next == INT64_MAX) return -1;
    int64_t d = next - MonoMs();
    // The coarse clock can lag by a tick: never spin at 0 for a deadline in the past.
    if (d < 1) d = 1;
    if (d > 60000) d = 60000;
    return static_cast<int>(d);
  }

  void RunTimers() {
    while (connecting_.head && connecting_.head->deadlineMs <= now_) ConnectFailed(connecting_.head, ETIMEDOUT, "connect");
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

  void OnListen() {
    if (acceptStopped_) return;
    auto& k = proxy_->counters();
    for (int i = 0; i < 64; i++) {
      SockAddr peer;
      peer.len = sizeof peer.ss;
      int fd = accept4(proxy_->listenFd(), reinterpret_cast<sockaddr*>(&peer.ss), &peer.len, SOCK_NONBLOCK | SOCK_CLOEXEC);
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
        Accepted(fd, peer);
      } else {
        k.handoffs.fetch_add(1, std::memory_order_relaxed);
        to->PostAccepted(fd, peer);
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

  void StartConnect(Conn* c) {
    auto& ep = c->route->endpoints[c->epIndex];
    c->tried[c->epIndex] = true;
    c->attempts++;
    int fd = socket(ep.addr.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
      Finish(c, EndReason::kError, errno, "socket");
      return;
    }
    c->ufd = fd;
    SetNoDelay(fd);
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = reinterpret_cast<uint64_t>(c) | 1;
    if (epoll_ctl(ep_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      Finish(c, EndReason::kError, errno, "epoll_ctl");
      return;
    }
    if (connect(fd, reinterpret_cast<const sockaddr*>(&ep.addr.ss), ep.addr.len) == 0) {
      Connected(c, true);
      return;
    }
    int e = errno;
    if (e != EINPROGRESS) {
      ConnectFailed(c, e, "connect");
      return;
    }
    c->deadlineMs = MonoMs() + cfg_.connectTimeoutMs;
    ListMove(c, 1);
  }

  void ConnectFailed(Conn* c, int err, const char* call) {
    ListMove(c, 0);
    CloseFd(&c->ufd);  // closing removes it from the epoll set
    const RouteEntry& r = *c->route;
    size_t n = r.endpoints.size();
    uint32_t bound = std::min<uint32_t>(cfg_.maxConnectAttempts, static_cast<uint32_t>(n));
    if (Retryable(err) && c->attempts < bound) {
      for (size_t step = 1; step <= n; step++) {
        size_t i = (c->epIndex + step) % n;
        if (!c->tried[i]) {
          c->epIndex = i;
          c->failovers++;
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
    c->connecting = false;
    c->uWr = true;
    c->uRd = readable;
    ListMove(c, cfg_.idleTimeoutMs > 0 ? 2 : 0);
    c->lastActiveMs = now_;
    const RouteEntry& r = *c->route;
    if (r.clientIpAffinity) proxy_->AffinityRecord(r, c->client, now_, r.endpoints[c->epIndex].text);
    proxy_->counters().relayed.fetch_add(1, std::memory_order_relaxed);
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
    c->list = list;
    if (list == 1) connecting_.PushBack(c);
    if (list == 2) idle_.PushBack(c);
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
  bool SetupDir(Dir* d, bool splice) {
    if (splice) return true;
    d->copy = true;
    d->buf.reset(new (std::nothrow) char[cfg_.copyBufferSize]);
    return d->buf != nullptr;
  }

  // ---------------------------------------------------------------- relay

  void OnConnEvent(Conn* c, bool upstream, uint32_t events) {
    if (upstream) {
      if (c->connecting) {
        if (events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) {
          // Writable without an error or hangup: connected. Otherwise ask what went wrong.
          int err = 0;
          socklen_t len = sizeof err;
          if ((events & (EPOLLERR | EPOLLHUP)) && getsockopt(c->ufd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
          if ((events & (EPOLLERR | EPOLLHUP)) && err == 0) err = ECONNREFUSED;
          if (err != 0) {
            ConnectFailed(c, err, "connect");
          } else if (events & EPOLLOUT) {
            Connected(c, (events & (EPOLLIN | EPOLLRDHUP)) != 0);
          }
        }
        return;
      }
      if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->uRd = true;
      if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) c->uWr = true;
    } else {
      if (events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) c->cRd = true;
      if (events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) c->cWr = true;
      if (c->connecting) {
        if (events & EPOLLERR) {
          int err = 0;
          socklen_t len = sizeof err;
          getsockopt(c->cfd, SOL_SOCKET, SO_ERROR, &err, &len);
          Finish(c, EndReason::kReset, err ? err : ECONNRESET, "getsockopt");
        }
        return;
      }
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
    size_t budget = std::max<size_t>(4 * (d->pipe.cap ? d->pipe.cap : cfg_.copyBufferSize), 1u << 20);
    size_t moved = 0;
    for (;;) {
      if (d->pending > 0) {
        if (!*dstWr) return true;
        ssize_t n = d->copy ? write(dst, d->buf.get() + d->off, d->pending)
                            : splice(d->pipe.r, nullptr, dst, nullptr, d->pending, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
          d->pending -= static_cast<size_t>(n);
          d->off += static_cast<size_t>(n);
          d->bytes += static_cast<uint64_t>(n);
          moved += static_cast<size_t>(n);
          total.fetch_add(static_cast<uint64_t>(n), std::memory_order_relaxed);
          Touch(c);
          continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          *dstWr = false;
          return true;
        }
        if (n < 0 && errno == EINTR) continue;
        Fail(c, n < 0 ? errno : EIO, d->copy ? "write" : "splice");
        return false;
      }
      if (d->eof) {
        if (!d->shut) {
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
      ssize_t n = d->copy ? read(src, d->buf.get(), cfg_.copyBufferSize)
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
        d->buf.reset(new (std::nothrow) char[cfg_.copyBufferSize]);
        if (!d->buf) {
          Fail(c, ENOMEM, "malloc");
          return false;
        }
        k.spliceFallbacks.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      Fail(c, e, d->copy ? "read" : "splice");
      return false;
    }
  }

  void Fail(Conn* c, int err, const char* call) {
    bool reset = err == ECONNRESET || err == EPIPE || err == ECONNABORTED;
    Finish(c, reset ? EndReason::kReset : EndReason::kError, err, call);
  }

  void Finish(Conn* c, EndReason reason, int err, const char* call) {
    if (c->dead) return;
    c->dead = true;
    ListMove(c, 0);
    conns_.erase(c->id);
    load_.fetch_sub(1, std::memory_order_relaxed);
    auto& k = proxy_->counters();
    // Anything but a clean end is passed on as a reset, so neither peer mistakes a truncated
    // stream for a complete one.
    if (reason != EndReason::kEof) {
      SetLingerZero(c->cfd);
      SetLingerZero(c->ufd);
    }
    CloseFd(&c->cfd);
    CloseFd(&c->ufd);
    PutPipe(&c->up.pipe, c->up.pending == 0);
    PutPipe(&c->down.pipe, c->down.pending == 0);
    c->up.buf.reset();
    c->down.buf.reset();
    k.active.fetch_sub(1, std::memory_order_relaxed);
    k.ended[static_cast<int>(reason)].fetch_add(1, std::memory_order_relaxed);
    dead_.push_back(c);
    if (cfg_.events == EventFilter::kNone || (cfg_.events == EventFilter::kFailures && reason == EndReason::kEof)) return;
    ConnEvent ev;
    ev.id = c->id;
    ev.client = c->client.ToString();
    ev.originalDst = c->odst.ToString();
    ev.service = c->route->service;
    ev.endpoint = c->route->endpoints[c->epIndex].text;
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
  bool listenArmed_ = false;
  bool acceptStopped_ = false;
  int64_t backoffMs_ = 0, backoffUntil_ = 0;
  int64_t now_ = MonoMs();
  uint64_t tableVersion_ = 0;
  std::shared_ptr<const RouteTable> table_;
  std::unordered_map<uint64_t, Conn*> conns_;
  ConnList connecting_, idle_;
  std::vector<Conn*> again_, dead_;
  std::vector<ConnEvent> events_;
  std::deque<Pipe> pool_;
};

// ---------------------------------------------------------------- proxy

Proxy::Counters::Counters() {
  for (auto& r : refused) r.store(0);
  for (auto& e : ended) e.store(0);
}

Proxy::Proxy(const ProxyConfig& cfg, EventSink sink) : cfg_(cfg), sink_(std::move(sink)) {
  if (cfg_.threads < 1) cfg_.threads = 1;
  if (cfg_.threads > 64) cfg_.threads = 64;
  if (cfg_.maxConnectAttempts < 1) cfg_.maxConnectAttempts = 1;
  if (cfg_.copyBufferSize < 4096) cfg_.copyBufferSize = 4096;
  if (!ParseSockAddr(cfg_.address, cfg_.port, &local_)) {
    throw SysError(EINVAL, "inet_pton", "proxy address is not an IP address: " + cfg_.address, "EINVAL");
  }
  int nsFd = -1;
  try {
    NetnsGuard guard(cfg_.netnsPath);
    if (!cfg_.netnsPath.empty()) {
      nsFd = open(cfg_.netnsPath.c_str(), O_RDONLY | O_CLOEXEC);
      if (nsFd < 0) throw SysError(errno, "open", "cannot open " + cfg_.netnsPath + ": " + strerror(errno));
    }
    listenFd_ = socket(local_.family(), SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (listenFd_ < 0) throw SysError(errno, "socket", std::string("socket: ") + strerror(errno));
    int one = 1;
    setsockopt(listenFd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    setsockopt(listenFd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // inherited by accepted sockets
    if (local_.family() == AF_INET6) setsockopt(listenFd_, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (bind(listenFd_, reinterpret_cast<const sockaddr*>(&local_.ss), local_.len) != 0) {
      throw SysError(errno, "bind", "bind " + local_.ToString() + ": " + strerror(errno));
    }
    if (listen(listenFd_, cfg_.backlog) != 0) throw SysError(errno, "listen", std::string("listen: ") + strerror(errno));
    SockAddr bound;
    bound.len = sizeof bound.ss;
    if (getsockname(listenFd_, reinterpret_cast<sockaddr*>(&bound.ss), &bound.len) == 0) local_ = bound;
    for (int i = 0; i < cfg_.threads; i++) {
      workers_.emplace_back(new Worker(this, i));
      workers_.back()->Init();
    }
  } catch (...) {
    workers_.clear();
    CloseFd(&listenFd_);
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
    if (it->second.expiresMs <= now) it = affinity_.erase(it); else ++it;
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
      if (it->second.expiresMs <= nowMs) it = affinity_.erase(it); else ++it;
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
  // No worker touches the listener any more: close it (new connections are refused at once).
  CloseFd(&listenFd_);
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
  std::lock_guard<std::mutex> g(tableMu_);
  table_.reset();
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
  for (int i = 0; i < static_cast<int>(Refusal::kCount); i++) s.refused[i] = k.refused[i].load(std::memory_order_relaxed);
  for (int i = 0; i < 7; i++) s.ended[i] = k.ended[i].load(std::memory_order_relaxed);
  s.acceptErrors = k.acceptErrors.load(std::memory_order_relaxed);
  s.acceptBackoffs = k.acceptBackoffs.load(std::memory_order_relaxed);
  s.handoffs = k.handoffs.load(std::memory_order_relaxed);
  s.pipesCreated = k.pipesCreated.load(std::memory_order_relaxed);
  s.pipesReused = k.pipesReused.load(std::memory_order_relaxed);
  s.spliceFallbacks = k.spliceFallbacks.load(std::memory_order_relaxed);
  s.pipeSize = k.pipeSize.load(std::memory_order_relaxed);
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
