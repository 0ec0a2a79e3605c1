// See rule_model.h.
#include "rules/rule_model.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <map>
#include <set>
#include <utility>

namespace edgemesh {
namespace rules {

bool SameRule(const RuleSpec& a, const RuleSpec& b) {
  return a.target == b.target && a.src == b.src && a.dst == b.dst && a.dstSet == b.dstSet && a.protocol == b.protocol &&
         a.comment.value_or(std::string()) == b.comment.value_or(std::string()) && a.to.has_value() == b.to.has_value() &&
         (!a.to || (a.to->address == b.to->address && a.to->port == b.to->port));
}

bool IdenticalRule(const RuleSpec& a, const RuleSpec& b) { return SameRule(a, b) && a.comment.has_value() == b.comment.has_value(); }

std::string RuleKey(const RuleSpec& r) {
  // Fields length-prefixed so that no content can collide.
  std::string k;
  for (const std::string& f : {r.src, r.dst, r.dstSet, std::string(ProtocolName(r.protocol)), r.comment.value_or(std::string()), r.target,
                               r.to ? r.to->address : std::string(), r.to ? std::to_string(r.to->port) : std::string("-")}) {
    k += std::to_string(f.size()) + ":" + f;
  }
  return k;
}

std::string DescribeRule(const std::string& chain, const RuleSpec& r) {
  std::string out = chain;
  if (!r.src.empty()) out += " -s " + r.src;
  if (!r.dst.empty()) out += " -d " + r.dst;
  if (!r.dstSet.empty()) out += " -d @" + r.dstSet;
  if (r.protocol != Protocol::Any) out += std::string(" -p ") + ProtocolName(r.protocol);
  if (r.comment) out += " --comment \"" + *r.comment + "\"";
  if (!r.target.empty()) out += " -j " + r.target;
  if (r.to) out += " --to-destination " + r.to->address + (r.to->port ? ":" + std::to_string(r.to->port) : "");
  return out;
}

const char* ProtocolName(Protocol p) {
  switch (p) {
    case Protocol::Tcp: return "tcp";
    case Protocol::Udp: return "udp";
    case Protocol::Any: break;
  }
  return "";
}

std::optional<Protocol> ProtocolFromName(const std::string& name) {
  if (name == "tcp") return Protocol::Tcp;
  if (name == "udp") return Protocol::Udp;
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Addresses

size_t AddrLen(Family f) { return f == Family::V4 ? 4 : 16; }
int AfOf(Family f) { return f == Family::V4 ? AF_INET : AF_INET6; }

std::string FormatAddr(Family f, const uint8_t* bytes) {
  char buf[INET6_ADDRSTRLEN] = {};
  if (!inet_ntop(AfOf(f), bytes, buf, sizeof buf)) return "";
  return buf;
}

std::string FormatCidr(Family f, const uint8_t* bytes, int prefix) { return FormatAddr(f, bytes) + "/" + std::to_string(prefix); }

bool ParseAddr(Family f, const std::string& text, uint8_t* out) {
  if (text.empty() || text.size() > 64 || text.find('\0') != std::string::npos) return false;
  return inet_pton(AfOf(f), text.c_str(), out) == 1;
}

std::optional<Cidr> ParseCidr(Family f, const std::string& text) {
  Cidr c;
  c.len = static_cast<int>(AddrLen(f));
  const auto slash = text.find('/');
  int prefix = c.len * 8;
  if (slash != std::string::npos) {
    const std::string p = text.substr(slash + 1);
    if (p.empty() || p.size() > 3 || !std::all_of(p.begin(), p.end(), [](char ch) { return ch >= '0' && ch <= '9'; })) return std::nullopt;
    prefix = std::stoi(p);
    if (prefix > c.len * 8) return std::nullopt;
  }
  if (!ParseAddr(f, text.substr(0, slash), c.bytes)) return std::nullopt;
  c.prefix = prefix;
  for (int i = 0; i < c.len; i++) {
    const int bits = std::max(0, std::min(8, prefix - i * 8));
    c.mask[i] = static_cast<uint8_t>(bits == 0 ? 0 : (0xff << (8 - bits)) & 0xff);
    c.bytes[i] &= c.mask[i];
  }
  return c;
}

int PrefixFromMask(Family f, const uint8_t* mask) {
  int prefix = 0;
  bool ended = false;
  for (size_t i = 0; i < AddrLen(f); i++) {
    for (int b = 7; b >= 0; b--) {
      const bool one = (mask[i] >> b) & 1;
      if (one && ended) return -1;
      if (one) prefix++;
      else ended = true;
    }
  }
  return prefix;
}

std::string CanonicalCidr(Family f, const std::string& cidr) {
  std::optional<Cidr> c = ParseCidr(f, cidr);
  return c ? FormatCidr(f, c->bytes, c->prefix) : std::string();
}

std::string CanonicalAddress(Family f, const std::string& address) {
  uint8_t a[16] = {};
  return ParseAddr(f, address, a) ? FormatAddr(f, a) : std::string();
}

// ---------------------------------------------------------------------------------------------
// Validation

bool ValidChainName(const std::string& name, size_t max) {
  if (name.empty() || name.size() > max) return false;
  if (name[0] == '-' || name[0] == '!') return false;
  for (unsigned char ch : name)
    if (ch <= ' ' || ch >= 0x7f) return false;
  return true;
}

bool IsVerdict(const std::string& target) { return target == "RETURN" || target == "ACCEPT" || target == "DROP"; }

namespace {

std::string Quoted(const std::string& s) { return "\"" + s.substr(0, 64) + "\""; }

void CanonicalInPlace(Family f, std::string& cidr, const char* what) {
  if (cidr.empty()) return;
  std::string c = CanonicalCidr(f, cidr);
  if (c.empty()) throw RuleError(std::string("invalid ") + what + " CIDR " + Quoted(cidr));
  cidr = std::move(c);
}

}  // namespace

void ValidateRule(Family f, RuleSpec& r, const RuleLimits& limits) {
  CanonicalInPlace(f, r.src, "source");
  CanonicalInPlace(f, r.dst, "destination");
  if (!r.dstSet.empty()) {
    if (!limits.allowSet) throw RuleError("dstSet (a set lookup) is only for the nft dialect");
    if (!r.dst.empty()) throw RuleError("dst and dstSet cannot both be given");
    if (r.dstSet.size() > 255) throw RuleError("set name too long: " + Quoted(r.dstSet));
  }
  if (r.comment && (r.comment->size() > kMaxComment || r.comment->find('\0') != std::string::npos))
    throw RuleError("comment longer than 255 bytes or containing NUL");
  if (r.target == "DNAT") {
    if (!r.to) throw RuleError("DNAT needs a destination");
    std::string a = CanonicalAddress(f, r.to->address);
    if (a.empty()) throw RuleError("invalid DNAT address " + Quoted(r.to->address));
    r.to->address = std::move(a);
    return;
  }
  if (r.to) throw RuleError("a DNAT destination needs target DNAT");
  if (r.target.empty()) {
    if (!limits.allowNoTarget) throw RuleError("a rule needs a target");
    return;
  }
  if (IsVerdict(r.target)) return;
  static const std::set<std::string> unsupported = {"MASQUERADE", "SNAT", "REDIRECT", "MARK", "REJECT", "LOG", "QUEUE"};
  if (unsupported.count(r.target)) throw RuleError("unsupported target " + r.target);
  if (!ValidChainName(r.target, limits.maxChainName)) throw RuleError("invalid target " + Quoted(r.target));
}

// ---------------------------------------------------------------------------------------------
// The minimal edit

std::vector<int> MatchRules(const std::vector<const RuleSpec*>& have, const std::vector<bool>& reusable,
                            const std::vector<RuleSpec>& want) {
  std::map<std::string, std::vector<int>> byKey;  // each key's unused rules, latest first
  for (size_t k = have.size(); k-- > 0;)
    if (reusable[k]) byKey[RuleKey(*have[k])].push_back(static_cast<int>(k));
  std::vector<int> source(want.size(), -1);
  for (size_t j = 0; j < want.size(); j++) {
    auto f = byKey.find(RuleKey(want[j]));
    if (f == byKey.end() || f->second.empty()) continue;
    source[j] = f->second.back();
    f->second.pop_back();
  }
  return source;
}

std::vector<bool> KeepInPlace(const std::vector<int>& live, const std::vector<int64_t>& weight, size_t liveCount) {
  std::vector<bool> keep(live.size(), false);
  if (liveCount == 0) return keep;
  // Fenwick tree over live indexes: the best (weight, entry) of a subsequence ending at or below.
  std::vector<std::pair<int64_t, int>> tree(liveCount + 1, {0, -1});
  std::vector<int> prev(live.size(), -1);
  auto query = [&](size_t i) {  // max over [1, i]
    std::pair<int64_t, int> r{0, -1};
    for (; i > 0; i -= i & (~i + 1)) r = std::max(r, tree[i]);
    return r;
  };
  auto update = [&](size_t i, std::pair<int64_t, int> v) {
    for (; i <= liveCount; i += i & (~i + 1)) tree[i] = std::max(tree[i], v);
  };
  std::pair<int64_t, int> top{0, -1};
  for (size_t k = 0; k < live.size(); k++) {
    if (live[k] < 0 || static_cast<size_t>(live[k]) >= liveCount) continue;
    const size_t pos = static_cast<size_t>(live[k]) + 1;
    const auto q = query(pos - 1);
    prev[k] = q.second;
    const std::pair<int64_t, int> v{q.first + weight[k], static_cast<int>(k)};
    update(pos, v);
    top = std::max(top, v);
  }
  for (int k = top.second; k >= 0; k = prev[static_cast<size_t>(k)]) keep[static_cast<size_t>(k)] = true;
  return keep;
}

}  // namespace rules
}  // namespace edgemesh
