// The rule model both netfilter cores share (iptc/ for iptables-legacy, nft/ for iptables-nft and
// our own nftables table): what a rule is, the operations of a transaction, how rules compare,
// how addresses are parsed and written, and the minimal edit that turns a chain's rules into the
// wanted ones. Plain C++17, no kernel and no V8: the bindings fill these structs
// (rules/rule_args.h), the cores encode them.
#pragma once
#include <cstddef>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace edgemesh {
namespace rules {

enum class Family { V4, V6 };

// The layer 4 protocol a rule matches; the values are the IP protocol numbers.
enum class Protocol : uint8_t { Any = 0, Tcp = 6, Udp = 17 };

// Longest comment a rule may carry (XT_MAX_COMMENT_LEN 256, NUL included).
constexpr size_t kMaxComment = 255;

// Where a DNAT rule sends the traffic: a canonical address, and a port (0: keep the port).
struct Endpoint {
  std::string address;
  uint16_t port = 0;
};

// A rule in the modelled subset (mirrors Rule in src/netfilter/rules.ts). Addresses are CIDRs
// ("10.10.0.3/32", "fd00::/64"), canonical after ValidateRule; empty means "any".
struct RuleSpec {
  std::string src;
  std::string dst;
  std::string dstSet;  // nftables only: the destination is looked up in this set of the table
  Protocol protocol = Protocol::Any;
  std::optional<std::string> comment;
  std::string target;          // RETURN, ACCEPT, DROP, DNAT, a chain, or "" (nftables: no verdict)
  std::optional<Endpoint> to;  // with target DNAT only
};

// A rule as read from the kernel. `unknown` names everything read but not modelled: a rule with
// unknown parts is never taken for one of ours and is never re-created.
struct LiveRule {
  RuleSpec spec;
  uint64_t handle = 0;  // nftables: the rule's handle; 0 elsewhere
  uint64_t packets = 0;
  uint64_t bytes = 0;
  std::vector<std::string> unknown;
};

// The same rule as far as a plan is concerned (sameRule() in src/netfilter/rules.ts): an absent comment
// equals an empty one.
bool SameRule(const RuleSpec& a, const RuleSpec& b);
// Every modelled field equal, comment presence included (what a read-back must show).
bool IdenticalRule(const RuleSpec& a, const RuleSpec& b);
// A key such that SameRule(a, b) <=> RuleKey(a) == RuleKey(b).
std::string RuleKey(const RuleSpec& r);
// "CHAIN -s S -d D -p tcp --comment "C" -j T": a rule in error messages.
std::string DescribeRule(const std::string& chain, const RuleSpec& r);

const char* ProtocolName(Protocol p);  // "tcp", "udp" or ""
std::optional<Protocol> ProtocolFromName(const std::string& name);

// The operations of a transaction: what a plan emits.
enum class OpKind {
  ReplaceChain,  // the chain holds exactly `rules` (created when missing), by the minimal edit
  FlushChain,    // the chain is emptied (before its deletion)
  DeleteChain,   // the chain, empty, goes
  InsertRule,    // `rule` at `position` (1-based; 0: 1)
  MoveRule,      // the first rule that is SameRule(`rule`) goes to `position`, its counters kept
  DeleteRule,    // the first rule that is SameRule(`rule`) goes
};

struct Op {
  OpKind kind = OpKind::ReplaceChain;
  std::string chain;
  RuleSpec rule;                // insert/move/delete
  std::vector<RuleSpec> rules;  // replaceChain
  int64_t position = 0;         // insert/move: 1-based; 0 = not given
};

// ---------------------------------------------------------------------------------------------
// Addresses

struct Cidr {
  uint8_t bytes[16] = {};  // network address (host bits cleared)
  uint8_t mask[16] = {};
  int len = 4;  // address length in bytes: 4 or 16
  int prefix = 0;
};

size_t AddrLen(Family f);
int AfOf(Family f);
// Text of an address of `f`, or "" when inet_ntop refuses it.
std::string FormatAddr(Family f, const uint8_t* bytes);
std::string FormatCidr(Family f, const uint8_t* bytes, int prefix);
// inet_pton for `f` on a bounded, NUL-free text.
bool ParseAddr(Family f, const std::string& text, uint8_t* out);
// "addr/len" or a bare address (a host CIDR); nullopt when it is not a CIDR of `f`.
std::optional<Cidr> ParseCidr(Family f, const std::string& text);
// Prefix length of a contiguous mask of `f`, or -1.
int PrefixFromMask(Family f, const uint8_t* mask);
// Canonical "addr/len" of a CIDR (or bare address) of `f`, or "" if invalid.
std::string CanonicalCidr(Family f, const std::string& cidr);
// Canonical address text, or "" if invalid.
std::string CanonicalAddress(Family f, const std::string& address);

// ---------------------------------------------------------------------------------------------
// Validation

// A rule the core cannot write: the message names the problem (the core adds the operation).
struct RuleError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// What the writing side allows beyond the common subset.
struct RuleLimits {
  size_t maxChainName = 28;    // a jump target's longest name
  bool allowSet = false;       // dstSet (nftables' own table)
  bool allowNoTarget = false;  // a rule without a verdict (nftables)
};

// A valid chain name for iptables (printable, no leading '-' or '!', at most `max` bytes).
bool ValidChainName(const std::string& name, size_t max);
// True for the verdicts every backend writes as such: RETURN, ACCEPT, DROP.
bool IsVerdict(const std::string& target);
// Checks `r` and makes its addresses canonical; throws RuleError.
void ValidateRule(Family f, RuleSpec& r, const RuleLimits& limits);

// ---------------------------------------------------------------------------------------------
// The minimal edit of a chain

// For each wanted rule, the index of the rule of `have` it reuses (SameRule, each used once,
// earliest first), or -1 for a new rule. `reusable[i]` false: have[i] is never reused.
std::vector<int> MatchRules(const std::vector<const RuleSpec*>& have, const std::vector<bool>& reusable, const std::vector<RuleSpec>& want);

// Which entries of a chain's final order can stay where they are: the heaviest subsequence whose
// live indexes increase (O(n log n)). live[k]: the index of entry k among the `liveCount` rules
// the chain has now, -1 for a new rule; weight[k]: how much keeping it in place is worth.
std::vector<bool> KeepInPlace(const std::vector<int>& live, const std::vector<int64_t>& weight, size_t liveCount);

}  // namespace rules
}  // namespace edgemesh
