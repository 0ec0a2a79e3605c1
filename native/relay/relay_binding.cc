// Binding for the native proxy (relay_core.h): `new Proxy(config, onEvents)` with setRoutes,
// stats, cancel, stopAccepting, close, address, ref/unref; and raiseNofileLimit().
// Workers hand finished-connection events to a queue; one ThreadSafeFunction call drains
// whatever has accumulated, so a burst of short connections costs one JS call per batch.
#include <napi.h>

#include <memory>
#include <mutex>
#include <vector>

#include "common/module_registry.h"
#include "common/napi_args.h"
#include "common/napi_util.h"
#include "relay/relay_core.h"

namespace {

using edgemesh::ConnEvent;

struct EventQueue {
  std::mutex mu;
  std::vector<ConnEvent> pending;
  bool scheduled = false;
  bool closed = false;
  Napi::ThreadSafeFunction tsfn;
};

Napi::Object EventToJs(Napi::Env env, const ConnEvent& e) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", static_cast<double>(e.id));
  o.Set("client", e.client);
  o.Set("originalDst", e.originalDst);
  o.Set("service", e.service);
  o.Set("endpoint", e.endpoint);
  o.Set("bytesUp", static_cast<double>(e.bytesUp));
  o.Set("bytesDown", static_cast<double>(e.bytesDown));
  o.Set("durationMs", e.durationMs);
  o.Set("reason", edgemesh::EndReasonName(e.reason));
  if (e.refusal != edgemesh::Refusal::kNone) o.Set("refusal", edgemesh::RefusalName(e.refusal));
  if (e.err != 0) {
    o.Set("errno", e.err);
    o.Set("code", edgemesh::ErrnoName(e.err));
  }
  if (!e.syscall.empty()) o.Set("syscall", e.syscall);
  o.Set("failovers", e.failovers);
  o.Set("mode", e.copied ? "copy" : "splice");
  if (!e.path.empty()) o.Set("path", e.path);
  if (!e.peer.empty()) o.Set("peer", e.peer);
  if (e.tlsFail != edgemesh::TlsFail::kNone) o.Set("tlsFailure", edgemesh::TlsFailName(e.tlsFail));
  if (e.tunnelStatus != edgemesh::TunnelStatus::kOk) o.Set("tunnelRefusal", edgemesh::TunnelStatusName(e.tunnelStatus));
  if (e.resumed) o.Set("resumed", true);
  if (e.ktls) o.Set("ktls", true);
  return o;
}

// The shared argument layer (common/napi_args.h) with this file's contract: false, and a TypeError
// thrown into JS, when the value is not what it must be.
bool Thrown(Napi::Env env, const edgemesh::args::ArgError& e) { return !edgemesh::TypeFail(env, false, e.message); }

// Reads an optional non-negative integer property.
bool GetUint(Napi::Object o, const char* key, uint64_t max, uint64_t* out) {
  try {
    Napi::Value v = o.Get(key);
    if (!v.IsUndefined()) *out = static_cast<uint64_t>(edgemesh::args::Int(v, edgemesh::args::Where{key}, 0, static_cast<int64_t>(max)));
    return true;
  } catch (const edgemesh::args::ArgError& e) {
    return Thrown(o.Env(), e);
  }
}

bool GetString(Napi::Object o, const char* key, bool required, std::string* out, size_t max = edgemesh::args::kMaxString) {
  try {
    Napi::Value v = o.Get(key);
    if (!v.IsUndefined() || required) *out = edgemesh::args::Str(v, edgemesh::args::Where{key}, max);
    return true;
  } catch (const edgemesh::args::ArgError& e) {
    return Thrown(o.Env(), e);
  }
}

// [{address, port}] -> SockAddrs; false with a TypeError thrown.
bool ParseAddrList(Napi::Array arr, const char* what, std::vector<edgemesh::SockAddr>* out) {
  Napi::Env env = arr.Env();
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (edgemesh::TypeFail(env, v.IsObject(), std::string(what) + " must hold {address, port} objects")) return false;
    std::string a;
    uint64_t port = 0;
    if (!GetString(v.As<Napi::Object>(), "address", true, &a) || !GetUint(v.As<Napi::Object>(), "port", 65535, &port)) return false;
    edgemesh::SockAddr s;
    if (edgemesh::TypeFail(env, edgemesh::ParseSockAddr(a, static_cast<uint16_t>(port), &s) && port != 0,
                           std::string(what) + ": not an IP address and port: " + a))
      return false;
    out->push_back(s);
  }
  return true;
}

class ProxyWrap : public Napi::ObjectWrap<ProxyWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(
        env, "Proxy",
        {InstanceMethod("setRoutes", &ProxyWrap::SetRoutes), InstanceMethod("stats", &ProxyWrap::Stats),
         InstanceMethod("cancel", &ProxyWrap::Cancel), InstanceMethod("connections", &ProxyWrap::Connections),
         InstanceMethod("stopAccepting", &ProxyWrap::StopAccepting), InstanceMethod("close", &ProxyWrap::Close),
         InstanceMethod("address", &ProxyWrap::Address), InstanceMethod("ref", &ProxyWrap::Ref), InstanceMethod("unref", &ProxyWrap::Unref),
         InstanceMethod("setTunnelCredentials", &ProxyWrap::SetTunnelCredentials),
         InstanceMethod("setLocalServe", &ProxyWrap::SetLocalServe), InstanceMethod("peers", &ProxyWrap::Peers),
         InstanceMethod("tunnelAddress", &ProxyWrap::TunnelAddress), InstanceMethod("ktls", &ProxyWrap::Ktls),
         InstanceMethod("setRelays", &ProxyWrap::SetRelays), InstanceMethod("registrations", &ProxyWrap::Registrations),
         InstanceMethod("sessions", &ProxyWrap::Sessions)});
  }

  explicit ProxyWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ProxyWrap>(info) {
    Napi::Env env = info.Env();
    if (edgemesh::TypeFail(env, info.Length() >= 2 && info[0].IsObject() && info[1].IsFunction(),
                           "new Proxy(config, onEvents): config must be an object and onEvents a function")) {
      return;
    }
    Napi::Object o = info[0].As<Napi::Object>();
    edgemesh::ProxyConfig cfg;
    std::string selection, mode, events;
    uint64_t port = cfg.port, threads = static_cast<uint64_t>(cfg.threads), maxConn = cfg.maxConnections, cto = cfg.connectTimeoutMs,
             attempts = cfg.maxConnectAttempts, idle = cfg.idleTimeoutMs, pipeSize = cfg.pipeSize,
             backlog = static_cast<uint64_t>(cfg.backlog), copyBuf = cfg.copyBufferSize, pool = cfg.pipePoolMax, pipeIdle = cfg.pipeIdleMs,
             tport = cfg.tunnelPort, hto = cfg.handshakeTimeoutMs, maxPending = cfg.maxPendingHandshakes, tlsBuf = cfg.tlsBufferSize,
             maxJoins = cfg.maxPendingJoins, joinRate = cfg.joinRatePerSec, ka = cfg.keepaliveMs, kaDead = cfg.keepaliveDeadMs,
             reconnMax = cfg.reconnectMaxMs;
    if (!GetString(o, "address", true, &cfg.address) || !GetUint(o, "port", 65535, &port) ||
        !GetString(o, "netns", false, &cfg.netnsPath) || !GetUint(o, "threads", 64, &threads) ||
        !GetUint(o, "maxConnections", 1u << 30, &maxConn) || !GetUint(o, "connectTimeoutMs", 3600000, &cto) ||
        !GetUint(o, "maxConnectAttempts", 64, &attempts) || !GetUint(o, "idleTimeoutMs", 1ull << 31, &idle) ||
        !GetUint(o, "pipeSize", 1u << 30, &pipeSize) || !GetUint(o, "backlog", 1u << 20, &backlog) ||
        !GetUint(o, "copyBufferSize", 1u << 26, &copyBuf) || !GetUint(o, "pipePoolMax", 1u << 20, &pool) ||
        !GetUint(o, "pipeIdleMs", 1u << 30, &pipeIdle) || !GetString(o, "selection", false, &selection) ||
        !GetString(o, "mode", false, &mode) || !GetString(o, "events", false, &events) ||
        !GetString(o, "tunnelAddress", false, &cfg.tunnelAddress) || !GetUint(o, "tunnelPort", 65535, &tport) ||
        !GetUint(o, "handshakeTimeoutMs", 3600000, &hto) || !GetUint(o, "maxPendingHandshakes", 1u << 30, &maxPending) ||
        !GetUint(o, "tlsBufferSize", 1u << 26, &tlsBuf) || !GetUint(o, "maxPendingJoins", 1u << 30, &maxJoins) ||
        !GetUint(o, "joinRatePerSec", 1u << 30, &joinRate) || !GetUint(o, "keepaliveMs", 3600000, &ka) ||
        !GetUint(o, "keepaliveDeadMs", 3600000, &kaDead) || !GetUint(o, "reconnectMaxMs", 3600000, &reconnMax)) {
      return;
    }
    cfg.maxPendingJoins = static_cast<uint32_t>(maxJoins);
    cfg.joinRatePerSec = static_cast<uint32_t>(joinRate);
    cfg.keepaliveMs = static_cast<uint32_t>(ka);
    cfg.keepaliveDeadMs = static_cast<uint32_t>(kaDead);
    cfg.reconnectMaxMs = static_cast<uint32_t>(reconnMax);
    cfg.tunnelPort = static_cast<uint16_t>(tport);
    cfg.handshakeTimeoutMs = static_cast<uint32_t>(hto);
    cfg.maxPendingHandshakes = static_cast<uint32_t>(maxPending);
    cfg.tlsBufferSize = static_cast<uint32_t>(tlsBuf);
    if (edgemesh::TypeFail(env, selection.empty() || selection == "round-robin" || selection == "random",
                           "selection must be 'round-robin' or 'random'") ||
        edgemesh::TypeFail(env, mode.empty() || mode == "splice" || mode == "copy", "mode must be 'splice' or 'copy'") ||
        edgemesh::TypeFail(env, events.empty() || events == "all" || events == "failures" || events == "none",
                           "events must be 'all', 'failures' or 'none'")) {
      return;
    }
    cfg.port = static_cast<uint16_t>(port);
    cfg.threads = static_cast<int>(threads);
    cfg.maxConnections = static_cast<uint32_t>(maxConn);
    cfg.connectTimeoutMs = static_cast<uint32_t>(cto);
    cfg.maxConnectAttempts = static_cast<uint32_t>(attempts);
    cfg.idleTimeoutMs = static_cast<uint32_t>(idle);
    cfg.pipeSize = static_cast<uint32_t>(pipeSize);
    cfg.backlog = static_cast<int>(backlog);
    cfg.copyBufferSize = static_cast<uint32_t>(copyBuf);
    cfg.pipePoolMax = static_cast<uint32_t>(pool);
    cfg.pipeIdleMs = static_cast<uint32_t>(pipeIdle);
    cfg.selection = selection == "random" ? edgemesh::Selection::kRandom : edgemesh::Selection::kRoundRobin;
    cfg.mode = mode == "copy" ? edgemesh::RelayMode::kCopy : edgemesh::RelayMode::kSplice;
    cfg.events = events == "none"       ? edgemesh::EventFilter::kNone
                 : events == "failures" ? edgemesh::EventFilter::kFailures
                                        : edgemesh::EventFilter::kAll;

    queue_ = new EventQueue();
    EventQueue* q = queue_;
    q->tsfn = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "edgemesh-relay-events", 0, 1, q,
                                            [](Napi::Env, EventQueue* ctx) { delete ctx; });
    auto sink = [q](std::vector<ConnEvent>&& evs) {
      std::lock_guard<std::mutex> g(q->mu);
      if (q->closed) return;
      if (q->pending.empty()) {
        q->pending = std::move(evs);
      } else {
        for (auto& e : evs) q->pending.push_back(std::move(e));
      }
      if (!q->scheduled) {
        q->scheduled = true;
        q->tsfn.NonBlockingCall([q](Napi::Env env, Napi::Function cb) { Deliver(q, env, cb); });
      }
    };
    try {
      core_.reset(new edgemesh::Proxy(cfg, sink));
    } catch (const edgemesh::SysError& e) {
      ReleaseQueue();
      edgemesh::ToJsError(env, e).ThrowAsJavaScriptException();
      return;
    }
    env_ = env;
    onEvents_ = Napi::Persistent(info[1].As<Napi::Function>());
    napi_add_env_cleanup_hook(env, &ProxyWrap::CleanupHook, this);
    hooked_ = true;
  }

  ~ProxyWrap() override {
    Teardown();
    if (hooked_) {
      napi_remove_env_cleanup_hook(env_, &ProxyWrap::CleanupHook, this);
      hooked_ = false;
    }
  }

 private:
  static void Deliver(EventQueue* q, Napi::Env env, Napi::Function cb) {
    std::vector<ConnEvent> evs;
    {
      std::lock_guard<std::mutex> g(q->mu);
      evs.swap(q->pending);
      q->scheduled = false;
    }
    if (env == nullptr || cb.IsEmpty() || evs.empty()) return;
    // While the environment is being torn down (worker_thread terminate, process exit) a
    // queued delivery can no longer run JS: node-addon-api then throws a C++ Napi::Error that
    // must not escape into libuv (std::terminate). The TS handler catches its own errors, so
    // this is the only way to get here; the events have nobody left to go to.
    try {
      Napi::HandleScope scope(env);
      Napi::Array arr = Napi::Array::New(env, evs.size());
      for (size_t i = 0; i < evs.size(); i++) arr.Set(static_cast<uint32_t>(i), EventToJs(env, evs[i]));
      cb.Call({arr});
    } catch (const Napi::Error&) {
    }
  }

  static void CleanupHook(void* arg) {
    auto* self = static_cast<ProxyWrap*>(arg);
    self->hooked_ = false;
    self->Teardown();
  }

  // Joins the workers (every fd closed, final events queued), then lets the TSFN drain and go.
  void Teardown() {
    if (core_) {
      core_->Shutdown();
      final_ = core_->Stats();
      core_.reset();
    }
    ReleaseQueue();
  }

  void ReleaseQueue() {
    if (!queue_) return;
    EventQueue* q = queue_;
    queue_ = nullptr;
    Napi::ThreadSafeFunction tsfn;
    {
      std::lock_guard<std::mutex> g(q->mu);
      q->closed = true;  // later sink calls (none once joined) would be dropped
      tsfn = q->tsfn;
    }
    tsfn.Release();  // q is deleted by the finalizer after the queued deliveries ran
  }

  bool Alive(Napi::Env env) {
    if (core_) return true;
    Napi::Error::New(env, "the proxy is closed").ThrowAsJavaScriptException();
    return false;
  }

  Napi::Value SetRoutes(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (edgemesh::TypeFail(env, info.Length() >= 1 && info[0].IsArray(), "setRoutes(routes): routes must be an array"))
      return env.Undefined();
    if (!Alive(env)) return env.Undefined();
    Napi::Array arr = info[0].As<Napi::Array>();
    auto table = std::make_shared<edgemesh::RouteTable>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value v = arr.Get(i);
      if (edgemesh::TypeFail(env, v.IsObject(), "routes[" + std::to_string(i) + "] must be an object")) return env.Undefined();
      Napi::Object r = v.As<Napi::Object>();
      std::string ip, service, serviceName;
      uint64_t port = 0, timeout = 10800;
      if (!GetString(r, "ip", true, &ip) || !GetUint(r, "port", 65535, &port) || !GetString(r, "service", false, &service) ||
          !GetString(r, "serviceName", false, &serviceName) || !GetUint(r, "affinityTimeoutSeconds", 1u << 30, &timeout)) {
        return env.Undefined();
      }
      edgemesh::SockAddr key;
      if (edgemesh::TypeFail(env, edgemesh::ParseSockAddr(ip, static_cast<uint16_t>(port), &key),
                             "routes[" + std::to_string(i) + "].ip is not an IP address: " + ip)) {
        return env.Undefined();
      }
      auto entry = std::make_unique<edgemesh::RouteEntry>();
      entry->service = service;
      entry->serviceName = serviceName;
      entry->servicePort = static_cast<uint16_t>(port);
      entry->affinityTimeoutSec = static_cast<uint32_t>(timeout);
      Napi::Value aff = r.Get("clientIPAffinity");
      if (edgemesh::TypeFail(env, aff.IsUndefined() || aff.IsBoolean(), "clientIPAffinity must be a boolean")) return env.Undefined();
      entry->clientIpAffinity = aff.IsBoolean() && aff.As<Napi::Boolean>().Value();
      Napi::Value eps = r.Get("endpoints");
      if (edgemesh::TypeFail(env, eps.IsArray(), "routes[" + std::to_string(i) + "].endpoints must be an array")) return env.Undefined();
      Napi::Array ea = eps.As<Napi::Array>();
      for (uint32_t j = 0; j < ea.Length(); j++) {
        Napi::Value ev = ea.Get(j);
        if (edgemesh::TypeFail(env, ev.IsObject(), "endpoints must be objects")) return env.Undefined();
        std::string eip, path, tip;
        uint64_t eport = 0, tport = 0;
        Napi::Object eo = ev.As<Napi::Object>();
        if (!GetString(eo, "ip", true, &eip) || !GetUint(eo, "port", 65535, &eport) || !GetString(eo, "path", false, &path))
          return env.Undefined();
        edgemesh::RouteEndpoint ep;
        if (edgemesh::TypeFail(env, edgemesh::ParseSockAddr(eip, static_cast<uint16_t>(eport), &ep.addr),
                               "endpoint ip is not an IP address: " + eip)) {
          return env.Undefined();
        }
        ep.text = ep.addr.ToString();
        if (edgemesh::TypeFail(env, path.empty() || path == "direct" || path == "local" || path == "tunnel" || path == "relay",
                               "endpoint path must be 'direct', 'local', 'tunnel' or 'relay'")) {
          return env.Undefined();
        }
        ep.path = path == "tunnel"  ? edgemesh::EndpointPath::kTunnel
                  : path == "relay" ? edgemesh::EndpointPath::kRelay
                  : path == "local" ? edgemesh::EndpointPath::kLocal
                                    : edgemesh::EndpointPath::kDirect;
        if (!GetString(eo, "node", false, &ep.node)) return env.Undefined();
        if (ep.path == edgemesh::EndpointPath::kTunnel) {
          Napi::Value t = eo.Get("tunnel");
          if (edgemesh::TypeFail(env, t.IsObject() && !ep.node.empty(), "a tunnel endpoint needs node and tunnel {address, port}"))
            return env.Undefined();
          if (!GetString(t.As<Napi::Object>(), "address", true, &tip) || !GetUint(t.As<Napi::Object>(), "port", 65535, &tport))
            return env.Undefined();
          if (edgemesh::TypeFail(env, edgemesh::ParseSockAddr(tip, static_cast<uint16_t>(tport), &ep.tunnel) && tport != 0,
                                 "tunnel address is not an IP address and port: " + tip)) {
            return env.Undefined();
          }
        }
        if (ep.path == edgemesh::EndpointPath::kRelay) {
          Napi::Value rl = eo.Get("relays");
          if (edgemesh::TypeFail(env, rl.IsArray() && rl.As<Napi::Array>().Length() > 0 && !ep.node.empty(),
                                 "a relay endpoint needs node and relays [{address, port}]"))
            return env.Undefined();
          if (!ParseAddrList(rl.As<Napi::Array>(), "relays", &ep.relays)) return env.Undefined();
        }
        entry->endpoints.push_back(std::move(ep));
      }
      if (edgemesh::TypeFail(env, table->Add(key, std::move(entry)), "duplicate route for " + key.ToString())) return env.Undefined();
    }
    core_->SetRoutes(std::move(table));
    return env.Undefined();
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    // After close: the counters as they stood when the last connection was ended.
    edgemesh::ProxyStats s = core_ ? core_->Stats() : final_;
    Napi::Object o = Napi::Object::New(env);
    o.Set("active", static_cast<double>(s.active));
    o.Set("accepted", static_cast<double>(s.accepted));
    o.Set("relayed", static_cast<double>(s.relayed));
    o.Set("bytesUp", static_cast<double>(s.bytesUp));
    o.Set("bytesDown", static_cast<double>(s.bytesDown));
    o.Set("failovers", static_cast<double>(s.failovers));
    o.Set("connectFailures", static_cast<double>(s.connectFailures));
    Napi::Object refused = Napi::Object::New(env);
    for (int i = 1; i < static_cast<int>(edgemesh::Refusal::kCount); i++) {
      refused.Set(edgemesh::RefusalName(static_cast<edgemesh::Refusal>(i)), static_cast<double>(s.refused[i]));
    }
    o.Set("refused", refused);
    Napi::Object ended = Napi::Object::New(env);
    for (int i = 0; i < 7; i++) ended.Set(edgemesh::EndReasonName(static_cast<edgemesh::EndReason>(i)), static_cast<double>(s.ended[i]));
    o.Set("ended", ended);
    o.Set("acceptErrors", static_cast<double>(s.acceptErrors));
    o.Set("acceptBackoffs", static_cast<double>(s.acceptBackoffs));
    o.Set("handoffs", static_cast<double>(s.handoffs));
    o.Set("pipesCreated", static_cast<double>(s.pipesCreated));
    o.Set("pipesReused", static_cast<double>(s.pipesReused));
    o.Set("spliceFallbacks", static_cast<double>(s.spliceFallbacks));
    o.Set("pipeSize", s.pipeSize);
    const edgemesh::TunnelStats& t = s.tunnel;
    Napi::Object tun = Napi::Object::New(env);
    tun.Set("dialed", static_cast<double>(t.dialed));
    tun.Set("dialOk", static_cast<double>(t.dialOk));
    tun.Set("dialConnectFailed", static_cast<double>(t.dialConnectFailed));
    tun.Set("inAccepted", static_cast<double>(t.inAccepted));
    tun.Set("inOk", static_cast<double>(t.inOk));
    tun.Set("resumed", static_cast<double>(t.resumed));
    tun.Set("ktls", static_cast<double>(t.ktls));
    tun.Set("pending", static_cast<double>(t.pending));
    tun.Set("pendingLimit", static_cast<double>(t.pendingLimit));
    tun.Set("bytesOut", static_cast<double>(t.bytesOut));
    tun.Set("bytesIn", static_cast<double>(t.bytesIn));
    Napi::Object dialTls = Napi::Object::New(env), inTls = Napi::Object::New(env);
    for (int i = 1; i < static_cast<int>(edgemesh::TlsFail::kCount); i++) {
      const char* n = edgemesh::TlsFailName(static_cast<edgemesh::TlsFail>(i));
      dialTls.Set(n, static_cast<double>(t.dialTlsFail[i]));
      inTls.Set(n, static_cast<double>(t.inTlsFail[i]));
    }
    Napi::Object dialRef = Napi::Object::New(env), inRef = Napi::Object::New(env);
    for (int i = 1; i < static_cast<int>(edgemesh::TunnelStatus::kCount); i++) {
      const char* n = edgemesh::TunnelStatusName(static_cast<edgemesh::TunnelStatus>(i));
      dialRef.Set(n, static_cast<double>(t.dialRefused[i]));
      inRef.Set(n, static_cast<double>(t.inRefused[i]));
    }
    Napi::Object relayRef = Napi::Object::New(env), dialJoinRef = Napi::Object::New(env);
    for (int i = 1; i < static_cast<int>(edgemesh::TunnelStatus::kCount); i++) {
      const char* n = edgemesh::TunnelStatusName(static_cast<edgemesh::TunnelStatus>(i));
      relayRef.Set(n, static_cast<double>(t.relayJoinsRefused[i]));
      dialJoinRef.Set(n, static_cast<double>(t.dialJoinRefused[i]));
    }
    tun.Set("relayJoinsOk", static_cast<double>(t.relayJoinsOk));
    tun.Set("relayJoinsRefused", relayRef);
    tun.Set("relayUnknownToken", static_cast<double>(t.relayUnknownToken));
    tun.Set("relayRateLimited", static_cast<double>(t.relayRateLimited));
    tun.Set("relayBytes", static_cast<double>(t.relayBytes));
    tun.Set("registered", static_cast<double>(t.registered));
    tun.Set("pendingJoins", static_cast<double>(t.pendingJoins));
    tun.Set("dialJoinOk", static_cast<double>(t.dialJoinOk));
    tun.Set("dialJoinRefused", dialJoinRef);
    tun.Set("dataConns", static_cast<double>(t.dataConns));
    tun.Set("dataConnsFailed", static_cast<double>(t.dataConnsFailed));
    tun.Set("dialHandshakeFailures", dialTls);
    tun.Set("inHandshakeFailures", inTls);
    tun.Set("dialRefused", dialRef);
    tun.Set("inRefused", inRef);
    o.Set("tunnel", tun);
    return o;
  }

  // setTunnelCredentials({ca, cert, key} PEM strings | null): builds a new generation (new
  // connections use it; live ones keep theirs). Returns {node, serial, notAfter}.
  Napi::Value SetTunnelCredentials(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (edgemesh::TypeFail(env, info.Length() >= 1 && (info[0].IsObject() || info[0].IsNull()),
                           "setTunnelCredentials(pem): pem must be {ca, cert, key} or null")) {
      return env.Undefined();
    }
    if (!Alive(env)) return env.Undefined();
    if (info[0].IsNull()) {
      core_->SetTunnelCreds(nullptr);
      return env.Undefined();
    }
    Napi::Object o = info[0].As<Napi::Object>();
    edgemesh::TlsPem pem;
    if (!GetString(o, "ca", true, &pem.ca, edgemesh::args::kMaxPem) || !GetString(o, "cert", true, &pem.cert, edgemesh::args::kMaxPem) ||
        !GetString(o, "key", true, &pem.key, edgemesh::args::kMaxPem))
      return env.Undefined();
    std::shared_ptr<edgemesh::TlsCreds> creds;
    try {
      creds = edgemesh::TlsCreds::Build(pem, core_->Ktls().available);
    } catch (const edgemesh::SysError& e) {
      edgemesh::ToJsError(env, e).ThrowAsJavaScriptException();
      return env.Undefined();
    }
    Napi::Object out = Napi::Object::New(env);
    out.Set("node", creds->selfName());
    out.Set("serial", creds->serial());
    out.Set("notAfter", creds->notAfter());
    core_->SetTunnelCreds(std::move(creds));
    return out;
  }

  // setLocalServe([{service: "ns/name", port, endpoints: [{ip, port}]}]): what peers may ask for.
  Napi::Value SetLocalServe(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (edgemesh::TypeFail(env, info.Length() >= 1 && info[0].IsArray(), "setLocalServe(list): list must be an array"))
      return env.Undefined();
    if (!Alive(env)) return env.Undefined();
    Napi::Array arr = info[0].As<Napi::Array>();
    auto table = std::make_shared<edgemesh::LocalServeTable>();
    for (uint32_t i = 0; i < arr.Length(); i++) {
      Napi::Value v = arr.Get(i);
      if (edgemesh::TypeFail(env, v.IsObject(), "setLocalServe: list[" + std::to_string(i) + "] must be an object")) return env.Undefined();
      Napi::Object e = v.As<Napi::Object>();
      std::string service;
      uint64_t port = 0;
      if (!GetString(e, "service", true, &service) || !GetUint(e, "port", 65535, &port)) return env.Undefined();
      Napi::Value eps = e.Get("endpoints");
      if (edgemesh::TypeFail(env, eps.IsArray(), "setLocalServe: list[" + std::to_string(i) + "].endpoints must be an array"))
        return env.Undefined();
      Napi::Array ea = eps.As<Napi::Array>();
      for (uint32_t j = 0; j < ea.Length(); j++) {
        Napi::Value ev = ea.Get(j);
        if (edgemesh::TypeFail(env, ev.IsObject(), "setLocalServe: endpoints must be objects")) return env.Undefined();
        std::string ip;
        uint64_t eport = 0;
        if (!GetString(ev.As<Napi::Object>(), "ip", true, &ip) || !GetUint(ev.As<Napi::Object>(), "port", 65535, &eport))
          return env.Undefined();
        edgemesh::SockAddr a;
        if (edgemesh::TypeFail(env, edgemesh::ParseSockAddr(ip, static_cast<uint16_t>(eport), &a),
                               "setLocalServe: endpoint ip is not an IP address: " + ip))
          return env.Undefined();
        table->Add(service, static_cast<uint16_t>(port), a);
      }
    }
    core_->SetLocalServe(std::move(table));
    return env.Undefined();
  }

  Napi::Value Peers(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<edgemesh::PeerInfo> list = core_ ? core_->Peers() : std::vector<edgemesh::PeerInfo>();
    Napi::Array arr = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); i++) {
      const auto& p = list[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("node", p.node);
      o.Set("direction", p.direction);
      o.Set("address", p.address);
      o.Set("lastResult", p.lastResult);
      o.Set("lastAt", p.lastAtMs);
      o.Set("ok", static_cast<double>(p.ok));
      o.Set("handshakeFailed", static_cast<double>(p.handshakeFailed));
      o.Set("refused", static_cast<double>(p.refused));
      o.Set("connectFailed", static_cast<double>(p.connectFailed));
      o.Set("resumed", static_cast<double>(p.resumed));
      arr.Set(static_cast<uint32_t>(i), o);
    }
    return arr;
  }

  Napi::Value TunnelAddress(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    edgemesh::SockAddr a = core_->TunnelAddress();
    if (a.family() == 0) return env.Null();
    edgemesh::SockEndpoint e = a.ToEndpoint();
    Napi::Object o = Napi::Object::New(env);
    o.Set("address", e.address);
    o.Set("port", e.port);
    o.Set("family", e.family);
    return o;
  }

  // setRelays([{address, port}]): the relays this node keeps a session with ([]: none).
  Napi::Value SetRelays(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (edgemesh::TypeFail(env, info.Length() >= 1 && info[0].IsArray(), "setRelays(list): list must be an array")) return env.Undefined();
    if (!Alive(env)) return env.Undefined();
    std::vector<edgemesh::SockAddr> relays;
    if (!ParseAddrList(info[0].As<Napi::Array>(), "setRelays", &relays)) return env.Undefined();
    core_->SetRelays(std::move(relays));
    return env.Undefined();
  }

  Napi::Value Registrations(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<edgemesh::RegistrationInfo> list = core_ ? core_->Registrations() : std::vector<edgemesh::RegistrationInfo>();
    Napi::Array arr = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); i++) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("node", list[i].node);
      o.Set("address", list[i].address);
      o.Set("since", list[i].sinceMs);
      arr.Set(static_cast<uint32_t>(i), o);
    }
    return arr;
  }

  Napi::Value Sessions(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<edgemesh::SessionInfo> list = core_ ? core_->Sessions() : std::vector<edgemesh::SessionInfo>();
    Napi::Array arr = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); i++) {
      const auto& x = list[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("relay", x.relay);
      o.Set("state", x.state);
      o.Set("lastError", x.lastError);
      o.Set("relayNode", x.relayNode);
      o.Set("since", x.sinceMs);
      o.Set("connects", static_cast<double>(x.connects));
      o.Set("failures", static_cast<double>(x.failures));
      o.Set("notifies", static_cast<double>(x.notifies));
      arr.Set(static_cast<uint32_t>(i), o);
    }
    return arr;
  }

  Napi::Value Ktls(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    Napi::Object o = Napi::Object::New(env);
    o.Set("available", core_->Ktls().available);
    o.Set("reason", core_->Ktls().reason);
    return o;
  }

  Napi::Value Cancel(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (edgemesh::TypeFail(env, info.Length() >= 1 && info[0].IsNumber(), "cancel(id): id must be a number")) return env.Undefined();
    if (!Alive(env)) return env.Undefined();
    double d = info[0].As<Napi::Number>().DoubleValue();
    if (d >= 1 && d <= 9007199254740991.0) core_->Cancel(static_cast<uint64_t>(d));
    return env.Undefined();
  }

  Napi::Value Connections(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    std::vector<edgemesh::ConnInfo> list = core_->List();
    Napi::Array arr = Napi::Array::New(env, list.size());
    for (size_t i = 0; i < list.size(); i++) {
      const auto& c = list[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("id", static_cast<double>(c.id));
      o.Set("client", c.client);
      o.Set("originalDst", c.originalDst);
      o.Set("service", c.service);
      o.Set("endpoint", c.endpoint);
      o.Set("state", c.connecting ? "connecting" : "relaying");
      o.Set("bytesUp", static_cast<double>(c.bytesUp));
      o.Set("bytesDown", static_cast<double>(c.bytesDown));
      o.Set("ageMs", c.ageMs);
      o.Set("worker", c.worker);
      if (!c.path.empty()) o.Set("path", c.path);
      if (!c.peer.empty()) o.Set("peer", c.peer);
      arr.Set(static_cast<uint32_t>(i), o);
    }
    return arr;
  }

  Napi::Value StopAccepting(const Napi::CallbackInfo& info) {
    if (core_) core_->StopAccepting();
    return info.Env().Undefined();
  }

  // Synchronous: stops everything, then hands the last events (cancelled connections) to
  // onEvents before returning, so the caller sees every connection's end.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    if (core_) {
      core_->Shutdown();
      final_ = core_->Stats();
      core_.reset();
    }
    if (queue_ && !onEvents_.IsEmpty()) Deliver(queue_, info.Env(), onEvents_.Value());
    Teardown();
    if (hooked_) {
      napi_remove_env_cleanup_hook(env_, &ProxyWrap::CleanupHook, this);
      hooked_ = false;
    }
    return info.Env().Undefined();
  }

  Napi::Value Address(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (!Alive(env)) return env.Undefined();
    edgemesh::SockEndpoint e = core_->LocalAddress().ToEndpoint();
    Napi::Object o = Napi::Object::New(env);
    o.Set("address", e.address);
    o.Set("port", e.port);
    o.Set("family", e.family);
    return o;
  }

  Napi::Value Ref(const Napi::CallbackInfo& info) {
    if (queue_) queue_->tsfn.Ref(info.Env());
    return info.Env().Undefined();
  }

  Napi::Value Unref(const Napi::CallbackInfo& info) {
    if (queue_) queue_->tsfn.Unref(info.Env());
    return info.Env().Undefined();
  }

  std::unique_ptr<edgemesh::Proxy> core_;
  Napi::FunctionReference onEvents_;
  edgemesh::ProxyStats final_;
  EventQueue* queue_ = nullptr;
  napi_env env_ = nullptr;
  bool hooked_ = false;
};

Napi::Value RaiseNofile(const Napi::CallbackInfo& info) {
  uint64_t soft = 0, hard = 0;
  edgemesh::RaiseNofileLimit(&soft, &hard);
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("soft", static_cast<double>(soft));
  o.Set("hard", static_cast<double>(hard));
  return o;
}

// checkTunnelCredentials({ca, cert, key}): builds them once, without a proxy (start-up checks
// that must fail before anything is changed). Returns {node, serial, notAfter}.
Napi::Value CheckTunnelCredentials(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (edgemesh::TypeFail(env, info.Length() >= 1 && info[0].IsObject(), "checkTunnelCredentials(pem): pem must be {ca, cert, key}"))
    return env.Undefined();
  Napi::Object o = info[0].As<Napi::Object>();
  edgemesh::TlsPem pem;
  if (!GetString(o, "ca", true, &pem.ca, edgemesh::args::kMaxPem) || !GetString(o, "cert", true, &pem.cert, edgemesh::args::kMaxPem) ||
      !GetString(o, "key", true, &pem.key, edgemesh::args::kMaxPem))
    return env.Undefined();
  try {
    auto creds = edgemesh::TlsCreds::Build(pem, false);
    Napi::Object out = Napi::Object::New(env);
    out.Set("node", creds->selfName());
    out.Set("serial", creds->serial());
    out.Set("notAfter", creds->notAfter());
    return out;
  } catch (const edgemesh::SysError& e) {
    edgemesh::ToJsError(env, e).ThrowAsJavaScriptException();
    return env.Undefined();
  }
}

void Init(Napi::Env env, Napi::Object exports) {
  exports.Set("Proxy", ProxyWrap::Define(env));
  exports.Set("checkTunnelCredentials", Napi::Function::New(env, CheckTunnelCredentials, "checkTunnelCredentials"));
  exports.Set("raiseNofileLimit", Napi::Function::New(env, RaiseNofile, "raiseNofileLimit"));
}

}  // namespace

EDGEMESH_REGISTER_MODULE(relay, Init);
