// The TCP service proxy's data plane, plain C++ (no V8): native accept on epoll, SO_ORIGINAL_DST,
// routing-table lookup, endpoint choice, non-blocking connect with failover, and a relay that
// moves bytes both ways with splice(2) through pooled pipes (or read/write where splice is not
// possible, or when asked). Each worker thread owns an epoll instance and every connection it
// accepted; the JS side only pushes routing tables, reads counters and receives one final event
// per connection (through the EventSink, called on worker threads).
//
// Ownership: the Proxy owns the listening socket; a Worker owns its epoll fd, its wake eventfd,
// its pipe pool and its connections; a connection owns its two sockets and its pipes. Each fd is
// closed exactly once, by its owner, after nothing is in flight on it.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "relay/sockopt_core.h"
#include "relay/tls_core.h"
#include "relay/tunnel_proto.h"

namespace edgemesh {

enum class RelayMode { kSplice, kCopy };
enum class Selection { kRoundRobin, kRandom };
// Which connections produce a final event (counters always count everything).
enum class EventFilter { kAll, kFailures, kNone };

struct ProxyConfig {
  std::string address = "169.254.96.16";
  uint16_t port = 40001;
  int backlog = 4096;
  // Network namespace to run in ("" = the process's own): the listener is created there and
  // the worker threads enter it for good. Used by tests and the demo.
  std::string netnsPath;
  int threads = 2;
  uint32_t maxConnections = 16384;
  uint32_t connectTimeoutMs = 1000;
  uint32_t maxConnectAttempts = 3;
  uint32_t idleTimeoutMs = 0;  // 0: no idle timeout
  Selection selection = Selection::kRoundRobin;
  RelayMode mode = RelayMode::kSplice;
  uint32_t pipeSize = 1u << 20;  // F_SETPIPE_SZ; the kernel may grant less
  uint32_t copyBufferSize = 64u << 10;
  uint32_t pipePoolMax = 512;  // idle pipes kept per worker
  uint32_t pipeIdleMs = 2000;  // a pooled pipe unused this long is closed
  EventFilter events = EventFilter::kAll;
  // The tunnel listener (agents dial it over TLS to reach this node's endpoints); off when
  // tunnelAddress is empty. Its connections count against maxConnections too.
  std::string tunnelAddress;
  uint16_t tunnelPort = 20006;
  // TLS handshake plus the tunnel request/response, each way, before a connection is given up.
  uint32_t handshakeTimeoutMs = 5000;
  // Inbound tunnel connections not yet authenticated (beyond: reset at once, counted).
  uint32_t maxPendingHandshakes = 1024;
  uint32_t tlsBufferSize = 256u << 10;  // per direction of a connection with a TLS end
  // Relay side: joins waiting for their node's data connection (beyond: refused over-limit; a
  // waiting join leaves the pending-handshake count for this one), and join requests admitted
  // per second (a token bucket of that size).
  uint32_t maxPendingJoins = 1024;
  uint32_t joinRatePerSec = 2000;
  // Relay sessions (both ends): a ping after this much silence; dead after keepaliveDeadMs.
  uint32_t keepaliveMs = 2000;
  uint32_t keepaliveDeadMs = 6000;
  // A node's session to a relay is redialled after 250 ms, doubling up to this, with jitter.
  uint32_t reconnectMaxMs = 8000;
};

// How an endpoint is reached: dialled from this node (on it, or routed to), or through the
// tunnel to the agent of the node it runs on.
enum class EndpointPath : uint8_t { kDirect, kLocal, kTunnel, kRelay };
const char* EndpointPathName(EndpointPath p);

struct RouteEndpoint {
  SockAddr addr;
  std::string text;  // "ip:port" / "[ip]:port"
  EndpointPath path = EndpointPath::kDirect;
  std::string node;              // the endpoint's node; for kTunnel the name its agent's certificate must carry
  SockAddr tunnel;               // kTunnel: that agent's tunnel listener
  std::vector<SockAddr> relays;  // kRelay: relays where the node may be registered, in order
};

// One (ClusterIP, port, TCP) entry.
struct RouteEntry {
  std::string service;      // "namespace/name:portName" (or ":port" when unnamed), for events
  std::string serviceName;  // "namespace/name", named in tunnel requests
  uint16_t servicePort = 0;
  std::vector<RouteEndpoint> endpoints;
  bool clientIpAffinity = false;
  uint32_t affinityTimeoutSec = 10800;
  mutable std::atomic<uint32_t> next{0};  // round-robin cursor
};

class RouteTable {
 public:
  // Returns false when (ip, port) is already present.
  bool Add(const SockAddr& serviceAddr, std::unique_ptr<RouteEntry> entry);
  const RouteEntry* Find(const SockAddr& dst) const;
  size_t size() const { return map_.size(); }
  static std::string Key(const SockAddr& a);

 private:
  std::unordered_map<std::string, std::unique_ptr<RouteEntry>> map_;
};

// What this node's tunnel listener serves: per (Service, Service port), the endpoints on this
// node. Anything else a peer asks for is refused.
class LocalServeTable {
 public:
  void Add(const std::string& service, uint16_t servicePort, const SockAddr& endpoint);
  TunnelStatus Check(const TunnelRequest& r) const;
  size_t size() const { return map_.size(); }

 private:
  std::unordered_map<std::string, std::vector<std::string>> map_;  // "svc|port" -> RouteTable::Key
};

enum class EndReason : uint8_t { kEof, kReset, kIdleTimeout, kCancelled, kError, kConnectFailed, kRefused };
enum class Refusal : uint8_t { kNone, kOverLimit, kNoOriginalDst, kLoop, kNoRoute, kNoEndpoints, kTunnelHandshake, kTunnelRequest, kCount };

const char* EndReasonName(EndReason r);
const char* RefusalName(Refusal r);

// The one final event of a connection.
struct ConnEvent {
  uint64_t id = 0;
  std::string client, originalDst, endpoint, service;
  uint64_t bytesUp = 0;    // client -> upstream
  uint64_t bytesDown = 0;  // upstream -> client
  double durationMs = 0;
  EndReason reason = EndReason::kEof;
  Refusal refusal = Refusal::kNone;
  int err = 0;
  std::string syscall;
  uint32_t failovers = 0;
  bool copied = false;  // some direction used the read/write path
  // The path of the endpoint used last; "tunnel-in" for a connection our tunnel listener served.
  std::string path;
  std::string peer;                               // the peer agent's node name (tunnel, tunnel-in)
  TlsFail tlsFail = TlsFail::kNone;               // a failed handshake (last attempt)
  TunnelStatus tunnelStatus = TunnelStatus::kOk;  // a refused tunnel request (last attempt)
  bool resumed = false;                           // the TLS session was resumed
  bool ktls = false;                              // the kernel encrypted the sending side
};

// A live connection, as listed for operators (and to find an id to cancel).
struct ConnInfo {
  uint64_t id = 0;
  std::string client, originalDst, endpoint, service;
  bool connecting = false;
  uint64_t bytesUp = 0, bytesDown = 0;
  double ageMs = 0;
  int worker = 0;  // index of the worker thread relaying it
  std::string path, peer;
};

// One peer agent, as last seen by this node (dialled: "out"; dialled us: "in").
struct PeerInfo {
  std::string node, direction, address;
  std::string lastResult;  // "ok", a TlsFail name, "refused:<status>", or an errno name
  double lastAtMs = 0;     // wall clock, ms since the epoch
  uint64_t ok = 0, handshakeFailed = 0, refused = 0, connectFailed = 0, resumed = 0;
};
enum class PeerResult : uint8_t { kOk, kHandshakeFailed, kRefused, kConnectFailed };

// A node registered with this agent as its relay.
struct RegistrationInfo {
  std::string node, address;
  double sinceMs = 0;
};

// This node's session with one relay (kept while the node has no tunnel address of its own).
struct SessionInfo {
  std::string relay;
  std::string state;  // "connecting", "handshake", "registered", "backoff", "no-credentials"
  std::string lastError;
  std::string relayNode;  // the relay's certificate name, once known
  double sinceMs = 0;     // when it entered this state (wall clock)
  uint64_t connects = 0, failures = 0, notifies = 0;
};

struct TunnelStats {
  uint64_t dialed = 0, dialOk = 0, inAccepted = 0, inOk = 0, resumed = 0, ktls = 0;
  uint64_t dialTlsFail[static_cast<int>(TlsFail::kCount)] = {0};
  uint64_t inTlsFail[static_cast<int>(TlsFail::kCount)] = {0};
  uint64_t dialRefused[static_cast<int>(TunnelStatus::kCount)] = {0};  // by the peer
  uint64_t inRefused[static_cast<int>(TunnelStatus::kCount)] = {0};    // by us
  uint64_t dialConnectFailed = 0, pendingLimit = 0, pending = 0;
  uint64_t bytesOut = 0, bytesIn = 0;  // application bytes sent into / received from tunnels
  // As a relay: joins by result (ok, or the status refused), data connections with no join,
  // joins limited by rate, bytes spliced between the two ends (ciphertext), nodes registered.
  uint64_t relayJoinsOk = 0, relayUnknownToken = 0, relayRateLimited = 0, relayBytes = 0, registered = 0, pendingJoins = 0;
  uint64_t relayJoinsRefused[static_cast<int>(TunnelStatus::kCount)] = {0};
  // As a dialler through relays: joins answered ok, or refused with a status.
  uint64_t dialJoinOk = 0;
  uint64_t dialJoinRefused[static_cast<int>(TunnelStatus::kCount)] = {0};
  // As a registered node: data connections opened for joins, and those that failed.
  uint64_t dataConns = 0, dataConnsFailed = 0;
};

struct ProxyStats {
  uint64_t active = 0, accepted = 0, relayed = 0;
  uint64_t bytesUp = 0, bytesDown = 0;
  uint64_t failovers = 0;
  uint64_t connectFailures = 0;  // every failed endpoint attempt (refused, timed out, unreachable)
  uint64_t refused[static_cast<int>(Refusal::kCount)] = {0};
  uint64_t ended[7] = {0};  // by EndReason
  uint64_t acceptErrors = 0, acceptBackoffs = 0;
  uint64_t handoffs = 0;  // accepted by one worker, relayed by a less loaded one
  uint64_t pipesCreated = 0, pipesReused = 0, spliceFallbacks = 0;
  uint32_t pipeSize = 0;  // granted by the kernel, 0 before the first pipe
  TunnelStats tunnel;
};

class Worker;

class Proxy {
 public:
  using EventSink = std::function<void(std::vector<ConnEvent>&&)>;

  // Creates the listener (in cfg.netnsPath when set) and starts the workers. Throws SysError.
  Proxy(const ProxyConfig& cfg, EventSink sink);
  ~Proxy();
  Proxy(const Proxy&) = delete;
  Proxy& operator=(const Proxy&) = delete;

  void SetRoutes(std::shared_ptr<const RouteTable> table);
  // Tunnel credentials (nullptr: none; tunnel endpoints then fail over) and what we serve.
  void SetTunnelCreds(std::shared_ptr<TlsCreds> creds);
  void SetLocalServe(std::shared_ptr<const LocalServeTable> table);
  const KtlsSupport& Ktls() const { return ktls_; }
  std::vector<PeerInfo> Peers();
  // Relays this node keeps a session with (empty: none; the node has its own tunnel address).
  void SetRelays(std::vector<SockAddr> relays);
  std::vector<RegistrationInfo> Registrations();
  std::vector<SessionInfo> Sessions();
  // Stops accepting and closes the listening socket; live connections keep running.
  void StopAccepting();
  // Ends one connection (reason "cancelled"); false when no worker knows the id.
  void Cancel(uint64_t id);
  // The live connections of every worker (a round trip to each worker thread).
  std::vector<ConnInfo> List();
  // Cancels everything, joins the workers, closes every fd. Idempotent.
  void Shutdown();
  ProxyStats Stats() const;
  SockAddr LocalAddress() const { return local_; }
  // The tunnel listener's bound address (family 0 when there is none).
  SockAddr TunnelAddress() const { return tunnelLocal_; }

  // --- used by the workers ---
  struct Counters {
    std::atomic<uint64_t> active{0}, accepted{0}, relayed{0}, bytesUp{0}, bytesDown{0}, failovers{0}, connectFailures{0};
    std::atomic<uint64_t> refused[static_cast<int>(Refusal::kCount)];
    std::atomic<uint64_t> ended[7];
    std::atomic<uint64_t> acceptErrors{0}, acceptBackoffs{0}, pipesCreated{0}, pipesReused{0}, spliceFallbacks{0}, handoffs{0};
    std::atomic<uint32_t> pipeSize{0};
    std::atomic<uint64_t> tDialed{0}, tDialOk{0}, tInAccepted{0}, tInOk{0}, tResumed{0}, tKtls{0}, tDialConnectFailed{0};
    std::atomic<uint64_t> tPendingLimit{0}, tPending{0}, tBytesOut{0}, tBytesIn{0};
    std::atomic<uint64_t> tDialTlsFail[static_cast<int>(TlsFail::kCount)];
    std::atomic<uint64_t> tInTlsFail[static_cast<int>(TlsFail::kCount)];
    std::atomic<uint64_t> tDialRefused[static_cast<int>(TunnelStatus::kCount)];
    std::atomic<uint64_t> tInRefused[static_cast<int>(TunnelStatus::kCount)];
    std::atomic<uint64_t> rJoinsOk{0}, rUnknownToken{0}, rRateLimited{0}, rBytes{0}, dJoinOk{0}, dataConns{0}, dataConnsFailed{0};
    std::atomic<uint64_t> rJoinsRefused[static_cast<int>(TunnelStatus::kCount)];
    std::atomic<uint64_t> dJoinRefused[static_cast<int>(TunnelStatus::kCount)];
    Counters();
  };
  const ProxyConfig& config() const { return cfg_; }
  Counters& counters() { return counters_; }
  int listenFd() const { return listenFd_; }
  int tunnelFd() const { return tunnelFd_; }
  uint64_t NextId() { return nextId_.fetch_add(1, std::memory_order_relaxed); }
  // The current table; `*version` caches what the caller holds.
  bool RefreshTable(uint64_t* version, std::shared_ptr<const RouteTable>* out);
  void RefreshTunnel(uint64_t* version, std::shared_ptr<TlsCreds>* creds, std::shared_ptr<const LocalServeTable>* serve);
  void RecordPeer(const std::string& node, const char* direction, const std::string& address, const std::string& result, PeerResult kind,
                  bool resumed);
  // Relay bookkeeping (any worker thread).
  void Register(const std::string& node, Worker* w, uint64_t connId, const std::string& address);
  void Unregister(const std::string& node, uint64_t connId);
  bool FindRegistration(const std::string& node, Worker** w, uint64_t* connId);
  // Pending joins by token: false when over maxPendingJoins.
  bool AddJoin(const std::string& token, Worker* w, uint64_t connId);
  bool TakeJoin(const std::string& token, Worker** w, uint64_t* connId);
  bool TakeJoinToken(int64_t nowMs);  // the join rate limit
  // Which of a relayed node's relays joined us last (tried first next time).
  size_t PreferredRelay(const std::string& node);
  void PreferRelay(const std::string& node, size_t index);
  void PublishSessions(std::vector<SessionInfo> s);
  Worker* FirstWorker() { return workers_.empty() ? nullptr : workers_[0].get(); }
  void Emit(std::vector<ConnEvent>&& events) {
    if (sink_) sink_(std::move(events));
  }
  // The worker that should relay a connection `self` just accepted: `self`, unless another one
  // has at least two connections fewer (one epoll wakeup accepts a whole burst, as iperf3's
  // four streams: without this they would all share one core).
  Worker* PickWorker(Worker* self);
  // ClientIP session affinity: the remembered endpoint for (route, client), if fresh.
  bool AffinityLookup(const RouteEntry& r, const SockAddr& client, int64_t nowMs, std::string* endpoint);
  void AffinityRecord(const RouteEntry& r, const SockAddr& client, int64_t nowMs, const std::string& endpoint);

 private:
  ProxyConfig cfg_;
  EventSink sink_;
  SockAddr local_;
  int listenFd_ = -1;
  int tunnelFd_ = -1;
  SockAddr tunnelLocal_;
  KtlsSupport ktls_;
  std::mutex tunnelMu_;
  std::shared_ptr<TlsCreds> creds_;
  std::shared_ptr<const LocalServeTable> serve_;
  std::atomic<uint64_t> tunnelVersion_{1};
  std::mutex peersMu_;
  std::unordered_map<std::string, PeerInfo> peers_;
  struct Registration {
    Worker* worker;
    uint64_t connId;
    std::string address;
    double sinceMs;
  };
  struct PendingJoin {
    Worker* worker;
    uint64_t connId;
  };
  mutable std::mutex relayMu_;
  std::unordered_map<std::string, Registration> registrations_;
  std::unordered_map<std::string, PendingJoin> joins_;
  double joinTokens_ = 0;
  int64_t joinRefillMs_ = 0;
  std::vector<SessionInfo> sessions_;
  std::unordered_map<std::string, size_t> preferred_;
  std::vector<std::unique_ptr<Worker>> workers_;
  std::mutex tableMu_;
  std::shared_ptr<const RouteTable> table_;
  std::atomic<uint64_t> tableVersion_{1};
  std::atomic<uint64_t> nextId_{1};
  Counters counters_;
  struct Affinity {
    std::string endpoint;
    int64_t expiresMs;
  };
  std::mutex affMu_;
  std::unordered_map<std::string, Affinity> affinity_;
  size_t affPurgeAt_ = 1024;
  std::mutex lifeMu_;
  bool stopped_ = false;
  bool accepting_ = true;
};

// Raises RLIMIT_NOFILE as far as allowed (soft to hard; both to fs.nr_open when privileged).
// Returns the resulting soft and hard limits.
void RaiseNofileLimit(uint64_t* soft, uint64_t* hard);

}  // namespace edgemesh
