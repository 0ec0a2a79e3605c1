// Thin Node-API binding over nft_core: JS objects -> plain structs, work on the libuv pool,
// results back to JS. Wrong argument types throw TypeError synchronously; everything that
// touches the kernel runs off the JS thread and settles a Promise.
#include <napi.h>

#include <functional>
#include <linux/netfilter.h>

#include "common/module_registry.h"
#include "common/napi_args.h"
#include "common/napi_util.h"
#include "nft/nft_core.h"
#include "rules/rule_args.h"

namespace edgemesh {
namespace {

using namespace nft;

using args::Arr;
using args::ArgError;
using args::Obj;
using args::Str;
using args::Where;

constexpr uint32_t kMaxItems = 1u << 20;

// Optional string field, null or undefined meaning absent: "".
std::string OptStr(const Napi::Object& o, const char* key, const Where& w) {
  std::string out;
  args::OptStr(o, key, w, out, true);
  return out;
}

int Int(const Napi::Value& v, const Where& w) { return static_cast<int>(args::Int(v, w, INT32_MIN, INT32_MAX)); }

bool Present(const Napi::Value& v) { return !v.IsUndefined() && !v.IsNull(); }

uint8_t Family(const Napi::Value& v) {
  std::string f = Str(v, Where{"family"});
  if (f == "ipv4") return NFPROTO_IPV4;
  if (f == "ipv6") return NFPROTO_IPV6;
  throw ArgError{"family must be 'ipv4' or 'ipv6'"};
}

Dialect DialectOf(const Napi::Value& v) {
  std::string d = Str(v, Where{"dialect"});
  if (d == "xt") return Dialect::Xt;
  if (d == "nft") return Dialect::Native;
  throw ArgError{"dialect must be 'xt' or 'nft'"};
}

uint32_t HookOf(const std::string& h) {
  if (h == "prerouting") return NF_INET_PRE_ROUTING;
  if (h == "input") return NF_INET_LOCAL_IN;
  if (h == "output") return NF_INET_LOCAL_OUT;
  if (h == "postrouting") return NF_INET_POST_ROUTING;
  throw ArgError{"hook must be prerouting, input, output or postrouting"};
}

const char* HookName(uint32_t h) {
  switch (h) {
    case NF_INET_PRE_ROUTING: return "prerouting";
    case NF_INET_LOCAL_IN: return "input";
    case NF_INET_FORWARD: return "forward";
    case NF_INET_LOCAL_OUT: return "output";
    case NF_INET_POST_ROUTING: return "postrouting";
    default: return "unknown";
  }
}

const char* FamilyName(uint8_t f) {
  switch (f) {
    case NFPROTO_IPV4: return "ip";
    case NFPROTO_IPV6: return "ip6";
    case NFPROTO_INET: return "inet";
    case NFPROTO_ARP: return "arp";
    case NFPROTO_BRIDGE: return "bridge";
    case NFPROTO_NETDEV: return "netdev";
    default: return "unknown";
  }
}

Napi::Object ChainToJs(Napi::Env env, const ChainInfo& c) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", c.name);
  o.Set("handle", Napi::Number::New(env, static_cast<double>(c.handle)));
  o.Set("base", Napi::Boolean::New(env, c.base));
  if (c.base) {
    o.Set("hook", HookName(c.hook));
    o.Set("priority", Napi::Number::New(env, c.priority));
    o.Set("type", c.type);
    o.Set("policy", c.policy == NF_ACCEPT ? "accept" : c.policy == NF_DROP ? "drop" : "other");
  }
  o.Set("use", Napi::Number::New(env, c.use));
  Napi::Array rules = Napi::Array::New(env, c.rules.size());
  for (size_t i = 0; i < c.rules.size(); i++) rules.Set(static_cast<uint32_t>(i), args::RuleToJs(env, c.rules[i], true));
  o.Set("rules", rules);
  return o;
}

Napi::Object SetToJs(Napi::Env env, const SetInfo& s) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("name", s.name);
  o.Set("handle", Napi::Number::New(env, static_cast<double>(s.handle)));
  o.Set("keyType", Napi::Number::New(env, s.keyType));
  o.Set("keyLen", Napi::Number::New(env, s.keyLen));
  o.Set("flags", Napi::Number::New(env, s.flags));
  o.Set("counter", Napi::Boolean::New(env, s.counter));
  o.Set("ours", Napi::Boolean::New(env, s.ours));
  Napi::Array els = Napi::Array::New(env, s.elements.size());
  for (size_t i = 0; i < s.elements.size(); i++) {
    const SetElem& e = s.elements[i];
    Napi::Object x = Napi::Object::New(env);
    x.Set("key", e.key);
    if (e.hasComment) x.Set("comment", e.comment);
    x.Set("packets", Napi::Number::New(env, static_cast<double>(e.packets)));
    x.Set("bytes", Napi::Number::New(env, static_cast<double>(e.bytes)));
    if (e.unknown) x.Set("unknown", Napi::Boolean::New(env, true));
    els.Set(static_cast<uint32_t>(i), x);
  }
  o.Set("elements", els);
  return o;
}

SetSpec SetSpecOf(const Napi::Value& v, const Where& w) {
  Napi::Object o = Obj(v, w);
  SetSpec s;
  s.name = Str(o.Get("name"), w.field("name"));
  const Where we = w.field("elements");
  Napi::Array els = Arr(o.Get("elements"), we, kMaxItems);
  s.elements.reserve(els.Length());
  for (uint32_t i = 0; i < els.Length(); i++) {
    const Where wi = we.at(i);
    Napi::Object e = Obj(els.Get(i), wi);
    SetElem el;
    el.key = Str(e.Get("key"), wi.field("key"));
    el.hasComment = args::OptStr(e, "comment", wi, el.comment, true);
    s.elements.push_back(std::move(el));
  }
  return s;
}

// Runs `body`, turning an ArgError into a thrown TypeError.
Napi::Value Guard(const Napi::CallbackInfo& info, const std::function<Napi::Value()>& body) {
  try {
    return body();
  } catch (const ArgError& e) {
    Napi::TypeError::New(info.Env(), e.message).ThrowAsJavaScriptException();
    return info.Env().Undefined();
  }
}

std::string NetnsArg(const Napi::CallbackInfo& info, size_t i) {
  if (info.Length() <= i || info[i].IsUndefined() || info[i].IsNull()) return "";
  return Str(info[i], Where{"netns"});
}

Napi::Value GenIdJs(const Napi::CallbackInfo& info) {
  return Guard(info, [&]() -> Napi::Value {
    std::string ns = NetnsArg(info, 0);
    return PromiseWorker<uint32_t>::Run(
        info.Env(), "nftGenId", [ns] { return GetGenId(ns); },
        [](Napi::Env env, uint32_t& g) -> Napi::Value { return Napi::Number::New(env, g); });
  });
}

Napi::Value ReadJs(const Napi::CallbackInfo& info) {
  return Guard(info, [&]() -> Napi::Value {
    const Where w{"request"};
    Napi::Object o = Obj(info.Length() > 0 ? info[0] : info.Env().Undefined(), w);
    ReadRequest req;
    req.netns = OptStr(o, "netns", w);
    req.family = Family(o.Get("family"));
    req.table = Str(o.Get("table"), w.field("table"));
    req.dialect = DialectOf(o.Get("dialect"));
    Napi::Value chains = o.Get("chains");
    if (chains.IsUndefined() || chains.IsNull()) {
      req.allChains = true;
    } else {
      const Where wc = w.field("chains");
      Napi::Array a = Arr(chains, wc, kMaxItems);
      for (uint32_t i = 0; i < a.Length(); i++) req.chains.push_back(Str(a.Get(i), wc.at(i)));
    }
    Napi::Value sets = o.Get("sets");
    if (Present(sets)) {
      const Where ws = w.field("sets");
      Napi::Array a = Arr(sets, ws, kMaxItems);
      for (uint32_t i = 0; i < a.Length(); i++) req.sets.push_back(Str(a.Get(i), ws.at(i)));
    }
    Napi::Value wr = o.Get("withRules");
    if (!wr.IsUndefined()) {
      if (!wr.IsBoolean()) throw ArgError{"request.withRules must be a boolean"};
      req.withRules = wr.As<Napi::Boolean>().Value();
    }
    return PromiseWorker<ReadResult>::Run(
        info.Env(), "nftRead", [req] { return Read(req); },
        [](Napi::Env env, ReadResult& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("genid", Napi::Number::New(env, r.genid));
          out.Set("tableExists", Napi::Boolean::New(env, r.tableExists));
          Napi::Array chains = Napi::Array::New(env, r.chains.size());
          for (size_t i = 0; i < r.chains.size(); i++) chains.Set(static_cast<uint32_t>(i), ChainToJs(env, r.chains[i]));
          out.Set("chains", chains);
          Napi::Array sets = Napi::Array::New(env, r.sets.size());
          for (size_t i = 0; i < r.sets.size(); i++) sets.Set(static_cast<uint32_t>(i), SetToJs(env, r.sets[i]));
          out.Set("sets", sets);
          return out;
        });
  });
}

Napi::Value ApplyJs(const Napi::CallbackInfo& info) {
  return Guard(info, [&]() -> Napi::Value {
    const Where w{"request"};
    Napi::Object o = Obj(info.Length() > 0 ? info[0] : info.Env().Undefined(), w);
    ApplyRequest req;
    req.netns = OptStr(o, "netns", w);
    req.family = Family(o.Get("family"));
    req.table = Str(o.Get("table"), w.field("table"));
    req.dialect = DialectOf(o.Get("dialect"));
    Napi::Value bcs = o.Get("baseChains");
    if (!bcs.IsUndefined() && !bcs.IsNull()) {
      const Where wb = w.field("baseChains");
      Napi::Array a = Arr(bcs, wb, kMaxItems);
      for (uint32_t i = 0; i < a.Length(); i++) {
        const Where wi = wb.at(i);
        Napi::Object b = Obj(a.Get(i), wi);
        BaseChainSpec spec;
        spec.name = Str(b.Get("name"), wi.field("name"));
        spec.hook = HookOf(Str(b.Get("hook"), wi.field("hook")));
        spec.priority = Int(b.Get("priority"), wi.field("priority"));
        req.baseChains.push_back(spec);
      }
    }
    Napi::Value sets = o.Get("sets");
    if (Present(sets)) {
      const Where ws = w.field("sets");
      Napi::Array a = Arr(sets, ws, kMaxItems);
      for (uint32_t i = 0; i < a.Length(); i++) req.sets.push_back(SetSpecOf(a.Get(i), ws.at(i)));
    }
    req.ops = args::OpsArg(o.Get("ops"), w.field("ops"), kMaxItems);
    Napi::Value g = o.Get("genid");
    if (Present(g)) req.plannedGenid = static_cast<uint32_t>(args::Int(g, w.field("genid"), 0, UINT32_MAX));
    Napi::Value ma = o.Get("maxAttempts");
    if (!ma.IsUndefined()) req.maxAttempts = Int(ma, w.field("maxAttempts"));
    return PromiseWorker<ApplyResult>::Run(
        info.Env(), "nftApply", [req] { return Apply(req); },
        [](Napi::Env env, ApplyResult& r) -> Napi::Value {
          Napi::Object out = Napi::Object::New(env);
          out.Set("attempts", Napi::Number::New(env, r.attempts));
          out.Set("messages", Napi::Number::New(env, r.messages));
          out.Set("genid", Napi::Number::New(env, r.genid));
          return out;
        });
  });
}

Napi::Value DeleteTableJs(const Napi::CallbackInfo& info) {
  return Guard(info, [&]() -> Napi::Value {
    std::string ns = NetnsArg(info, 0);
    if (info.Length() < 3) throw ArgError{"nftDeleteTable(netns, family, table)"};
    uint8_t family = Family(info[1]);
    std::string table = Str(info[2], Where{"table"});
    return PromiseWorker<bool>::Run(
        info.Env(), "nftDeleteTable", [ns, family, table] { return DeleteTable(ns, family, table); },
        [](Napi::Env env, bool& b) -> Napi::Value { return Napi::Boolean::New(env, b); });
  });
}

Napi::Value ListTablesJs(const Napi::CallbackInfo& info) {
  return Guard(info, [&]() -> Napi::Value {
    std::string ns = NetnsArg(info, 0);
    return PromiseWorker<std::vector<TableName>>::Run(
        info.Env(), "nftListTables", [ns] { return ListTables(ns); },
        [](Napi::Env env, std::vector<TableName>& ts) -> Napi::Value {
          Napi::Array a = Napi::Array::New(env, ts.size());
          for (size_t i = 0; i < ts.size(); i++) {
            Napi::Object t = Napi::Object::New(env);
            t.Set("family", FamilyName(ts[i].family));
            t.Set("name", ts[i].name);
            a.Set(static_cast<uint32_t>(i), t);
          }
          return a;
        });
  });
}

Napi::Value RawRulesJs(const Napi::CallbackInfo& info) {
  return Guard(info, [&]() -> Napi::Value {
    std::string ns = NetnsArg(info, 0);
    if (info.Length() < 4) throw ArgError{"nftRawRules(netns, family, table, chain)"};
    uint8_t family = Family(info[1]);
    std::string table = Str(info[2], Where{"table"});
    std::string chain = Str(info[3], Where{"chain"});
    return PromiseWorker<std::vector<RawRule>>::Run(
        info.Env(), "nftRawRules", [ns, family, table, chain] { return RawRules(ns, family, table, chain); },
        [](Napi::Env env, std::vector<RawRule>& rs) -> Napi::Value {
          Napi::Array a = Napi::Array::New(env, rs.size());
          for (size_t i = 0; i < rs.size(); i++) {
            Napi::Object r = Napi::Object::New(env);
            r.Set("handle", Napi::Number::New(env, static_cast<double>(rs[i].handle)));
            r.Set("exprs", rs[i].exprsHex);
            r.Set("compat", rs[i].compatHex);
            r.Set("userdata", rs[i].userdataHex);
            a.Set(static_cast<uint32_t>(i), r);
          }
          return a;
        });
  });
}

Napi::Value ReadProcNetJs(const Napi::CallbackInfo& info) {
  return Guard(info, [&]() -> Napi::Value {
    std::string ns = NetnsArg(info, 0);
    if (info.Length() < 2) throw ArgError{"readProcNet(netns, name)"};
    std::string name = Str(info[1], Where{"name"});
    if (name.empty() || name.find('/') != std::string::npos || name[0] == '.') throw ArgError{"name must be a file name in /proc/net"};
    using R = std::pair<bool, std::string>;
    return PromiseWorker<R>::Run(
        info.Env(), "readProcNet",
        [ns, name] {
          auto v = ReadProcNet(ns, name);
          return v ? R{true, *v} : R{false, ""};
        },
        [](Napi::Env env, R& r) -> Napi::Value { return r.first ? Napi::String::New(env, r.second) : env.Null(); });
  });
}

void Init(Napi::Env env, Napi::Object exports) {
  exports.Set("nftGenId", Napi::Function::New(env, GenIdJs, "nftGenId"));
  exports.Set("nftRead", Napi::Function::New(env, ReadJs, "nftRead"));
  exports.Set("nftApply", Napi::Function::New(env, ApplyJs, "nftApply"));
  exports.Set("nftDeleteTable", Napi::Function::New(env, DeleteTableJs, "nftDeleteTable"));
  exports.Set("nftListTables", Napi::Function::New(env, ListTablesJs, "nftListTables"));
  exports.Set("nftRawRules", Napi::Function::New(env, RawRulesJs, "nftRawRules"));
  exports.Set("readProcNet", Napi::Function::New(env, ReadProcNetJs, "readProcNet"));
}

}  // namespace
}  // namespace edgemesh

EDGEMESH_REGISTER_MODULE(nft, edgemesh::Init);
