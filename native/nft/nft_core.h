// nf_tables through libnftnl/libmnl, plain C++ (no V8): read chains and rules of one table,
// parse them back into the shared rule model (rules/rule_model.h), and apply a transaction of
// its operations in ONE netlink batch guarded by the generation id (a concurrent writer makes
// the kernel refuse the batch with ERESTART: with the planning read's generation given, the
// caller plans again (EGENERATION); without, we re-read and retry, bounded).
//
// Files: netlink.{h,cc} (socket, dumps, the batch), codec.{h,cc} (rules and set elements to
// expressions and back), apply.cc (the transaction), nft_core.cc (reads and entry points).
//
// Two dialects share the model:
//  - Xt: the shape iptables-nft 1.8.9 writes into the `ip`/`ip6` `nat` tables (payload+cmp for
//    -s/-d, bitwise only for non byte-aligned prefixes, meta l4proto for -p, the xt `comment`
//    match, counter, NFTA_RULE_COMPAT, immediate verdicts, the xt `DNAT` target revision 2), so
//    that iptables-nft lists and saves our rules exactly like its own.
//  - Native: plain nftables expressions (the `nat` expression for DNAT, the comment in the
//    rule's userdata as nft stores it), for our own `edgemesh` tables.
#pragma once
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "common/syserror.h"
#include "rules/rule_model.h"

namespace edgemesh {
namespace nft {

enum class Dialect { Xt, Native };

using rules::LiveRule;
using rules::Op;
using rules::OpKind;
using rules::RuleSpec;
using rules::SameRule;

struct ChainInfo {
  std::string name;
  uint64_t handle = 0;
  bool base = false;
  uint32_t hook = 0;
  int32_t priority = 0;
  std::string type;
  uint32_t policy = 1;  // NF_ACCEPT
  uint32_t use = 0;     // references to the chain
  std::vector<LiveRule> rules;
};

// An element of an address set (key: canonical host CIDR, "10.0.0.3/32", as rules' dst).
struct SetElem {
  std::string key;
  bool hasComment = false;
  std::string comment;
  uint64_t packets = 0;
  uint64_t bytes = 0;
  bool unknown = false;  // parts we do not model (flags, timeouts, a key of another length)
};

// A named set of the table as the kernel holds it.
struct SetInfo {
  std::string name;
  uint64_t handle = 0;
  uint32_t keyType = 0;  // nft datatype id: 7 ipv4_addr, 8 ipv6_addr
  uint32_t keyLen = 0;
  uint32_t flags = 0;    // NFT_SET_* flags
  bool counter = false;  // every element carries a counter (the set's expression)
  bool ours = false;     // the shape we create: an address set of the family, no flags, counters
  uint32_t use = 0;      // rules bound to it
  std::vector<SetElem> elements;
};

// "This set holds exactly these elements": created (an address set of the table's family whose
// every element has a counter) when missing; elements added and removed by key, so the counters
// of elements that stay are kept. An element whose comment changed is replaced.
struct SetSpec {
  std::string name;
  std::vector<SetElem> elements;
};

struct ReadRequest {
  std::string netns;
  uint8_t family = 2;  // NFPROTO_IPV4 / NFPROTO_IPV6 (10)
  std::string table;
  Dialect dialect = Dialect::Xt;
  bool allChains = false;           // every chain of the table (small tables only)
  std::vector<std::string> chains;  // otherwise these, missing ones are absent from the result
  bool withRules = true;
  std::vector<std::string> sets;  // sets to read (with their elements); missing ones are absent
};

struct ReadResult {
  uint32_t genid = 0;
  bool tableExists = false;
  std::vector<ChainInfo> chains;
  std::vector<SetInfo> sets;
};

struct BaseChainSpec {
  std::string name;
  uint32_t hook = 0;
  int32_t priority = 0;
  std::string type = "nat";
};

struct ApplyRequest {
  std::string netns;
  uint8_t family = 2;
  std::string table;
  Dialect dialect = Dialect::Xt;
  // Xt: create the table and the nat base chains (PREROUTING, INPUT, OUTPUT, POSTROUTING) the
  // way iptables-nft does, when an operation needs them and they do not exist.
  // Native: create the table, and make `baseChains` exist with exactly that hook/priority.
  std::vector<BaseChainSpec> baseChains;
  // Native: sets written in the same batch, before the rules that may look them up. A live set
  // of another shape is deleted and created anew, and every rule of the table that looks it up
  // is deleted before and added again after (new counters).
  std::vector<SetSpec> sets;
  std::vector<Op> ops;
  // The generation id of the read the ops were planned on. Given: the batch carries it, and a
  // ruleset changed since (by anybody) fails with code EGENERATION and nothing written, so that
  // the caller reads and plans again. Absent: the ops are re-applied to a fresh read on a change,
  // up to maxAttempts times.
  std::optional<uint32_t> plannedGenid;
  int maxAttempts = 5;
};

struct ApplyResult {
  int attempts = 0;
  int messages = 0;    // netlink messages in the committed batch; 0 = nothing was written
  uint32_t genid = 0;  // the generation our commit made (nothing written: the one it was checked against)
};

// The generation that follows `genid`: nf_tables bumps it by one per committed transaction,
// skipping 0.
inline uint32_t NextGenId(uint32_t genid) { return genid + 1 == 0 ? 1 : genid + 1; }

// A transaction refused because the ruleset is no longer the one it was planned on (code
// EGENERATION): nothing was written; read and plan again.
struct GenerationError : SysError {
  GenerationError(uint32_t planned, uint32_t now)
      : SysError(85 /* ERESTART */, "nft_batch",
                 "the ruleset changed since the read the transaction was planned on (generation " + std::to_string(planned) + ", now " +
                     std::to_string(now) + "): read and plan again",
                 "EGENERATION") {}
};

// A transaction rejected before anything was written (code ETRANSACTION). opIndex: the
// offending op, or -1. A SysError, so the shared PromiseWorker reports it like libiptc's.
struct TxError : SysError {
  TxError(int idx, const std::string& msg) : SysError(0, "nft_transaction", msg, "ETRANSACTION") { opIndex = idx; }
};

struct TableName {
  uint8_t family;
  std::string name;
};

struct RawRule {
  uint64_t handle = 0;
  std::string exprsHex;     // NFTA_RULE_EXPRESSIONS payload, counters zeroed
  std::string compatHex;    // NFTA_RULE_COMPAT payload
  std::string userdataHex;  // NFTA_RULE_USERDATA payload
};

uint32_t GetGenId(const std::string& netns);
ReadResult Read(const ReadRequest& req);
ApplyResult Apply(const ApplyRequest& req);
// Deletes the table (and everything in it) in one batch. False when it did not exist.
bool DeleteTable(const std::string& netns, uint8_t family, const std::string& table);
std::vector<TableName> ListTables(const std::string& netns);
// The raw attributes of a chain's rules (diagnostics and byte-for-byte comparison in tests).
std::vector<RawRule> RawRules(const std::string& netns, uint8_t family, const std::string& table, const std::string& chain);
// Reads /proc/thread-self/net/<name> inside the namespace; nullopt when it does not exist.
std::optional<std::string> ReadProcNet(const std::string& netns, const std::string& name);

}  // namespace nft
}  // namespace edgemesh
