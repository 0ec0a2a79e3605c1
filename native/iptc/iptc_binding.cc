// Thin N-API layer over iptc_core: JS arguments -> plain structs (TypeError on any wrong type),
// the work on the libuv pool (PromiseWorker), plain structs -> JS objects.
//
//   iptcInfo(family, netnsPath, digest?)     -> Promise<{ size, entries, present, builtinLayout, headDigest }>
//   iptcRead(family, chains, netnsPath)      -> Promise<{ chains: [{ name, rules }], info }>
//   iptcApply(family, ops, options)          -> Promise<{ attempts, lockWaitMs, durationMs }>
//   iptcLockWatch(lockfile?) -> id; iptcLockEvents(id) -> n; iptcLockUnwatch(id)   (synchronous, non-blocking)
#include <napi.h>

#include <map>
#include <memory>

#include "iptc/iptc_core.h"
#include "common/module_registry.h"
#include "common/napi_args.h"
#include "common/napi_util.h"
#include "rules/rule_args.h"

namespace edgemesh {
namespace {

using iptc::Family;

constexpr uint32_t kMaxOps = 1u << 20;

using args::Arr;
using args::ArgError;
using args::Int;
using args::Obj;
using args::OptStr;
using args::Str;
using args::Where;

Family FamilyArg(Napi::Value v) { return args::FamilyArg(v, Where{"family"}); }

std::string NetnsArg(Napi::Value v) {
  if (v.IsUndefined() || v.IsNull()) return "";
  return Str(v, Where{"netnsPath"});
}

Napi::Object InfoToJs(Napi::Env env, const iptc::TableInfo& i) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("size", Napi::Number::New(env, static_cast<double>(i.size)));
  o.Set("entries", Napi::Number::New(env, static_cast<double>(i.entries)));
  o.Set("present", Napi::Boolean::New(env, i.present));
  o.Set("builtinLayout", Napi::String::New(env, i.builtinLayout));
  o.Set("headDigest", Napi::String::New(env, i.headDigest));
  o.Set("digestCpuMs", Napi::Number::New(env, i.digestCpuMs));
  return o;
}

Napi::Object SnapshotToJs(Napi::Env e, const iptc::Snapshot& s) {
  Napi::Object o = Napi::Object::New(e);
  Napi::Array cs = Napi::Array::New(e, s.chains.size());
  for (uint32_t i = 0; i < s.chains.size(); i++) {
    Napi::Object c = Napi::Object::New(e);
    c.Set("name", s.chains[i].name);
    Napi::Array rules = Napi::Array::New(e, s.chains[i].rules.size());
    for (uint32_t j = 0; j < s.chains[i].rules.size(); j++) rules.Set(j, args::RuleToJs(e, s.chains[i].rules[j], false));
    c.Set("rules", rules);
    cs.Set(i, c);
  }
  o.Set("chains", cs);
  o.Set("info", InfoToJs(e, s.info));
  return o;
}

Napi::Value ApplyResultToJs(Napi::Env e, const iptc::ApplyResult& r) {
  Napi::Object o = Napi::Object::New(e);
  o.Set("attempts", Napi::Number::New(e, r.attempts));
  o.Set("lockWaitMs", Napi::Number::New(e, r.lockWaitMs));
  o.Set("durationMs", Napi::Number::New(e, r.durationMs));
  o.Set("tokenAfter", Napi::String::New(e, std::to_string(r.sizeAfter) + "/" + std::to_string(r.entriesAfter) + "/" + r.headDigestAfter));
  o.Set("builtinLayoutAfter", Napi::String::New(e, r.builtinLayoutAfter + "#" + r.headDigestAfter));
  return o;
}

std::vector<std::string> ChainsArg(Napi::Value v) {
  const Where w{"chains"};
  Napi::Array arr = Arr(v, w, 4096);
  std::vector<std::string> chains;
  for (uint32_t i = 0; i < arr.Length(); i++) chains.push_back(Str(arr.Get(i), w.at(i)));
  return chains;
}

std::shared_ptr<std::vector<iptc::Op>> OpsArg(Napi::Value v) {
  return std::make_shared<std::vector<iptc::Op>>(args::OpsArg(v, Where{"ops"}, kMaxOps));
}

iptc::ApplyOptions OptionsArg(Napi::Value v) {
  iptc::ApplyOptions opts;
  if (v.IsUndefined()) return opts;
  const Where w{"options"};
  Napi::Object o = Obj(v, w);
  OptStr(o, "lockfile", w, opts.lockfile);
  if (!o.Get("lockWaitMs").IsUndefined()) opts.lockWaitMs = Int(o.Get("lockWaitMs"), w.field("lockWaitMs"), 0, 3600000);
  if (!o.Get("lockIntervalMs").IsUndefined()) opts.lockIntervalMs = Int(o.Get("lockIntervalMs"), w.field("lockIntervalMs"), 1, 60000);
  if (!o.Get("maxAttempts").IsUndefined()) opts.maxAttempts = static_cast<int>(Int(o.Get("maxAttempts"), w.field("maxAttempts"), 1, 1000));
  opts.netnsPath = NetnsArg(o.Get("netnsPath"));
  return opts;
}

uint64_t SessionArg(Napi::Value v) { return static_cast<uint64_t>(Int(v, Where{"session"}, 1, 9007199254740991LL)); }

Napi::Value TypeErrorValue(Napi::Env env, const ArgError& e) {
  TypeFail(env, false, e.message);
  return env.Undefined();
}

Napi::Value IptcInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    Family f = FamilyArg(info[0]);
    std::string ns = NetnsArg(info[1]);
    bool digest = true;
    if (!info[2].IsUndefined()) {
      if (!info[2].IsBoolean()) throw ArgError{"digest must be a boolean"};
      digest = info[2].As<Napi::Boolean>().Value();
    }
    return PromiseWorker<iptc::TableInfo>::Run(
        env, "iptcInfo", [f, ns, digest]() { return iptc::Info(f, ns, digest); },
        [](Napi::Env e, iptc::TableInfo& r) -> Napi::Value { return InfoToJs(e, r); });
  } catch (const ArgError& e) {
    return TypeErrorValue(env, e);
  }
}

Napi::Value IptcRead(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    Family f = FamilyArg(info[0]);
    std::vector<std::string> chains = ChainsArg(info[1]);
    std::string ns = NetnsArg(info[2]);
    return PromiseWorker<iptc::Snapshot>::Run(
        env, "iptcRead", [f, chains, ns]() { return iptc::Read(f, chains, ns); },
        [](Napi::Env e, iptc::Snapshot& s) -> Napi::Value { return SnapshotToJs(e, s); });
  } catch (const ArgError& e) {
    return TypeErrorValue(env, e);
  }
}

Napi::Value IptcApply(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    Family f = FamilyArg(info[0]);
    auto ops = OpsArg(info[1]);
    iptc::ApplyOptions opts = OptionsArg(info[2]);
    return PromiseWorker<iptc::ApplyResult>::Run(
        env, "iptcApply", [f, ops, opts]() { return iptc::Apply(f, std::move(*ops), opts); }, ApplyResultToJs);
  } catch (const ArgError& e) {
    return TypeErrorValue(env, e);
  }
}

// iptcBegin(family, chains, options) -> Promise<{ session, snapshot }>: lock taken, table read once.
Napi::Value IptcBegin(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    Family f = FamilyArg(info[0]);
    std::vector<std::string> chains = ChainsArg(info[1]);
    iptc::ApplyOptions opts = OptionsArg(info[2]);
    return PromiseWorker<iptc::BeginResult>::Run(
        env, "iptcBegin", [f, chains, opts]() { return iptc::Begin(f, chains, opts); },
        [](Napi::Env e, iptc::BeginResult& r) -> Napi::Value {
          Napi::Object o = Napi::Object::New(e);
          o.Set("session", Napi::Number::New(e, static_cast<double>(r.session)));
          o.Set("snapshot", SnapshotToJs(e, r.snapshot));
          return o;
        });
  } catch (const ArgError& e) {
    return TypeErrorValue(env, e);
  }
}

// iptcCommit(session, ops) -> Promise<ApplyResult>: ends the session.
Napi::Value IptcCommit(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    uint64_t session = SessionArg(info[0]);
    auto ops = OpsArg(info[1]);
    return PromiseWorker<iptc::ApplyResult>::Run(
        env, "iptcCommit", [session, ops]() { return iptc::CommitSession(session, std::move(*ops)); }, ApplyResultToJs);
  } catch (const ArgError& e) {
    return TypeErrorValue(env, e);
  }
}

// iptcAbort(session) -> Promise<void>: ends the session without writing.
Napi::Value IptcAbort(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    uint64_t session = SessionArg(info[0]);
    return PromiseWorker<bool>::Run(
        env, "iptcAbort",
        [session]() {
          iptc::AbortSession(session);
          return true;
        },
        [](Napi::Env e, bool&) -> Napi::Value { return e.Undefined(); });
  } catch (const ArgError& e) {
    return TypeErrorValue(env, e);
  }
}

// Lock watches, by id. Only the JS thread touches them (every call is synchronous and
// non-blocking: an inotify descriptor opened O_NONBLOCK).
std::map<uint32_t, std::unique_ptr<iptc::LockWatch>>& LockWatches() {
  static std::map<uint32_t, std::unique_ptr<iptc::LockWatch>> m;
  return m;
}

uint32_t WatchArg(Napi::Value v) { return static_cast<uint32_t>(Int(v, Where{"watch"}, 1, 0xffffffffLL)); }

// iptcLockWatch(lockfile) -> id: starts noticing opens and closes of the xtables lock file.
Napi::Value IptcLockWatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    std::string path = iptc::LockFilePath(info[0].IsUndefined() ? "" : Str(info[0], Where{"lockfile"}));
    static uint32_t next = 1;
    auto w = std::make_unique<iptc::LockWatch>(path);
    uint32_t id = next++;
    LockWatches()[id] = std::move(w);
    return Napi::Number::New(env, id);
  } catch (const ArgError& e) {
    return TypeErrorValue(env, e);
  } catch (const SysError& e) {
    ToJsError(env, e).ThrowAsJavaScriptException();
    return env.Undefined();
  }
}

// iptcLockEvents(id) -> number of opens/closes since the last call.
Napi::Value IptcLockEvents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    auto it = LockWatches().find(WatchArg(info[0]));
    if (it == LockWatches().end()) throw ArgError{"no such lock watch (already closed)"};
    return Napi::Number::New(env, static_cast<double>(it->second->Drain()));
  } catch (const ArgError& e) {
    return TypeErrorValue(env, e);
  } catch (const SysError& e) {
    ToJsError(env, e).ThrowAsJavaScriptException();
    return env.Undefined();
  }
}

// iptcLockUnwatch(id): closes the watch (a second call is a no-op).
Napi::Value IptcLockUnwatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  try {
    LockWatches().erase(WatchArg(info[0]));
    return env.Undefined();
  } catch (const ArgError& e) {
    return TypeErrorValue(env, e);
  }
}

void InitIptc(Napi::Env env, Napi::Object exports) {
  exports.Set("iptcLockWatch", Napi::Function::New(env, IptcLockWatch, "iptcLockWatch"));
  exports.Set("iptcLockEvents", Napi::Function::New(env, IptcLockEvents, "iptcLockEvents"));
  exports.Set("iptcLockUnwatch", Napi::Function::New(env, IptcLockUnwatch, "iptcLockUnwatch"));
  exports.Set("iptcInfo", Napi::Function::New(env, IptcInfo, "iptcInfo"));
  exports.Set("iptcRead", Napi::Function::New(env, IptcRead, "iptcRead"));
  exports.Set("iptcApply", Napi::Function::New(env, IptcApply, "iptcApply"));
  exports.Set("iptcBegin", Napi::Function::New(env, IptcBegin, "iptcBegin"));
  exports.Set("iptcCommit", Napi::Function::New(env, IptcCommit, "iptcCommit"));
  exports.Set("iptcAbort", Napi::Function::New(env, IptcAbort, "iptcAbort"));
}

}  // namespace
}  // namespace edgemesh

EDGEMESH_REGISTER_MODULE(iptc, edgemesh::InitIptc);
