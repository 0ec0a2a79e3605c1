// The codec of the nf_tables core: rules of the shared model (rules/rule_model.h) to netlink
// expressions in both dialects and back, addresses, set elements and their userdata. Internal to
// native/nft/.
#pragma once
#include <cstdio>  // libnftnl/expr.h uses FILE

#include <libnftnl/expr.h>
#include <libnftnl/rule.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "nft/netlink.h"
#include "nft/nft_core.h"
#include "rules/rule_model.h"

namespace edgemesh {
namespace nft {

constexpr size_t kCommentLen = 256;           // XT_MAX_COMMENT_LEN: struct xt_comment_info
constexpr uint8_t kUdataRuleComment = 0;      // NFTNL_UDATA_RULE_COMMENT (nft's udata TLV type)
constexpr uint8_t kUdataSetElemComment = 0;   // NFTNL_UDATA_SET_ELEM_COMMENT
constexpr uint8_t kUdataSetKeyByteorder = 0;  // NFTNL_UDATA_SET_KEYBYTEORDER
constexpr uint32_t kByteorderBigEndian = 2;   // nft's BYTEORDER_BIG_ENDIAN, as nft stores it
constexpr uint32_t kTypeIpv4Addr = 7;         // nft datatype ids (TYPE_IPADDR, TYPE_IP6ADDR)
constexpr uint32_t kTypeIpv6Addr = 8;

rules::Family FamilyOf(uint8_t family);
// A CIDR (or bare address) of the family; throws std::invalid_argument when it is not one.
rules::Cidr ParseCidr(const std::string& text, uint8_t family);
std::string FormatCidr(const uint8_t* bytes, int len, int prefix);
std::string FormatAddr(const uint8_t* bytes, int len);
uint32_t AddrType(uint8_t family);  // nft datatype of the family's addresses
uint32_t AddrLen(uint8_t family);

// One set of the table (nullopt when missing), without elements.
std::optional<SetInfo> GetSet(NlSocket& s, uint8_t family, const std::string& table, const std::string& name);
void DumpSetElems(NlSocket& s, uint8_t family, const std::string& table, SetInfo* set, bool* intr);
// The sets asked for (missing ones skipped), with their elements.
std::vector<SetInfo> ReadSets(NlSocket& s, uint8_t family, const std::string& table, const std::vector<std::string>& names, bool* intr);

nftnl_expr* NewExpr(const char* name);
// The rule `s` of `chain` as netlink expressions of the dialect, with these counters; a set
// lookup names the set by `dstSetId` when this batch creates it.
RulePtr BuildRule(uint8_t family, const std::string& table, const std::string& chain, const RuleSpec& s, Dialect d, uint64_t packets,
                  uint64_t bytes, uint32_t dstSetId);
// A rule read from the kernel, in the model; what it cannot model is named in `unknown`.
LiveRule ParseRule(nftnl_rule* r, uint8_t family, Dialect d);
// A chain with its rules read and decoded.
ChainInfo ReadChainRules(NlSocket& s, const ChainInfo& base, uint8_t family, const std::string& table, Dialect d, bool* intr);

}  // namespace nft
}  // namespace edgemesh
