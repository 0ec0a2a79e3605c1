// libFuzzer target for the rule model both netfilter cores share (native/rules/rule_model.h):
// the address parsing every rule's -s/-d, DNAT address and set element goes through, the rule
// validation, the rule equality, and the minimal edit that turns a chain's rules into the wanted
// ones. Pure C++: no kernel, no namespace.
//
// Input: the first byte picks the family (bit 0: IPv4 or IPv6) and the mode (bit 1).
// Mode 0, the rest is a text. Besides "no crash, no ASan/UBSan report":
//  - CanonicalAddress agrees with inet_pton (the oracle) on which texts are addresses;
//  - canonical forms are fixed points (canonicalising again changes nothing);
//  - a canonical CIDR is "address/prefix" with the prefix in range, no host bits set, and its
//    address part is itself a canonical address;
//  - an address alone is the same as address/32 (/128);
//  - a rule made of the text (as source, destination, DNAT address, comment, target) that
//    ValidateRule accepts is canonical: validating it again changes nothing.
// Mode 1, the rest is two lists of rules (one byte a rule, 0xff between the lists: what the
// chain has, what is wanted). The minimal edit must:
//  - reuse each rule it has at most once, only for a rule that is the same (and reusable);
//  - reuse as many as the two lists have in common (per rule, the smaller count);
//  - keep in place a chain order: the kept rules' old indexes increase, as many as the longest
//    increasing run allows (checked against a quadratic reference);
//  - give the wanted list when applied as the iptables core applies it (delete what is not kept,
//    from the end; insert the rest at its final position).
// And RuleKey(a) == RuleKey(b) exactly when SameRule(a, b).
#include <arpa/inet.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "rules/rule_model.h"

using edgemesh::rules::CanonicalAddress;
using edgemesh::rules::CanonicalCidr;
using edgemesh::rules::Family;
using edgemesh::rules::RuleSpec;

namespace rules = edgemesh::rules;

namespace {

[[noreturn]] void Fail(const char* what, const std::string& in, const std::string& out) {
  std::fprintf(stderr, "fuzz_rule_model: %s: input \"%s\" -> \"%s\"\n", what, in.c_str(), out.c_str());
  std::abort();
}

void Addresses(Family f, const std::string& s) {
  const int af = f == Family::V4 ? AF_INET : AF_INET6;
  const int maxPrefix = f == Family::V4 ? 32 : 128;
  const std::string a = CanonicalAddress(f, s);
  uint8_t buf[16];
  const bool oracle = s.find('\0') == std::string::npos && inet_pton(af, s.c_str(), buf) == 1;
  if (oracle != !a.empty()) Fail("CanonicalAddress disagrees with inet_pton", s, a);
  if (!a.empty()) {
    if (CanonicalAddress(f, a) != a) Fail("canonical address is not a fixed point", s, a);
    const std::string host = CanonicalCidr(f, s);
    if (host != a + "/" + std::to_string(maxPrefix)) Fail("an address is not its own host CIDR", s, host);
  }

  const std::string c = CanonicalCidr(f, s);
  if (!c.empty()) {
    if (CanonicalCidr(f, c) != c) Fail("canonical CIDR is not a fixed point", s, c);
    const size_t slash = c.find('/');
    if (slash == std::string::npos || c.find('/', slash + 1) != std::string::npos) Fail("canonical CIDR is not addr/prefix", s, c);
    const std::string addr = c.substr(0, slash);
    const std::string plen = c.substr(slash + 1);
    if (CanonicalAddress(f, addr) != addr) Fail("CIDR address part is not canonical", s, c);
    char* end = nullptr;
    const long p = std::strtol(plen.c_str(), &end, 10);
    if (plen.empty() || *end != '\0' || p < 0 || p > maxPrefix || std::to_string(p) != plen) Fail("prefix out of range or not canonical", s, c);
    // No host bits: the address with the prefix re-applied is the same CIDR.
    if (CanonicalCidr(f, addr + "/" + plen) != c) Fail("host bits survive", s, c);
    // The input's address part must itself be an address (the CIDR did not invent one).
    const std::string inAddr = s.substr(0, s.find('/'));
    if (CanonicalAddress(f, inAddr).empty()) Fail("a CIDR was accepted whose address part is not an address", s, c);
  }
}

void Validation(Family f, const std::string& s) {
  const rules::RuleLimits limits{28, true, true};
  RuleSpec candidates[4];
  candidates[0].src = s;
  candidates[0].target = "RETURN";
  candidates[1].dst = s;
  candidates[1].comment = s;
  candidates[1].target = s;
  candidates[2].target = "DNAT";
  candidates[2].to = rules::Endpoint{s, 80};
  candidates[3].dstSet = s;
  candidates[3].protocol = rules::Protocol::Tcp;
  for (RuleSpec& r : candidates) {
    try {
      rules::ValidateRule(f, r, limits);
    } catch (const rules::RuleError&) {
      continue;
    }
    RuleSpec again = r;
    try {
      rules::ValidateRule(f, again, limits);
    } catch (const rules::RuleError& e) {
      Fail("a validated rule is refused when validated again", s, e.what());
    }
    if (!rules::IdenticalRule(again, r)) Fail("validation is not idempotent", s, rules::DescribeRule("X", again));
    if (!r.src.empty() && CanonicalCidr(f, r.src) != r.src) Fail("validated source is not canonical", s, r.src);
    if (!r.dst.empty() && CanonicalCidr(f, r.dst) != r.dst) Fail("validated destination is not canonical", s, r.dst);
    if (r.to && CanonicalAddress(f, r.to->address) != r.to->address) Fail("validated DNAT address is not canonical", s, r.to->address);
  }
}

// One byte -> one of a small set of rules, so that lists repeat rules: bits 0-2 the destination,
// bit 3 the comment (absent or empty, the same rule), bit 4 the target, bit 5 reusable or not.
RuleSpec RuleOf(uint8_t b) {
  RuleSpec r;
  r.dst = "10.0.0." + std::to_string(b & 7) + "/32";
  if (b & 8) r.comment = "";
  r.target = b & 16 ? "RETURN" : "EDGE-MESH-TCP";
  return r;
}

std::string Describe(const std::vector<uint8_t>& have, const std::vector<uint8_t>& want) {
  std::string out;
  for (uint8_t b : have) out += std::to_string(b) + " ";
  out += "| ";
  for (uint8_t b : want) out += std::to_string(b) + " ";
  return out;
}

void MinimalEdit(const uint8_t* data, size_t size) {
  std::vector<uint8_t> haveBytes, wantBytes;
  bool second = false;
  for (size_t i = 0; i < size && i < 64; i++) {
    if (data[i] == 0xff) second = true;
    else (second ? wantBytes : haveBytes).push_back(data[i]);
  }
  std::vector<RuleSpec> have, want;
  std::vector<const RuleSpec*> havePtr;
  std::vector<bool> reusable;
  for (uint8_t b : haveBytes) have.push_back(RuleOf(b));
  for (uint8_t b : wantBytes) want.push_back(RuleOf(b));
  for (size_t i = 0; i < have.size(); i++) {
    havePtr.push_back(&have[i]);
    reusable.push_back(!(haveBytes[i] & 32));
  }
  const std::string what = Describe(haveBytes, wantBytes);

  for (const auto& a : have)
    for (const auto& b : want)
      if ((rules::RuleKey(a) == rules::RuleKey(b)) != rules::SameRule(a, b)) Fail("RuleKey and SameRule disagree", what, "");

  const std::vector<int> source = rules::MatchRules(havePtr, reusable, want);
  if (source.size() != want.size()) Fail("one source per wanted rule", what, "");
  std::vector<bool> used(have.size(), false);
  size_t matched = 0;
  for (size_t j = 0; j < want.size(); j++) {
    if (source[j] < 0) continue;
    const auto k = static_cast<size_t>(source[j]);
    if (k >= have.size() || used[k]) Fail("a rule reused twice or out of range", what, std::to_string(source[j]));
    if (!reusable[k]) Fail("a rule that must not be reused was", what, std::to_string(k));
    if (!rules::SameRule(have[k], want[j])) Fail("a rule reused for another", what, std::to_string(k));
    used[k] = true;
    matched++;
  }
  size_t common = 0;  // per key: min(reusable have, want)
  std::vector<bool> taken(have.size(), false);
  for (const auto& w : want)
    for (size_t k = 0; k < have.size(); k++)
      if (!taken[k] && reusable[k] && rules::SameRule(have[k], w)) {
        taken[k] = true;
        common++;
        break;
      }
  if (matched != common) Fail("the edit does not reuse every rule it could", what, std::to_string(matched) + " of " + std::to_string(common));

  std::vector<int64_t> weight(want.size(), 1);
  const std::vector<bool> stays = rules::KeepInPlace(source, weight, have.size());
  int last = -1;
  size_t kept = 0;
  for (size_t j = 0; j < want.size(); j++) {
    if (!stays[j]) continue;
    if (source[j] <= last) Fail("kept rules change their order", what, "");
    last = source[j];
    kept++;
  }
  std::vector<size_t> lis(want.size(), 0);  // the longest increasing run of sources, quadratic
  size_t best = 0;
  for (size_t j = 0; j < want.size(); j++) {
    if (source[j] < 0) continue;
    lis[j] = 1;
    for (size_t i = 0; i < j; i++)
      if (source[i] >= 0 && source[i] < source[j] && lis[i] + 1 > lis[j]) lis[j] = lis[i] + 1;
    if (lis[j] > best) best = lis[j];
  }
  if (kept != best) Fail("fewer rules kept in place than possible", what, std::to_string(kept) + " of " + std::to_string(best));

  // Applied as the iptables core applies it: the result is the wanted list.
  std::vector<bool> keptHave(have.size(), false);
  for (size_t j = 0; j < want.size(); j++)
    if (stays[j]) keptHave[static_cast<size_t>(source[j])] = true;
  std::vector<RuleSpec> chain = have;
  for (size_t k = have.size(); k-- > 0;)
    if (!keptHave[k]) chain.erase(chain.begin() + static_cast<long>(k));
  for (size_t j = 0; j < want.size(); j++) {
    if (stays[j]) continue;
    if (j > chain.size()) Fail("an insert beyond the end of the chain", what, std::to_string(j));
    chain.insert(chain.begin() + static_cast<long>(j), want[j]);
  }
  if (chain.size() != want.size()) Fail("the edited chain has another length", what, "");
  for (size_t j = 0; j < want.size(); j++)
    if (!rules::SameRule(chain[j], want[j])) Fail("the edited chain is not the wanted one", what, std::to_string(j));
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1 || size > 512) return 0;
  const Family f = data[0] % 2 ? Family::V6 : Family::V4;
  if (data[0] & 2) {
    MinimalEdit(data + 1, size - 1);
    return 0;
  }
  const std::string s(reinterpret_cast<const char*>(data + 1), size - 1);
  Addresses(f, s);
  Validation(f, s);
  return 0;
}
