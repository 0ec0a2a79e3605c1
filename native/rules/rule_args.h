// JS rules and operations -> the shared rule model (rules/rule_model.h), for both netfilter
// bindings. A wrong type or an unknown operation is an ArgError (a TypeError naming where the
// value sits); what the kernel could not hold is the cores' business (rules::ValidateRule).
//
//   rule: { src?, dst?, dstSet?, protocol?: 'tcp'|'udp', comment?, target, toDestination?: { address, port? } }
//   op:   { op: 'replaceChain', chain, rules } | { op: 'flushChain'|'deleteChain', chain }
//       | { op: 'insertRule', chain, rule, position? } | { op: 'moveRule', chain, rule, position }
//       | { op: 'deleteRule', chain, rule }
#pragma once
#include <napi.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "common/napi_args.h"
#include "rules/rule_model.h"

namespace edgemesh {
namespace args {

constexpr uint32_t kMaxRules = 1u << 20;

inline rules::Family FamilyArg(Napi::Value v, const Where& w) {
  std::string f = Str(v, w);
  if (f == "ipv4") return rules::Family::V4;
  if (f == "ipv6") return rules::Family::V6;
  throw ArgError{w.str() + " must be \"ipv4\" or \"ipv6\""};
}

inline rules::RuleSpec RuleArg(Napi::Value v, const Where& w) {
  Napi::Object o = Obj(v, w);
  rules::RuleSpec r;
  OptStr(o, "src", w, r.src);
  OptStr(o, "dst", w, r.dst);
  OptStr(o, "dstSet", w, r.dstSet);
  std::string proto;
  if (OptStr(o, "protocol", w, proto)) {
    std::optional<rules::Protocol> p = rules::ProtocolFromName(proto);
    if (!p) throw ArgError{w.str() + ".protocol must be \"tcp\" or \"udp\""};
    r.protocol = *p;
  }
  std::string comment;
  if (OptStr(o, "comment", w, comment)) r.comment = std::move(comment);
  r.target = Str(o.Get("target"), w.field("target"));
  Napi::Value td = o.Get("toDestination");
  if (!td.IsUndefined()) {
    const Where wd = w.field("toDestination");
    Napi::Object d = Obj(td, wd);
    rules::Endpoint to;
    to.address = Str(d.Get("address"), wd.field("address"));
    Napi::Value port = d.Get("port");
    if (!port.IsUndefined()) to.port = static_cast<uint16_t>(Int(port, wd.field("port"), 1, 65535));
    r.to = std::move(to);
  }
  return r;
}

inline rules::Op OpArg(Napi::Value v, const Where& w) {
  using K = rules::OpKind;
  Napi::Object o = Obj(v, w);
  const std::string kind = Str(o.Get("op"), w.field("op"));
  rules::Op op;
  op.chain = Str(o.Get("chain"), w.field("chain"));
  constexpr int64_t kMaxPos = std::numeric_limits<int32_t>::max();
  auto position = [&](bool required) -> int64_t {
    Napi::Value p = o.Get("position");
    if (p.IsUndefined() && !required) return 0;
    return Int(p, w.field("position"), 1, kMaxPos);
  };
  if (kind == "replaceChain") {
    op.kind = K::ReplaceChain;
    const Where wr = w.field("rules");
    Napi::Array list = Arr(o.Get("rules"), wr, kMaxRules);
    const uint32_t n = list.Length();
    op.rules.reserve(n);
    for (uint32_t i = 0; i < n; i++) op.rules.push_back(RuleArg(list.Get(i), wr.at(i)));
  } else if (kind == "flushChain") {
    op.kind = K::FlushChain;
  } else if (kind == "deleteChain") {
    op.kind = K::DeleteChain;
  } else if (kind == "insertRule") {
    op.kind = K::InsertRule;
    op.rule = RuleArg(o.Get("rule"), w.field("rule"));
    op.position = position(false);
  } else if (kind == "moveRule") {
    op.kind = K::MoveRule;
    op.rule = RuleArg(o.Get("rule"), w.field("rule"));
    op.position = position(true);
  } else if (kind == "deleteRule") {
    op.kind = K::DeleteRule;
    op.rule = RuleArg(o.Get("rule"), w.field("rule"));
  } else {
    throw ArgError{w.str() + ".op is not a known operation"};
  }
  return op;
}

// A rule read from the kernel -> { src?, dst?, dstSet?, protocol?, comment?, target, toDestination?,
// packets, bytes, handle? (nftables), unknown }.
inline Napi::Object RuleToJs(Napi::Env env, const rules::LiveRule& r, bool withHandle) {
  Napi::Object o = Napi::Object::New(env);
  const rules::RuleSpec& s = r.spec;
  if (!s.src.empty()) o.Set("src", s.src);
  if (!s.dst.empty()) o.Set("dst", s.dst);
  if (!s.dstSet.empty()) o.Set("dstSet", s.dstSet);
  if (s.protocol != rules::Protocol::Any) o.Set("protocol", rules::ProtocolName(s.protocol));
  if (s.comment) o.Set("comment", *s.comment);
  o.Set("target", s.target);
  if (s.to) {
    Napi::Object d = Napi::Object::New(env);
    d.Set("address", s.to->address);
    if (s.to->port) d.Set("port", Napi::Number::New(env, s.to->port));
    o.Set("toDestination", d);
  }
  o.Set("packets", Napi::Number::New(env, static_cast<double>(r.packets)));
  o.Set("bytes", Napi::Number::New(env, static_cast<double>(r.bytes)));
  if (withHandle) o.Set("handle", Napi::Number::New(env, static_cast<double>(r.handle)));
  Napi::Array unknown = Napi::Array::New(env, r.unknown.size());
  for (uint32_t i = 0; i < r.unknown.size(); i++) unknown.Set(i, r.unknown[i]);
  o.Set("unknown", unknown);
  return o;
}

inline std::vector<rules::Op> OpsArg(Napi::Value v, const Where& w, uint32_t max) {
  Napi::Array arr = Arr(v, w, max);
  std::vector<rules::Op> ops;
  ops.reserve(arr.Length());
  for (uint32_t i = 0; i < arr.Length(); i++) ops.push_back(OpArg(arr.Get(i), w.at(i)));
  return ops;
}

}  // namespace args
}  // namespace edgemesh
