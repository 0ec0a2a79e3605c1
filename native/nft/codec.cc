// See codec.h.
#include "nft/codec.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/expr.h>
#include <libnftnl/gen.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <limits.h>
#include <malloc.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <thread>

#include "common/netns.h"
#include "common/syserror.h"
#include "rules/rule_model.h"

namespace edgemesh {
namespace nft {

// ---------------------------------------------------------------------------------------------
// Addresses

using rules::Cidr;
using rules::DescribeRule;
using rules::IsVerdict;
using rules::Protocol;

rules::Family FamilyOf(uint8_t family) { return family == NFPROTO_IPV6 ? rules::Family::V6 : rules::Family::V4; }

// A CIDR (or bare address) of the family; throws std::invalid_argument when it is not one.
Cidr ParseCidr(const std::string& text, uint8_t family) {
  std::optional<Cidr> c = rules::ParseCidr(FamilyOf(family), text);
  if (!c) throw std::invalid_argument(std::string("not an ") + (family == NFPROTO_IPV6 ? "IPv6" : "IPv4") + " CIDR: " + text.substr(0, 64));
  return *c;
}

std::string FormatCidr(const uint8_t* bytes, int len, int prefix) {
  return rules::FormatCidr(len == 16 ? rules::Family::V6 : rules::Family::V4, bytes, prefix);
}

std::string FormatAddr(const uint8_t* bytes, int len) {
  return rules::FormatAddr(len == 16 ? rules::Family::V6 : rules::Family::V4, bytes);
}

// Prefix length of a mask that is a prefix mask, or -1.
int MaskPrefix(const uint8_t* m, int len) { return rules::PrefixFromMask(len == 16 ? rules::Family::V6 : rules::Family::V4, m); }

int SrcOffset(uint8_t family) { return family == NFPROTO_IPV6 ? 8 : 12; }
int DstOffset(uint8_t family) { return family == NFPROTO_IPV6 ? 24 : 16; }

// ---------------------------------------------------------------------------------------------
// Sets

uint32_t AddrType(uint8_t family) { return family == NFPROTO_IPV6 ? kTypeIpv6Addr : kTypeIpv4Addr; }
uint32_t AddrLen(uint8_t family) { return family == NFPROTO_IPV6 ? 16 : 4; }

// The counter among a set's or an element's expressions (nftnl_*_expr_foreach callback).
struct CounterSeen {
  bool seen = false;
  uint64_t packets = 0, bytes = 0;
};

int CollectCounter(nftnl_expr* e, void* data) {
  auto* c = static_cast<CounterSeen*>(data);
  if (std::strcmp(nftnl_expr_get_str(e, NFTNL_EXPR_NAME), "counter") == 0) {
    c->seen = true;
    c->packets = nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_PACKETS);
    c->bytes = nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_BYTES);
  }
  return 0;
}

// One set of the table (nullopt when missing), without elements.
std::optional<SetInfo> GetSet(NlSocket& s, uint8_t family, const std::string& table, const std::string& name) {
  char buf[MNL_SOCKET_BUFFER_SIZE] = {};  // zeroed: libnftnl leaves attribute padding unwritten
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSET, family, NLM_F_ACK, s.NextSeq());
  SetPtr q(nftnl_set_alloc());
  if (!q) throw SysError(ENOMEM, "nftnl_set_alloc", "out of memory");
  nftnl_set_set_str(q.get(), NFTNL_SET_TABLE, table.c_str());
  nftnl_set_set_str(q.get(), NFTNL_SET_NAME, name.c_str());
  nftnl_set_nlmsg_build_payload(nlh, q.get());
  std::optional<SetInfo> out;
  bool found = TalkUnlessMissing(s, nlh, "nft_getset", [&](const nlmsghdr* m) {
    SetPtr r(nftnl_set_alloc());
    if (!r || nftnl_set_nlmsg_parse(m, r.get()) != 0) return;
    SetInfo si;
    si.name = nftnl_set_get_str(r.get(), NFTNL_SET_NAME);
    if (nftnl_set_is_set(r.get(), NFTNL_SET_HANDLE)) si.handle = nftnl_set_get_u64(r.get(), NFTNL_SET_HANDLE);
    if (nftnl_set_is_set(r.get(), NFTNL_SET_KEY_TYPE)) si.keyType = nftnl_set_get_u32(r.get(), NFTNL_SET_KEY_TYPE);
    if (nftnl_set_is_set(r.get(), NFTNL_SET_KEY_LEN)) si.keyLen = nftnl_set_get_u32(r.get(), NFTNL_SET_KEY_LEN);
    if (nftnl_set_is_set(r.get(), NFTNL_SET_FLAGS)) si.flags = nftnl_set_get_u32(r.get(), NFTNL_SET_FLAGS);
    CounterSeen c;
    nftnl_set_expr_foreach(r.get(), CollectCounter, &c);
    si.counter = c.seen;
    si.ours = si.keyType == AddrType(family) && si.keyLen == AddrLen(family) && si.flags == 0 && si.counter &&
              !nftnl_set_is_set(r.get(), NFTNL_SET_DATA_TYPE) && !nftnl_set_is_set(r.get(), NFTNL_SET_TIMEOUT);
    out = std::move(si);
  });
  return found ? out : std::nullopt;
}

// The comment of a set element's (or rule's) userdata TLVs; *other when other TLVs are there.
bool UdataComment(const void* ud, uint32_t len, uint8_t type, std::string* comment, bool* other) {
  struct Found {
    uint8_t type;
    std::string comment;
    bool has = false;
    bool other = false;
  } found{type, {}, false, false};
  nftnl_udata_parse(
      ud, len,
      [](const nftnl_udata* attr, void* data) -> int {
        auto* f = static_cast<Found*>(data);
        if (nftnl_udata_type(attr) == f->type) {
          const char* v = static_cast<const char*>(nftnl_udata_get(attr));
          f->comment = std::string(v, strnlen(v, nftnl_udata_len(attr)));
          f->has = true;
        } else {
          f->other = true;
        }
        return 0;
      },
      &found);
  if (found.has) *comment = found.comment;
  if (other) *other = found.other;
  return found.has;
}

void DumpSetElems(NlSocket& s, uint8_t family, const std::string& table, SetInfo* set, bool* intr) {
  char buf[MNL_SOCKET_BUFFER_SIZE] = {};  // zeroed: libnftnl leaves attribute padding unwritten
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSETELEM, family, NLM_F_DUMP, s.NextSeq());
  SetPtr q(nftnl_set_alloc());
  if (!q) throw SysError(ENOMEM, "nftnl_set_alloc", "out of memory");
  nftnl_set_set_str(q.get(), NFTNL_SET_TABLE, table.c_str());
  nftnl_set_set_str(q.get(), NFTNL_SET_NAME, set->name.c_str());
  nftnl_set_elems_nlmsg_build_payload(nlh, q.get());
  const int alen = static_cast<int>(AddrLen(family));
  set->elements.clear();
  s.Talk(
      nlh, "nft_getsetelem",
      [&](const nlmsghdr* m) {
        SetPtr r(nftnl_set_alloc());
        if (!r || nftnl_set_elems_nlmsg_parse(m, r.get()) != 0) return;
        nftnl_set_elems_iter* it = nftnl_set_elems_iter_create(r.get());
        if (!it) throw SysError(ENOMEM, "nftnl_set_elems_iter_create", "out of memory");
        for (nftnl_set_elem* e = nftnl_set_elems_iter_next(it); e; e = nftnl_set_elems_iter_next(it)) {
          SetElem el;
          uint32_t klen = 0;
          const auto* key = static_cast<const uint8_t*>(nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &klen));
          if (key && klen == static_cast<uint32_t>(alen)) el.key = FormatCidr(key, alen, alen * 8);
          else el.unknown = true;
          if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_FLAGS) && nftnl_set_elem_get_u32(e, NFTNL_SET_ELEM_FLAGS) != 0) el.unknown = true;
          if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_TIMEOUT) || nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_KEY_END)) el.unknown = true;
          if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_USERDATA)) {
            uint32_t ulen = 0;
            const void* ud = nftnl_set_elem_get(e, NFTNL_SET_ELEM_USERDATA, &ulen);
            bool other = false;
            el.hasComment = UdataComment(ud, ulen, kUdataSetElemComment, &el.comment, &other);
            if (other) el.unknown = true;
          }
          CounterSeen c;
          nftnl_set_elem_expr_foreach(e, CollectCounter, &c);
          el.packets = c.packets;
          el.bytes = c.bytes;
          set->elements.push_back(std::move(el));
        }
        nftnl_set_elems_iter_destroy(it);
      },
      intr);
}

// The sets asked for (missing ones skipped), with their elements.
std::vector<SetInfo> ReadSets(NlSocket& s, uint8_t family, const std::string& table, const std::vector<std::string>& names, bool* intr) {
  std::vector<SetInfo> out;
  for (const auto& name : names) {
    auto si = GetSet(s, family, table, name);
    if (!si) continue;
    DumpSetElems(s, family, table, &*si, intr);
    out.push_back(std::move(*si));
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Encoding

void AddExpr(nftnl_rule* r, nftnl_expr* e) { nftnl_rule_add_expr(r, e); }

nftnl_expr* NewExpr(const char* name) {
  nftnl_expr* e = nftnl_expr_alloc(name);
  if (!e) throw SysError(ENOMEM, "nftnl_expr_alloc", "out of memory");
  return e;
}

void AddMetaL4(nftnl_rule* r, uint8_t proto) {
  nftnl_expr* e = NewExpr("meta");
  nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, NFT_META_L4PROTO);
  nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, NFT_REG_1);
  AddExpr(r, e);
  e = NewExpr("cmp");
  nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
  nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, NFT_CMP_EQ);
  nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, &proto, 1);
  AddExpr(r, e);
}

// iptables-nft's add_addr(): a byte-aligned prefix loads only the prefix bytes; any other
// prefix loads the whole address through a bitwise mask. nft writes the same for `ip daddr`.
void AddAddr(nftnl_rule* r, int offset, const Cidr& c) {
  int i = 0;
  bool bitwise = false;
  for (; i < c.len; i++) {
    if (c.mask[i] != 0xff) {
      bitwise = c.mask[i] != 0;
      break;
    }
  }
  for (int j = i + 1; !bitwise && j < c.len; j++) bitwise = c.mask[j] != 0;
  uint32_t len = bitwise ? c.len : i;
  nftnl_expr* e = NewExpr("payload");
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, NFT_PAYLOAD_NETWORK_HEADER);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, offset);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
  AddExpr(r, e);
  if (bitwise) {
    uint8_t zero[16] = {0};
    e = NewExpr("bitwise");
    nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
    nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, len);
    nftnl_expr_set(e, NFTNL_EXPR_BITWISE_MASK, c.mask, len);
    nftnl_expr_set(e, NFTNL_EXPR_BITWISE_XOR, zero, len);
    AddExpr(r, e);
  }
  e = NewExpr("cmp");
  nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
  nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, NFT_CMP_EQ);
  nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, c.bytes, len);
  AddExpr(r, e);
}

// `ip daddr @set`: the destination address into a register, looked up in the set. `setId`:
// the set's id in this batch when it is created by the same batch (0: it exists already).
void AddDstSetLookup(nftnl_rule* r, uint8_t family, const std::string& set, uint32_t setId) {
  nftnl_expr* e = NewExpr("payload");
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, NFT_PAYLOAD_NETWORK_HEADER);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, NFT_REG_1);
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, static_cast<uint32_t>(DstOffset(family)));
  nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, AddrLen(family));
  AddExpr(r, e);
  e = NewExpr("lookup");
  nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SREG, NFT_REG_1);
  nftnl_expr_set_str(e, NFTNL_EXPR_LOOKUP_SET, set.c_str());
  if (setId) nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SET_ID, setId);
  AddExpr(r, e);
}

void AddCounter(nftnl_rule* r, uint64_t packets, uint64_t bytes) {
  nftnl_expr* e = NewExpr("counter");
  nftnl_expr_set_u64(e, NFTNL_EXPR_CTR_PACKETS, packets);
  nftnl_expr_set_u64(e, NFTNL_EXPR_CTR_BYTES, bytes);
  AddExpr(r, e);
}

void AddVerdict(nftnl_rule* r, const std::string& target) {
  nftnl_expr* e = NewExpr("immediate");
  nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
  if (target == "RETURN") nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, static_cast<uint32_t>(NFT_RETURN));
  else if (target == "ACCEPT") nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, NF_ACCEPT);
  else if (target == "DROP") nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, NF_DROP);
  else {
    nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, static_cast<uint32_t>(NFT_JUMP));
    nftnl_expr_set_str(e, NFTNL_EXPR_IMM_CHAIN, target.c_str());
  }
  AddExpr(r, e);
}

// struct xt_entry_target data of DNAT revision 2 (struct nf_nat_range2, XT_ALIGNed to 8), as
// libxt_DNAT in iptables 1.8.9 fills it for --to-destination ADDR[:PORT].
constexpr size_t kRange2Size = (sizeof(nf_nat_range2) + 7) & ~size_t(7);

void AddXtDnat(nftnl_rule* r, const RuleSpec& spec, uint8_t family) {
  Cidr a = ParseCidr(spec.to->address, family);
  uint8_t info[kRange2Size] = {0};
  nf_nat_range2 range{};
  range.flags = NF_NAT_RANGE_MAP_IPS;
  std::memcpy(&range.min_addr, a.bytes, a.len);
  std::memcpy(&range.max_addr, a.bytes, a.len);
  if (spec.to->port) {
    range.flags |= NF_NAT_RANGE_PROTO_SPECIFIED;
    range.min_proto.all = htons(spec.to->port);
    range.max_proto.all = htons(spec.to->port);
  }
  std::memcpy(info, &range, sizeof range);
  nftnl_expr* e = NewExpr("target");
  nftnl_expr_set(e, NFTNL_EXPR_TG_NAME, "DNAT", 4);
  nftnl_expr_set_u32(e, NFTNL_EXPR_TG_REV, 2);
  void* heap = calloc(1, kRange2Size);  // libnftnl takes ownership of TG_INFO (no copy)
  if (!heap) throw SysError(ENOMEM, "calloc", "out of memory");
  std::memcpy(heap, info, kRange2Size);
  nftnl_expr_set(e, NFTNL_EXPR_TG_INFO, heap, kRange2Size);  // owned by the expression now
  AddExpr(r, e);
}

void AddNativeDnat(nftnl_rule* r, const RuleSpec& spec, uint8_t family) {
  Cidr a = ParseCidr(spec.to->address, family);
  nftnl_expr* e = NewExpr("immediate");
  nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_1);
  nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, a.bytes, a.len);
  AddExpr(r, e);
  if (spec.to->port) {
    uint16_t port = htons(spec.to->port);
    e = NewExpr("immediate");
    nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_2);
    nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, &port, sizeof port);
    AddExpr(r, e);
  }
  e = NewExpr("nat");
  nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_TYPE, NFT_NAT_DNAT);
  nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_FAMILY, family);
  nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_ADDR_MIN, NFT_REG_1);
  if (spec.to->port) {
    nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_PROTO_MIN, NFT_REG_2);
    nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
  }
  AddExpr(r, e);
}

// -s/-d as both dialects write them: payload + (bitwise for a prefix) + cmp; /0 matches anything.
void AddAddrs(nftnl_rule* r, const RuleSpec& s, uint32_t family) {
  if (!s.src.empty()) {
    Cidr c = ParseCidr(s.src, family);
    if (c.prefix > 0) AddAddr(r, SrcOffset(family), c);
  }
  if (!s.dst.empty()) {
    Cidr c = ParseCidr(s.dst, family);
    if (c.prefix > 0) AddAddr(r, DstOffset(family), c);
  }
}

RulePtr BuildRule(uint8_t family, const std::string& table, const std::string& chain, const RuleSpec& s, Dialect d, uint64_t packets,
                  uint64_t bytes, uint32_t dstSetId) {
  RulePtr r(nftnl_rule_alloc());
  if (!r) throw SysError(ENOMEM, "nftnl_rule_alloc", "out of memory");
  nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, family);
  nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, table.c_str());
  nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, chain.c_str());
  const auto proto = static_cast<uint8_t>(s.protocol);
  if (d == Dialect::Xt) {
    // nft_ipv4_add()/nft_ipv6_add(): protocol, source, destination, matches, counter, compat, action.
    if (proto) AddMetaL4(r.get(), proto);
    AddAddrs(r.get(), s, family);
    if (s.comment) {
      nftnl_expr* e = NewExpr("match");
      nftnl_expr_set(e, NFTNL_EXPR_MT_NAME, "comment", 7);
      nftnl_expr_set_u32(e, NFTNL_EXPR_MT_REV, 0);
      void* info = calloc(1, kCommentLen);
      if (!info) throw SysError(ENOMEM, "calloc", "out of memory");
      std::memcpy(info, s.comment->data(), std::min(s.comment->size(), kCommentLen - 1));
      nftnl_expr_set(e, NFTNL_EXPR_MT_INFO, info, kCommentLen);  // libnftnl takes ownership of MT_INFO
      AddExpr(r.get(), e);
    }
    AddCounter(r.get(), packets, bytes);
    nftnl_rule_set_u32(r.get(), NFTNL_RULE_COMPAT_PROTO, proto);
    nftnl_rule_set_u32(r.get(), NFTNL_RULE_COMPAT_FLAGS, 0);
    if (s.target == "DNAT") AddXtDnat(r.get(), s, family);
    else if (!s.target.empty()) AddVerdict(r.get(), s.target);
  } else {
    AddAddrs(r.get(), s, family);
    if (!s.dstSet.empty()) AddDstSetLookup(r.get(), family, s.dstSet, dstSetId);
    if (proto) AddMetaL4(r.get(), proto);
    AddCounter(r.get(), packets, bytes);
    if (s.target == "DNAT") AddNativeDnat(r.get(), s, family);
    else if (!s.target.empty()) AddVerdict(r.get(), s.target);
    if (s.comment) {
      UdataPtr u(nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN));
      if (!u) throw SysError(ENOMEM, "nftnl_udata_buf_alloc", "out of memory");
      if (!nftnl_udata_put_strz(u.get(), kUdataRuleComment, s.comment->c_str())) throw std::invalid_argument("comment too long");
      nftnl_rule_set_data(r.get(), NFTNL_RULE_USERDATA, nftnl_udata_buf_data(u.get()), nftnl_udata_buf_len(u.get()));
    }
  }
  return r;
}

// ---------------------------------------------------------------------------------------------
// Parsing

struct Reg {
  enum Kind { None, Meta, Payload, Imm } kind = None;
  uint32_t offset = 0, len = 0;
  bool masked = false;
  uint8_t mask[16] = {0};
  uint8_t data[16] = {0};
};

LiveRule ParseRule(nftnl_rule* r, uint8_t family, Dialect d) {
  LiveRule lr;
  if (nftnl_rule_is_set(r, NFTNL_RULE_HANDLE)) lr.handle = nftnl_rule_get_u64(r, NFTNL_RULE_HANDLE);
  const int alen = family == NFPROTO_IPV6 ? 16 : 4;
  std::map<uint32_t, Reg> regs;
  bool done = false;  // a verdict/target/nat was seen: anything after it is unmodelled
  auto unknown = [&](const std::string& what) { lr.unknown.push_back(what); };
  nftnl_expr_iter* it = nftnl_expr_iter_create(r);
  if (!it) throw SysError(ENOMEM, "nftnl_expr_iter_create", "out of memory");
  for (nftnl_expr* e = nftnl_expr_iter_next(it); e; e = nftnl_expr_iter_next(it)) {
    std::string name = nftnl_expr_get_str(e, NFTNL_EXPR_NAME);
    if (name == "counter") {
      lr.packets = nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_PACKETS);
      lr.bytes = nftnl_expr_get_u64(e, NFTNL_EXPR_CTR_BYTES);
      continue;
    }
    if (done) {
      unknown(name);
      continue;
    }
    if (name == "meta") {
      uint32_t key = nftnl_expr_get_u32(e, NFTNL_EXPR_META_KEY);
      if (!nftnl_expr_is_set(e, NFTNL_EXPR_META_DREG) || key != NFT_META_L4PROTO) {
        unknown("meta");
        continue;
      }
      Reg g;
      g.kind = Reg::Meta;
      regs[nftnl_expr_get_u32(e, NFTNL_EXPR_META_DREG)] = g;
    } else if (name == "payload") {
      Reg g;
      g.kind = Reg::Payload;
      g.offset = nftnl_expr_get_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET);
      g.len = nftnl_expr_get_u32(e, NFTNL_EXPR_PAYLOAD_LEN);
      uint32_t base = nftnl_expr_get_u32(e, NFTNL_EXPR_PAYLOAD_BASE);
      if (base != NFT_PAYLOAD_NETWORK_HEADER || g.len == 0 || g.len > static_cast<uint32_t>(alen) ||
          (g.offset != static_cast<uint32_t>(SrcOffset(family)) && g.offset != static_cast<uint32_t>(DstOffset(family))) ||
          !nftnl_expr_is_set(e, NFTNL_EXPR_PAYLOAD_DREG)) {
        unknown("payload");
        continue;
      }
      regs[nftnl_expr_get_u32(e, NFTNL_EXPR_PAYLOAD_DREG)] = g;
    } else if (name == "bitwise") {
      uint32_t sreg = nftnl_expr_get_u32(e, NFTNL_EXPR_BITWISE_SREG);
      uint32_t dreg = nftnl_expr_get_u32(e, NFTNL_EXPR_BITWISE_DREG);
      auto f = regs.find(sreg);
      uint32_t mlen = 0, xlen = 0;
      const void* mask = nftnl_expr_get(e, NFTNL_EXPR_BITWISE_MASK, &mlen);
      const void* xr = nftnl_expr_get(e, NFTNL_EXPR_BITWISE_XOR, &xlen);
      bool ok = f != regs.end() && f->second.kind == Reg::Payload && sreg == dreg && mask && xr && mlen == f->second.len && xlen == mlen &&
                mlen <= 16;
      if (ok) {
        for (uint32_t i = 0; i < xlen; i++) ok = ok && static_cast<const uint8_t*>(xr)[i] == 0;
      }
      if (!ok) {
        unknown("bitwise");
        regs.erase(dreg);
        continue;
      }
      f->second.masked = true;
      std::memcpy(f->second.mask, mask, mlen);
    } else if (name == "cmp") {
      uint32_t sreg = nftnl_expr_get_u32(e, NFTNL_EXPR_CMP_SREG);
      uint32_t op = nftnl_expr_get_u32(e, NFTNL_EXPR_CMP_OP);
      uint32_t dlen = 0;
      const auto* data = static_cast<const uint8_t*>(nftnl_expr_get(e, NFTNL_EXPR_CMP_DATA, &dlen));
      auto f = regs.find(sreg);
      if (f == regs.end() || !data) {
        unknown("cmp");
        continue;
      }
      Reg g = f->second;
      regs.erase(f);
      if (op != NFT_CMP_EQ) {
        unknown(g.kind == Reg::Meta ? "!protocol" : g.offset == static_cast<uint32_t>(SrcOffset(family)) ? "!source" : "!destination");
        continue;
      }
      if (g.kind == Reg::Meta) {
        if (dlen != 1 || !(data[0] == IPPROTO_TCP || data[0] == IPPROTO_UDP) || lr.spec.protocol != Protocol::Any) {
          unknown("protocol");
          continue;
        }
        lr.spec.protocol = static_cast<Protocol>(data[0]);
      } else if (g.kind == Reg::Payload) {
        if (dlen != g.len) {
          unknown("cmp");
          continue;
        }
        uint8_t bytes[16] = {0};
        std::memcpy(bytes, data, dlen);
        int prefix = static_cast<int>(g.len) * 8;
        if (g.masked) {
          prefix = MaskPrefix(g.mask, static_cast<int>(g.len));
          if (prefix < 0) {
            unknown("address mask");
            continue;
          }
        }
        std::string cidr = FormatCidr(bytes, alen, prefix);
        std::string& slot = g.offset == static_cast<uint32_t>(SrcOffset(family)) ? lr.spec.src : lr.spec.dst;
        if (!slot.empty()) {
          unknown("address");
          continue;
        }
        slot = cidr;
      } else {
        unknown("cmp");
      }
    } else if (name == "lookup") {
      // `ip daddr @set` (native): the whole destination address looked up, not inverted, no map.
      uint32_t sreg = nftnl_expr_get_u32(e, NFTNL_EXPR_LOOKUP_SREG);
      auto f = regs.find(sreg);
      uint32_t flags = nftnl_expr_is_set(e, NFTNL_EXPR_LOOKUP_FLAGS) ? nftnl_expr_get_u32(e, NFTNL_EXPR_LOOKUP_FLAGS) : 0;
      bool ok = d == Dialect::Native && f != regs.end() && f->second.kind == Reg::Payload && !f->second.masked &&
                f->second.offset == static_cast<uint32_t>(DstOffset(family)) && f->second.len == static_cast<uint32_t>(alen) &&
                !nftnl_expr_is_set(e, NFTNL_EXPR_LOOKUP_DREG) && flags == 0 && lr.spec.dst.empty() && lr.spec.dstSet.empty();
      if (f != regs.end()) regs.erase(f);
      if (!ok) {
        unknown(flags ? "!set" : "lookup");
        continue;
      }
      lr.spec.dstSet = nftnl_expr_get_str(e, NFTNL_EXPR_LOOKUP_SET);
    } else if (name == "match") {
      std::string mname = nftnl_expr_get_str(e, NFTNL_EXPR_MT_NAME);
      uint32_t ilen = 0;
      const auto* info = static_cast<const char*>(nftnl_expr_get(e, NFTNL_EXPR_MT_INFO, &ilen));
      if (d == Dialect::Xt && mname == "comment" && nftnl_expr_get_u32(e, NFTNL_EXPR_MT_REV) == 0 && info && ilen == kCommentLen &&
          !lr.spec.comment) {
        lr.spec.comment = std::string(info, strnlen(info, kCommentLen));
      } else {
        unknown(mname);
      }
    } else if (name == "immediate") {
      uint32_t dreg = nftnl_expr_get_u32(e, NFTNL_EXPR_IMM_DREG);
      if (dreg == NFT_REG_VERDICT) {
        auto v = static_cast<int32_t>(nftnl_expr_get_u32(e, NFTNL_EXPR_IMM_VERDICT));
        done = true;
        if (v == NFT_RETURN) lr.spec.target = "RETURN";
        else if (v == NF_ACCEPT) lr.spec.target = "ACCEPT";
        else if (v == NF_DROP) lr.spec.target = "DROP";
        else if (v == NFT_JUMP) lr.spec.target = nftnl_expr_get_str(e, NFTNL_EXPR_IMM_CHAIN);
        else if (v == NFT_GOTO) {
          lr.spec.target = nftnl_expr_get_str(e, NFTNL_EXPR_IMM_CHAIN);
          unknown("goto");
        } else unknown("verdict");
      } else {
        uint32_t dlen = 0;
        const void* data = nftnl_expr_get(e, NFTNL_EXPR_IMM_DATA, &dlen);
        if (!data || dlen > 16) {
          unknown("immediate");
          continue;
        }
        Reg g;
        g.kind = Reg::Imm;
        g.len = dlen;
        std::memcpy(g.data, data, dlen);
        regs[dreg] = g;
      }
    } else if (name == "target") {
      std::string tname = nftnl_expr_get_str(e, NFTNL_EXPR_TG_NAME);
      uint32_t ilen = 0;
      const void* info = nftnl_expr_get(e, NFTNL_EXPR_TG_INFO, &ilen);
      done = true;
      lr.spec.target = tname;
      if (d != Dialect::Xt || tname != "DNAT" || nftnl_expr_get_u32(e, NFTNL_EXPR_TG_REV) != 2 || !info || ilen < sizeof(nf_nat_range2)) {
        unknown("target " + tname);
        continue;
      }
      nf_nat_range2 range;
      std::memcpy(&range, info, sizeof range);
      bool port = range.flags & NF_NAT_RANGE_PROTO_SPECIFIED;
      if ((range.flags & ~(NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED)) || !(range.flags & NF_NAT_RANGE_MAP_IPS) ||
          std::memcmp(&range.min_addr, &range.max_addr, sizeof range.min_addr) != 0 ||
          (port && range.min_proto.all != range.max_proto.all) || range.base_proto.all != 0) {
        unknown("DNAT options");
        continue;
      }
      if (port && range.min_proto.all == 0) unknown("DNAT port 0");
      lr.spec.to = rules::Endpoint{FormatAddr(reinterpret_cast<const uint8_t*>(&range.min_addr), alen),
                                   static_cast<uint16_t>(port ? ntohs(range.min_proto.all) : 0)};
    } else if (name == "nat") {
      done = true;
      lr.spec.target = "DNAT";
      uint32_t type = nftnl_expr_get_u32(e, NFTNL_EXPR_NAT_TYPE);
      uint32_t flags = nftnl_expr_is_set(e, NFTNL_EXPR_NAT_FLAGS) ? nftnl_expr_get_u32(e, NFTNL_EXPR_NAT_FLAGS) : 0;
      bool hasAddr = nftnl_expr_is_set(e, NFTNL_EXPR_NAT_REG_ADDR_MIN);
      bool hasPort = nftnl_expr_is_set(e, NFTNL_EXPR_NAT_REG_PROTO_MIN);
      // The kernel echoes max = min registers and the MAP_IPS/PROTO_SPECIFIED flags it implies.
      auto regOr = [&](uint16_t attr, uint32_t dflt) { return nftnl_expr_is_set(e, attr) ? nftnl_expr_get_u32(e, attr) : dflt; };
      uint32_t addrMin = regOr(NFTNL_EXPR_NAT_REG_ADDR_MIN, 0), protoMin = regOr(NFTNL_EXPR_NAT_REG_PROTO_MIN, 0);
      if (d != Dialect::Native || type != NFT_NAT_DNAT || !hasAddr || regOr(NFTNL_EXPR_NAT_REG_ADDR_MAX, addrMin) != addrMin ||
          regOr(NFTNL_EXPR_NAT_REG_PROTO_MAX, protoMin) != protoMin ||
          (flags & ~uint32_t(NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED))) {
        if (type != NFT_NAT_DNAT) lr.spec.target = "SNAT";
        unknown("nat");
        continue;
      }
      auto a = regs.find(nftnl_expr_get_u32(e, NFTNL_EXPR_NAT_REG_ADDR_MIN));
      if (a == regs.end() || a->second.kind != Reg::Imm || a->second.len != static_cast<uint32_t>(alen)) {
        unknown("nat");
        continue;
      }
      lr.spec.to = rules::Endpoint{FormatAddr(a->second.data, alen), 0};
      if (hasPort) {
        auto p = regs.find(nftnl_expr_get_u32(e, NFTNL_EXPR_NAT_REG_PROTO_MIN));
        if (p == regs.end() || p->second.kind != Reg::Imm || p->second.len != 2) {
          unknown("nat");
          continue;
        }
        uint16_t port;
        std::memcpy(&port, p->second.data, 2);
        lr.spec.to->port = ntohs(port);
        if (port == 0) unknown("nat port 0");
      }
    } else {
      unknown(name);
    }
  }
  nftnl_expr_iter_destroy(it);
  for (auto& [reg, g] : regs) {
    if (g.kind != Reg::Imm) unknown("dangling load");
  }
  if (nftnl_rule_is_set(r, NFTNL_RULE_USERDATA)) {
    uint32_t ulen = 0;
    const void* ud = nftnl_rule_get_data(r, NFTNL_RULE_USERDATA, &ulen);
    if (d == Dialect::Native) {
      bool other = false;
      std::string comment;
      if (UdataComment(ud, ulen, kUdataRuleComment, &comment, &other)) lr.spec.comment = std::move(comment);
      if (other) unknown("userdata");
    }
    // Xt: iptables-nft 1.8.9 keeps the comment in the xt match; newer versions add userdata
    // describing the rule for old readers, which does not change what it means.
  }
  if (d == Dialect::Xt && nftnl_rule_is_set(r, NFTNL_RULE_COMPAT_FLAGS) && nftnl_rule_get_u32(r, NFTNL_RULE_COMPAT_FLAGS) != 0)
    unknown("compat flags");
  return lr;
}

ChainInfo ReadChainRules(NlSocket& s, const ChainInfo& base, uint8_t family, const std::string& table, Dialect d, bool* intr) {
  ChainInfo c = base;
  DumpRules(s, family, table, c.name, intr, [&](const nlmsghdr*, nftnl_rule* r) { c.rules.push_back(ParseRule(r, family, d)); });
  return c;
}

}  // namespace nft
}  // namespace edgemesh
