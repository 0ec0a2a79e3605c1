// libiptc core of the iptables-legacy backend. See iptc_core.h.
//
// Encoding follows what iptables-legacy 1.8.9 writes for `iptables -A CHAIN [-s S] [-d D]
// [-p tcp|udp] [-m comment --comment C] -j TARGET [--to-destination A[:P]]` (checked against
// raw entries written by the CLI on this kernel): address and mask in the entry header, the
// protocol number alone (IPv6 also sets IP6T_F_PROTO), xt_comment revision 0, standard
// targets through libiptc's label mapping, DNAT revision 2 (struct nf_nat_range2).
#include "iptc/iptc_core.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <malloc.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/inotify.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <libiptc/libiptc.h>
extern "C" {  // libip6tc.h, unlike libiptc.h, has no C++ guard
#include <libiptc/libip6tc.h>
}
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/xt_comment.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <ctime>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "common/netns.h"
#include "common/syserror.h"
#include "rules/rule_model.h"

namespace edgemesh {
namespace iptc {

namespace {

constexpr const char* kTable = "nat";

// libiptc keeps a little global state (the last function for iptc_strerror): one user at a time.
std::mutex& IptcMutex() {
  static std::mutex m;
  return m;
}

// ---------------------------------------------------------------------------------------------
// Addresses (the shared model's parsing; the kernel structs take bytes and masks)

using rules::AddrLen;
using rules::Cidr;
using rules::FormatAddr;
using rules::FormatCidr;
using rules::IsVerdict;
using rules::ParseAddr;
using rules::PrefixFromMask;
using rules::Protocol;

bool AllZero(const uint8_t* p, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (p[i]) return false;
  return true;
}

// ---------------------------------------------------------------------------------------------
// Family traits: the only place that knows iptc_* from ip6tc_* and ipt_entry from ip6t_entry.

struct V4 {
  using Entry = struct ipt_entry;
  using GetInfo = struct ipt_getinfo;
  using GetEntries = struct ipt_get_entries;
  static constexpr int kSockLevel = IPPROTO_IP;
  static constexpr int kSoGetInfo = IPT_SO_GET_INFO;
  static constexpr int kSoGetEntries = IPT_SO_GET_ENTRIES;
  static constexpr Family kFamily = Family::V4;
  static constexpr const char* kName = "iptables";
  static constexpr const char* kNamesFile = "/proc/thread-self/net/ip_tables_names";
  static xtc_handle* init(const char* t) { return iptc_init(t); }
  static void free(xtc_handle* h) { iptc_free(h); }
  static int is_chain(const char* c, xtc_handle* h) { return iptc_is_chain(c, h); }
  static int builtin(const char* c, xtc_handle* h) { return iptc_builtin(c, h); }
  static const Entry* first_rule(const char* c, xtc_handle* h) { return iptc_first_rule(c, h); }
  static const Entry* next_rule(const Entry* e, xtc_handle* h) { return iptc_next_rule(e, h); }
  static const char* get_target(const Entry* e, xtc_handle* h) { return iptc_get_target(e, h); }
  static int create_chain(const char* c, xtc_handle* h) { return iptc_create_chain(c, h); }
  static int flush_entries(const char* c, xtc_handle* h) { return iptc_flush_entries(c, h); }
  static int delete_chain(const char* c, xtc_handle* h) { return iptc_delete_chain(c, h); }
  static int insert_entry(const char* c, const Entry* e, unsigned n, xtc_handle* h) { return iptc_insert_entry(c, e, n, h); }
  static int append_entry(const char* c, const Entry* e, xtc_handle* h) { return iptc_append_entry(c, e, h); }
  static int replace_entry(const char* c, const Entry* e, unsigned n, xtc_handle* h) { return iptc_replace_entry(c, e, n, h); }
  static int delete_num_entry(const char* c, unsigned n, xtc_handle* h) { return iptc_delete_num_entry(c, n, h); }
  static int commit(xtc_handle* h) { return iptc_commit(h); }
  static const char* strerror(int e) { return iptc_strerror(e); }

  static void SetHeader(Entry& e, const std::optional<Cidr>& src, const std::optional<Cidr>& dst, Protocol proto) {
    if (src) {
      std::memcpy(&e.ip.src, src->bytes, 4);
      std::memcpy(&e.ip.smsk, src->mask, 4);
    }
    if (dst) {
      std::memcpy(&e.ip.dst, dst->bytes, 4);
      std::memcpy(&e.ip.dmsk, dst->mask, 4);
    }
    e.ip.proto = static_cast<uint16_t>(proto);
  }
  static void ReadHeader(const Entry& e, LiveRule& r) {
    const auto& ip = e.ip;
    ReadAddr(reinterpret_cast<const uint8_t*>(&ip.src), reinterpret_cast<const uint8_t*>(&ip.smsk), r.spec.src, "src-mask", r);
    ReadAddr(reinterpret_cast<const uint8_t*>(&ip.dst), reinterpret_cast<const uint8_t*>(&ip.dmsk), r.spec.dst, "dst-mask", r);
    if (ip.iniface[0] || !AllZero(ip.iniface_mask, sizeof ip.iniface_mask)) r.unknown.push_back("in-interface");
    if (ip.outiface[0] || !AllZero(ip.outiface_mask, sizeof ip.outiface_mask)) r.unknown.push_back("out-interface");
    ReadInv(ip.invflags, r);
    if (ip.flags & IPT_F_FRAG) r.unknown.push_back("fragment");
    if (ip.flags & IPT_F_GOTO) r.unknown.push_back("goto");
    ReadProto(ip.proto, r);
  }
  static void ReadAddr(const uint8_t* a, const uint8_t* m, std::string& out, const char* badMask, LiveRule& r) {
    if (AllZero(m, 4) && AllZero(a, 4)) return;
    int p = PrefixFromMask(kFamily, m);
    if (p < 0) {
      r.unknown.push_back(badMask);
      return;
    }
    out = FormatCidr(kFamily, a, p);
  }
  static void ReadInv(uint8_t inv, LiveRule& r) {
    if (inv & IPT_INV_VIA_IN) r.unknown.push_back("!in-interface");
    if (inv & IPT_INV_VIA_OUT) r.unknown.push_back("!out-interface");
    if (inv & IPT_INV_SRCIP) r.unknown.push_back("!src");
    if (inv & IPT_INV_DSTIP) r.unknown.push_back("!dst");
    if (inv & IPT_INV_FRAG) r.unknown.push_back("!fragment");
    if (inv & IPT_INV_PROTO) r.unknown.push_back("!protocol");
    if (inv & IPT_INV_TOS) r.unknown.push_back("!tos");
  }
  static void ReadProto(unsigned proto, LiveRule& r) {
    if (proto == 0 || proto == IPPROTO_TCP || proto == IPPROTO_UDP) r.spec.protocol = static_cast<Protocol>(proto);
    else r.unknown.push_back("protocol:" + std::to_string(proto));
  }
};

struct V6 {
  using Entry = struct ip6t_entry;
  using GetInfo = struct ip6t_getinfo;
  using GetEntries = struct ip6t_get_entries;
  static constexpr int kSockLevel = IPPROTO_IPV6;
  static constexpr int kSoGetInfo = IP6T_SO_GET_INFO;
  static constexpr int kSoGetEntries = IP6T_SO_GET_ENTRIES;
  static constexpr Family kFamily = Family::V6;
  static constexpr const char* kName = "ip6tables";
  static constexpr const char* kNamesFile = "/proc/thread-self/net/ip6_tables_names";
  static xtc_handle* init(const char* t) { return ip6tc_init(t); }
  static void free(xtc_handle* h) { ip6tc_free(h); }
  static int is_chain(const char* c, xtc_handle* h) { return ip6tc_is_chain(c, h); }
  static int builtin(const char* c, xtc_handle* h) { return ip6tc_builtin(c, h); }
  static const Entry* first_rule(const char* c, xtc_handle* h) { return ip6tc_first_rule(c, h); }
  static const Entry* next_rule(const Entry* e, xtc_handle* h) { return ip6tc_next_rule(e, h); }
  static const char* get_target(const Entry* e, xtc_handle* h) { return ip6tc_get_target(e, h); }
  static int create_chain(const char* c, xtc_handle* h) { return ip6tc_create_chain(c, h); }
  static int flush_entries(const char* c, xtc_handle* h) { return ip6tc_flush_entries(c, h); }
  static int delete_chain(const char* c, xtc_handle* h) { return ip6tc_delete_chain(c, h); }
  static int insert_entry(const char* c, const Entry* e, unsigned n, xtc_handle* h) { return ip6tc_insert_entry(c, e, n, h); }
  static int append_entry(const char* c, const Entry* e, xtc_handle* h) { return ip6tc_append_entry(c, e, h); }
  static int replace_entry(const char* c, const Entry* e, unsigned n, xtc_handle* h) { return ip6tc_replace_entry(c, e, n, h); }
  static int delete_num_entry(const char* c, unsigned n, xtc_handle* h) { return ip6tc_delete_num_entry(c, n, h); }
  static int commit(xtc_handle* h) { return ip6tc_commit(h); }
  static const char* strerror(int e) { return ip6tc_strerror(e); }

  static void SetHeader(Entry& e, const std::optional<Cidr>& src, const std::optional<Cidr>& dst, Protocol proto) {
    if (src) {
      std::memcpy(&e.ipv6.src, src->bytes, 16);
      std::memcpy(&e.ipv6.smsk, src->mask, 16);
    }
    if (dst) {
      std::memcpy(&e.ipv6.dst, dst->bytes, 16);
      std::memcpy(&e.ipv6.dmsk, dst->mask, 16);
    }
    e.ipv6.proto = static_cast<uint16_t>(proto);
    if (proto != Protocol::Any) e.ipv6.flags |= IP6T_F_PROTO;  // as ip6tables does for -p
  }
  static void ReadHeader(const Entry& e, LiveRule& r) {
    const auto& ip = e.ipv6;
    ReadAddr(reinterpret_cast<const uint8_t*>(&ip.src), reinterpret_cast<const uint8_t*>(&ip.smsk), r.spec.src, "src-mask", r);
    ReadAddr(reinterpret_cast<const uint8_t*>(&ip.dst), reinterpret_cast<const uint8_t*>(&ip.dmsk), r.spec.dst, "dst-mask", r);
    if (ip.iniface[0] || !AllZero(ip.iniface_mask, sizeof ip.iniface_mask)) r.unknown.push_back("in-interface");
    if (ip.outiface[0] || !AllZero(ip.outiface_mask, sizeof ip.outiface_mask)) r.unknown.push_back("out-interface");
    if (ip.invflags & IP6T_INV_VIA_IN) r.unknown.push_back("!in-interface");
    if (ip.invflags & IP6T_INV_VIA_OUT) r.unknown.push_back("!out-interface");
    if (ip.invflags & IP6T_INV_SRCIP) r.unknown.push_back("!src");
    if (ip.invflags & IP6T_INV_DSTIP) r.unknown.push_back("!dst");
    if (ip.invflags & IP6T_INV_FRAG) r.unknown.push_back("!fragment");
    if (ip.invflags & IP6T_INV_PROTO) r.unknown.push_back("!protocol");
    if (ip.invflags & IP6T_INV_TOS) r.unknown.push_back("!tos");
    if (ip.flags & IP6T_F_TOS || ip.tos) r.unknown.push_back("tos");
    if (ip.flags & IP6T_F_GOTO) r.unknown.push_back("goto");
    if (ip.proto == 0 || ip.proto == IPPROTO_TCP || ip.proto == IPPROTO_UDP) r.spec.protocol = static_cast<Protocol>(ip.proto);
    else r.unknown.push_back("protocol:" + std::to_string(ip.proto));
  }
  static void ReadAddr(const uint8_t* a, const uint8_t* m, std::string& out, const char* badMask, LiveRule& r) {
    if (AllZero(m, 16) && AllZero(a, 16)) return;
    int p = PrefixFromMask(kFamily, m);
    if (p < 0) {
      r.unknown.push_back(badMask);
      return;
    }
    out = FormatCidr(kFamily, a, p);
  }
};

// ---------------------------------------------------------------------------------------------
// Entries

constexpr size_t kCommentMatchSize = XT_ALIGN(sizeof(struct xt_entry_match) + sizeof(struct xt_comment_info));
constexpr size_t kStandardTargetSize = XT_ALIGN(sizeof(struct xt_standard_target));
constexpr size_t kDnatTargetSize = XT_ALIGN(sizeof(struct xt_entry_target) + sizeof(struct nf_nat_range2));

// An entry buffer with the alignment the kernel structs need.
class EntryBuf {
 public:
  explicit EntryBuf(size_t size) : words_((size + 7) / 8, 0), size_(size) {}
  uint8_t* data() { return reinterpret_cast<uint8_t*>(words_.data()); }
  size_t size() const { return size_; }

 private:
  std::vector<uint64_t> words_;
  size_t size_;
};

// Builds the entry iptables-legacy writes for `r` (validated, canonical).
template <class T>
EntryBuf BuildEntry(const RuleSpec& r, uint64_t packets = 0, uint64_t bytes = 0) {
  using Entry = typename T::Entry;
  const bool dnat = r.target == "DNAT";
  size_t matches = r.comment ? kCommentMatchSize : 0;
  size_t targetSize = dnat ? kDnatTargetSize : kStandardTargetSize;
  size_t total = sizeof(Entry) + matches + targetSize;
  EntryBuf buf(total);
  auto* e = reinterpret_cast<Entry*>(buf.data());
  const std::optional<Cidr> src = r.src.empty() ? std::nullopt : rules::ParseCidr(T::kFamily, r.src);
  const std::optional<Cidr> dst = r.dst.empty() ? std::nullopt : rules::ParseCidr(T::kFamily, r.dst);
  T::SetHeader(*e, src, dst, r.protocol);
  e->target_offset = static_cast<uint16_t>(sizeof(Entry) + matches);
  e->next_offset = static_cast<uint16_t>(total);
  e->counters.pcnt = packets;
  e->counters.bcnt = bytes;
  if (r.comment) {
    auto* m = reinterpret_cast<struct xt_entry_match*>(buf.data() + sizeof(Entry));
    m->u.user.match_size = static_cast<uint16_t>(kCommentMatchSize);
    std::strncpy(m->u.user.name, "comment", sizeof m->u.user.name - 1);
    m->u.user.revision = 0;
    auto* info = reinterpret_cast<struct xt_comment_info*>(m->data);
    std::memcpy(info->comment, r.comment->data(), std::min(r.comment->size(), sizeof info->comment - 1));
  }
  auto* t = reinterpret_cast<struct xt_entry_target*>(buf.data() + e->target_offset);
  t->u.user.target_size = static_cast<uint16_t>(targetSize);
  std::strncpy(t->u.user.name, r.target.c_str(), sizeof t->u.user.name - 1);
  if (dnat && r.to) {
    t->u.user.revision = 2;
    auto* range = reinterpret_cast<struct nf_nat_range2*>(t->data);
    uint8_t a[16] = {};
    ParseAddr(T::kFamily, r.to->address, a);
    range->flags = NF_NAT_RANGE_MAP_IPS;
    std::memcpy(&range->min_addr, a, AddrLen(T::kFamily));
    std::memcpy(&range->max_addr, a, AddrLen(T::kFamily));
    if (r.to->port) {
      range->flags |= NF_NAT_RANGE_PROTO_SPECIFIED;
      range->min_proto.all = htons(r.to->port);
      range->max_proto.all = htons(r.to->port);
    }
  }
  return buf;
}

template <class T>
void ReadDnat(const struct xt_entry_target* t, LiveRule& r) {
  size_t dataLen = t->u.target_size - sizeof(struct xt_entry_target);
  unsigned rev = t->u.user.revision;
  if ((rev != 1 && rev != 2) || dataLen < sizeof(struct nf_nat_range)) {
    r.unknown.push_back("DNAT-revision-" + std::to_string(rev));
    return;
  }
  const auto* range = reinterpret_cast<const struct nf_nat_range*>(t->data);
  const size_t n = AddrLen(T::kFamily);
  const auto* lo = reinterpret_cast<const uint8_t*>(&range->min_addr);
  const auto* hi = reinterpret_cast<const uint8_t*>(&range->max_addr);
  unsigned known = NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED;
  if ((range->flags & ~known) || !(range->flags & NF_NAT_RANGE_MAP_IPS)) r.unknown.push_back("DNAT-options");
  if (std::memcmp(lo, hi, n) != 0) r.unknown.push_back("DNAT-range");
  if (rev == 2 && dataLen >= sizeof(struct nf_nat_range2) && reinterpret_cast<const struct nf_nat_range2*>(t->data)->base_proto.all != 0)
    r.unknown.push_back("DNAT-options");
  rules::Endpoint to{FormatAddr(T::kFamily, lo), 0};
  if (range->flags & NF_NAT_RANGE_PROTO_SPECIFIED) {
    if (range->min_proto.all != range->max_proto.all) r.unknown.push_back("DNAT-port-range");
    to.port = ntohs(range->min_proto.all);
    if (to.port == 0) r.unknown.push_back("DNAT-port-0");
  }
  r.spec.to = std::move(to);
}

// Decodes one entry; `tn` is its target's name as iptables shows it (a chain, a verdict, a module).
template <class T>
LiveRule ParseEntry(const typename T::Entry* e, const char* tn) {
  using Entry = typename T::Entry;
  LiveRule r;
  r.packets = e->counters.pcnt;
  r.bytes = e->counters.bcnt;
  T::ReadHeader(*e, r);
  const auto* base = reinterpret_cast<const uint8_t*>(e);
  for (size_t off = sizeof(Entry); off + sizeof(struct xt_entry_match) <= e->target_offset;) {
    const auto* m = reinterpret_cast<const struct xt_entry_match*>(base + off);
    if (m->u.match_size < sizeof(struct xt_entry_match)) break;
    std::string name(m->u.user.name, strnlen(m->u.user.name, sizeof m->u.user.name));
    if (name == "comment" && m->u.user.revision == 0 && m->u.match_size >= kCommentMatchSize && !r.spec.comment) {
      const auto* info = reinterpret_cast<const struct xt_comment_info*>(m->data);
      r.spec.comment = std::string(info->comment, strnlen(info->comment, sizeof info->comment));
    } else {
      r.unknown.push_back(name);
    }
    off += m->u.match_size;
  }
  r.spec.target = tn ? tn : "";
  if (r.spec.target.empty()) r.unknown.push_back("no-target");
  const auto* t = reinterpret_cast<const struct xt_entry_target*>(base + e->target_offset);
  if (r.spec.target == "DNAT") {
    ReadDnat<T>(t, r);
  } else if (std::strcmp(t->u.user.name, "") != 0 && std::strcmp(t->u.user.name, XT_STANDARD_TARGET) != 0) {
    // A module target other than DNAT: its options are not modelled.
    size_t dataLen = t->u.target_size > sizeof(struct xt_entry_target) ? t->u.target_size - sizeof(struct xt_entry_target) : 0;
    if (!AllZero(t->data, dataLen)) r.unknown.push_back(r.spec.target + "-options");
  }
  return r;
}

// A live rule that is `a` (and nothing we do not model).
bool SameModelled(const RuleSpec& a, const LiveRule& live) { return live.unknown.empty() && rules::SameRule(a, live.spec); }

bool SameLive(const LiveRule& a, const LiveRule& b) { return a.unknown == b.unknown && rules::IdenticalRule(a.spec, b.spec); }

template <class T>
std::vector<LiveRule> ChainRulesOf(const std::string& chain, xtc_handle* h) {
  std::vector<LiveRule> out;
  for (const auto* e = T::first_rule(chain.c_str(), h); e; e = T::next_rule(e, h)) out.push_back(ParseEntry<T>(e, T::get_target(e, h)));
  return out;
}

template <class T>
size_t CountRules(const std::string& chain, xtc_handle* h) {
  size_t n = 0;
  for (const auto* e = T::first_rule(chain.c_str(), h); e; e = T::next_rule(e, h)) n++;
  return n;
}

// ---------------------------------------------------------------------------------------------
// Validation (re-checked here so that bad input can never corrupt memory; wording lives in TS)

SysError TxError(size_t index, int err, const std::string& syscall, const std::string& msg) {
  SysError e(err, syscall, "operation " + std::to_string(index) + ": " + msg, "ETRANSACTION");
  e.opIndex = static_cast<int>(index);
  return e;
}

bool ValidChainName(const std::string& c) { return rules::ValidChainName(c, kMaxChainName); }

void ValidateRule(Family f, size_t i, RuleSpec& r) {
  try {
    rules::ValidateRule(f, r, rules::RuleLimits{kMaxChainName, false, false});
  } catch (const rules::RuleError& e) {
    throw TxError(i, EINVAL, "validate", e.what());
  }
}

void Validate(Family f, std::vector<Op>& ops) {
  for (size_t i = 0; i < ops.size(); i++) {
    Op& op = ops[i];
    if (!ValidChainName(op.chain)) throw TxError(i, EINVAL, "validate", "invalid chain name \"" + op.chain.substr(0, 64) + "\"");
    switch (op.kind) {
      case OpKind::FlushChain:
      case OpKind::DeleteChain: break;
      case OpKind::InsertRule:
        if (op.position < 0) throw TxError(i, EINVAL, "validate", "position must be 1 or more");
        ValidateRule(f, i, op.rule);
        break;
      case OpKind::DeleteRule: ValidateRule(f, i, op.rule); break;
      case OpKind::MoveRule:
        if (op.position < 1) throw TxError(i, EINVAL, "validate", "position must be 1 or more");
        ValidateRule(f, i, op.rule);
        break;
      case OpKind::ReplaceChain:
        if (IsVerdict(op.chain) || op.chain == "DNAT") throw TxError(i, EINVAL, "validate", "chain name \"" + op.chain + "\" is reserved");
        for (auto& r : op.rules) ValidateRule(f, i, r);
        break;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The xtables lock

class XtLock {
 public:
  XtLock(const std::string& path, int64_t waitMs, int64_t intervalMs, double& waitedMs) {
    auto start = std::chrono::steady_clock::now();
    fd_ = open(path.c_str(), O_CREAT | O_RDWR | O_CLOEXEC, 0600);
    if (fd_ < 0) {
      int e = errno;
      throw SysError(e, "open", "cannot open the xtables lock " + path + ": " + std::strerror(e));
    }
    if (intervalMs < 1) intervalMs = 1;
    for (;;) {
      if (flock(fd_, LOCK_EX | LOCK_NB) == 0) break;
      int e = errno;
      if (e == EINTR) continue;
      auto elapsed = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
      if (e != EWOULDBLOCK) {
        close(fd_);
        fd_ = -1;
        throw SysError(e, "flock", "cannot take the xtables lock " + path + ": " + std::strerror(e));
      }
      if (elapsed >= waitMs) {
        close(fd_);
        fd_ = -1;
        throw SysError(e, "flock",
                       "another app is holding the xtables lock " + path + ": gave up after waiting " + std::to_string(waitMs) + " ms",
                       "ELOCKTIMEOUT");
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min<int64_t>(intervalMs, waitMs - elapsed)));
    }
    waitedMs = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
  }
  ~XtLock() {
    if (fd_ >= 0) close(fd_);  // closing the only fd of the open file description releases the flock
  }
  XtLock(const XtLock&) = delete;
  XtLock& operator=(const XtLock&) = delete;

 private:
  int fd_ = -1;
};

// ---------------------------------------------------------------------------------------------
// Table presence and info

template <class T>
bool TablePresent() {
  std::ifstream in(T::kNamesFile);
  if (!in) return false;  // ip(6)_tables not loaded: no table at all
  std::string line;
  while (std::getline(in, line))
    if (line == kTable) return true;
  return false;
}

// A raw socket for the xtables getsockopts, closed exactly once.
template <class T>
class RawSocket {
 public:
  RawSocket() : fd_(socket(T::kFamily == Family::V4 ? AF_INET : AF_INET6, SOCK_RAW | SOCK_CLOEXEC, IPPROTO_RAW)) {
    if (fd_ < 0) {
      int e = errno;
      throw SysError(e, "socket", std::string("cannot open a raw socket for ") + T::kName + ": " + std::strerror(e));
    }
  }
  ~RawSocket() { close(fd_); }
  RawSocket(const RawSocket&) = delete;
  RawSocket& operator=(const RawSocket&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

// IPT_SO_GET_INFO into `gi`; false when the table does not exist (ENOENT).
template <class T>
bool GetInfoRaw(const RawSocket<T>& sock, typename T::GetInfo& gi) {
  gi = {};
  std::strncpy(gi.name, kTable, sizeof gi.name - 1);
  socklen_t len = sizeof gi;
  if (getsockopt(sock.fd(), T::kSockLevel, T::kSoGetInfo, &gi, &len) == 0) return true;
  int e = errno;
  if (e == ENOENT) return false;
  throw SysError(e, "getsockopt", std::string(T::kName) + " nat: IPT_SO_GET_INFO failed: " + std::strerror(e));
}

template <class GI>
TableInfo InfoOf(const GI& gi) {
  TableInfo info{gi.size, gi.num_entries, true, ""};
  for (unsigned h = 0; h < NF_INET_NUMHOOKS; h++) {
    if (!(gi.valid_hooks & (1u << h))) continue;
    if (!info.builtinLayout.empty()) info.builtinLayout += ',';
    info.builtinLayout += std::to_string(h) + ':' + std::to_string(gi.hook_entry[h]) + '-' + std::to_string(gi.underflow[h]);
  }
  return info;
}

// The digest of the built-in chains' entries in a blob whose first `avail` bytes are readable:
// FNV-1a over each entry from a hook entry to its underflow (the policy), with the counters and
// the kernel's comefrom bits left out (traffic and loop checks must not look like a write). A jump
// is hashed by the rank of its target offset among all the jump targets of the built-in chains,
// not by the offset itself: libiptc lays user chains out sorted by name, so a chain added or grown
// elsewhere (kube-proxy's usual sync) shifts the offsets but not their order, and the digest stays;
// two jumps swapped, or a jump to another chain, change it.
template <class T, class GI>
std::string DigestBuiltins(const uint8_t* base, size_t avail, const GI& gi) {
  using Entry = typename T::Entry;
  constexpr size_t kStd = XT_ALIGN(sizeof(struct xt_standard_target));
  auto walk = [&](auto&& visit) {
    for (unsigned hook = 0; hook < NF_INET_NUMHOOKS; hook++) {
      if (!(gi.valid_hooks & (1u << hook))) continue;
      for (size_t off = gi.hook_entry[hook]; off <= gi.underflow[hook];) {
        if (off + sizeof(Entry) > avail)
          throw SysError(EINVAL, "getsockopt",
                         std::string(T::kName) + " nat: built-in chain runs past the table head at offset " + std::to_string(off));
        const auto* e = reinterpret_cast<const Entry*>(base + off);
        if (e->next_offset < sizeof(Entry) || e->next_offset % 8 != 0 || off + e->next_offset > avail || e->target_offset < sizeof(Entry) ||
            e->target_offset + sizeof(struct xt_entry_target) > e->next_offset)
          throw SysError(EINVAL, "getsockopt",
                         std::string(T::kName) + " nat: malformed entry at offset " + std::to_string(off) + " of the table head");
        const auto* t = reinterpret_cast<const struct xt_entry_target*>(base + off + e->target_offset);
        const bool standard = t->u.user.name[0] == '\0' && t->u.target_size == kStd && e->target_offset + kStd <= e->next_offset;
        const int verdict = standard ? reinterpret_cast<const struct xt_standard_target*>(t)->verdict : -1;
        visit(hook, off, e, verdict);
        off += e->next_offset;
      }
    }
  };
  std::vector<int> targets;
  walk([&](unsigned, size_t, const Entry*, int verdict) {
    if (verdict >= 0) targets.push_back(verdict);
  });
  std::sort(targets.begin(), targets.end());
  targets.erase(std::unique(targets.begin(), targets.end()), targets.end());

  uint64_t h = 1469598103934665603ULL;
  auto mix = [&h](const uint8_t* p, size_t n) {
    for (size_t i = 0; i < n; i++) {
      h ^= p[i];
      h *= 1099511628211ULL;
    }
  };
  unsigned lastHook = NF_INET_NUMHOOKS;
  std::vector<uint8_t> tmp;
  walk([&](unsigned hook, size_t, const Entry* e, int verdict) {
    if (hook != lastHook) {
      const uint8_t tag[2] = {static_cast<uint8_t>(hook), 0xff};
      mix(tag, sizeof tag);
      lastHook = hook;
    }
    const auto* p = reinterpret_cast<const uint8_t*>(e);
    tmp.assign(p, p + e->next_offset);
    auto* c = reinterpret_cast<Entry*>(tmp.data());
    c->comefrom = 0;
    std::memset(&c->counters, 0, sizeof c->counters);
    // The kernel writes a match's or target's name only up to its NUL: the rest of the field is
    // whatever the reader's buffer held. Zero it.
    auto clearName = [](char* name, size_t len) {
      size_t n = strnlen(name, len);
      std::memset(name + n, 0, len - n);
    };
    for (size_t m = sizeof(Entry); m + sizeof(struct xt_entry_match) <= e->target_offset;) {
      auto* em = reinterpret_cast<struct xt_entry_match*>(tmp.data() + m);
      clearName(em->u.user.name, sizeof em->u.user.name);
      if (em->u.match_size < sizeof(struct xt_entry_match)) break;
      m += em->u.match_size;
    }
    auto* et = reinterpret_cast<struct xt_entry_target*>(tmp.data() + e->target_offset);
    clearName(et->u.user.name, sizeof et->u.user.name);
    if (verdict >= 0) {
      auto* st = reinterpret_cast<struct xt_standard_target*>(tmp.data() + e->target_offset);
      st->verdict = static_cast<int>(std::lower_bound(targets.begin(), targets.end(), verdict) - targets.begin());
    }
    mix(tmp.data(), tmp.size());
  });
  static const char* hex = "0123456789abcdef";
  std::string out(16, '0');
  for (int i = 15; i >= 0; i--, h >>= 4) out[static_cast<size_t>(i)] = hex[h & 15];
  return out;
}

bool SameInfo(const TableInfo& a, const TableInfo& b) {
  return a.size == b.size && a.entries == b.entries && a.builtinLayout == b.builtinLayout;
}

// An anonymous mapping of `total` bytes of which only the first `readable` are readable and
// writable; the rest is reserved address space (no memory), so a copy into it faults.
class HeadBuffer {
 public:
  HeadBuffer(size_t total, size_t readable) {
    const size_t page = static_cast<size_t>(sysconf(_SC_PAGESIZE));
    len_ = (total + page - 1) / page * page;
    void* p = mmap(nullptr, len_, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED) {
      int e = errno;
      throw SysError(e, "mmap", std::string("cannot reserve the table head buffer: ") + std::strerror(e));
    }
    base_ = static_cast<uint8_t*>(p);
    const size_t rw = std::min(len_, (readable + page - 1) / page * page);
    if (mprotect(base_, rw, PROT_READ | PROT_WRITE) != 0) {
      int e = errno;
      munmap(base_, len_);
      throw SysError(e, "mprotect", std::string("cannot map the table head buffer: ") + std::strerror(e));
    }
    readable_ = rw;
  }
  ~HeadBuffer() { munmap(base_, len_); }
  HeadBuffer(const HeadBuffer&) = delete;
  HeadBuffer& operator=(const HeadBuffer&) = delete;
  uint8_t* data() const { return base_; }
  size_t readable() const { return readable_; }

 private:
  uint8_t* base_ = nullptr;
  size_t len_ = 0;
  size_t readable_ = 0;
};

// IPT_SO_GET_INFO plus the digest of the built-in chains from the table's head only (see Info in
// iptc_core.h). A table replaced in between (EAGAIN, or other info after the read) is read again.
template <class T>
TableInfo GetInfo(bool digest = true) {
  if (!TablePresent<T>()) return TableInfo{};
  RawSocket<T> sock;
  for (int attempt = 1;; attempt++) {
    typename T::GetInfo gi;
    if (!GetInfoRaw<T>(sock, gi)) return TableInfo{};
    TableInfo info = InfoOf(gi);
    if (!digest) return info;
    struct timespec cpu0 {};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu0);
    size_t lastPolicy = 0;
    for (unsigned h = 0; h < NF_INET_NUMHOOKS; h++)
      if (gi.valid_hooks & (1u << h)) lastPolicy = std::max<size_t>(lastPolicy, gi.underflow[h]);
    const size_t header = offsetof(typename T::GetEntries, entrytable);
    // The policy entry after the last underflow is a standard target: far less than a page.
    const size_t want = std::min<size_t>(gi.size, lastPolicy + 4096);
    HeadBuffer buf(header + gi.size, header + want);
    auto* ge = reinterpret_cast<typename T::GetEntries*>(buf.data());
    std::memset(ge, 0, header);
    std::strncpy(ge->name, kTable, sizeof ge->name - 1);
    ge->size = gi.size;
    socklen_t len = static_cast<socklen_t>(header + gi.size);
    int e = 0;
    if (getsockopt(sock.fd(), T::kSockLevel, T::kSoGetEntries, ge, &len) != 0) e = errno;
    if (e == ENOENT) return TableInfo{};
    if (e == EAGAIN && attempt < 10) continue;  // the table changed size in between
    if (e != 0 && e != EFAULT)                  // EFAULT: the kernel reached the unmapped tail, as intended
      throw SysError(e, "getsockopt", std::string(T::kName) + " nat: IPT_SO_GET_ENTRIES (table head) failed: " + std::strerror(e));
    typename T::GetInfo again;
    if (!GetInfoRaw<T>(sock, again)) return TableInfo{};
    if (!SameInfo(info, InfoOf(again)) && attempt < 10) continue;  // replaced between info and entries
    info.headDigest = DigestBuiltins<T>(buf.data() + header, std::min<size_t>(buf.readable() - header, gi.size), gi);
    struct timespec cpu1 {};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu1);
    info.digestCpuMs = static_cast<double>(cpu1.tv_sec - cpu0.tv_sec) * 1e3 + static_cast<double>(cpu1.tv_nsec - cpu0.tv_nsec) / 1e6;
    return info;
  }
}

// ---------------------------------------------------------------------------------------------
// Reading without libiptc: IPT_SO_GET_ENTRIES gives the table blob as the kernel holds it, and we
// decode only the chains asked for. iptc_init would parse every entry into its chain cache
// (240 ms for 10 000 kube-proxy services, 57 MB); a periodic resync or a watchdog check that
// finds nothing to do needs none of that. Writes still go through libiptc (sessions, Apply).
//
// The blob, as libiptc writes it: each built-in chain runs from its hook entry to its underflow
// (the policy entry); each user chain is an ERROR entry naming it, its rules, and a final
// unconditional RETURN; the table ends with an ERROR entry named "ERROR". A jump is a standard
// target whose verdict is the offset of the chain's first rule; a negative verdict is -NF_x-1.

constexpr const char* kHookNames[NF_INET_NUMHOOKS] = {"PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"};

template <class T>
class RawTable {
 public:
  using Entry = typename T::Entry;

  // Reads the blob; retries (bounded) while writers replace the table between info and entries.
  // `present` false: no nat table (never created by reading).
  static RawTable Read(const std::vector<std::string>& chains) {
    RawTable t;
    t.wanted_.insert(chains.begin(), chains.end());
    if (!TablePresent<T>()) return t;
    RawSocket<T> sock;
    for (int attempt = 1;; attempt++) {
      typename T::GetInfo gi;
      if (!GetInfoRaw<T>(sock, gi)) {
        t.present_ = false;
        return t;
      }
      const size_t header = offsetof(typename T::GetEntries, entrytable);
      // Not zero-filled: the kernel writes every byte of the blob (57 MB for 10 000 services).
      t.words_.reset(new uint64_t[(header + gi.size + 7) / 8]);
      auto* ge = reinterpret_cast<typename T::GetEntries*>(t.words_.get());
      std::memset(ge, 0, header);
      std::strncpy(ge->name, kTable, sizeof ge->name - 1);
      ge->size = gi.size;
      socklen_t len = static_cast<socklen_t>(header + gi.size);
      if (getsockopt(sock.fd(), T::kSockLevel, T::kSoGetEntries, ge, &len) == 0) {
        t.present_ = true;
        t.size_ = gi.size;
        t.info_ = InfoOf(gi);
        t.info_.headDigest = DigestBuiltins<T>(t.Base(), gi.size, gi);
        for (unsigned h = 0; h < NF_INET_NUMHOOKS; h++) {
          t.hookEntry_[h] = (gi.valid_hooks & (1u << h)) ? gi.hook_entry[h] : UINT32_MAX;
          t.underflow_[h] = (gi.valid_hooks & (1u << h)) ? gi.underflow[h] : UINT32_MAX;
        }
        t.Index();
        return t;
      }
      int e = errno;
      if (e == ENOENT) {
        t.present_ = false;
        return t;
      }
      if (e == EAGAIN && attempt < 10) continue;  // the table changed size in between: read again
      throw SysError(e, "getsockopt", std::string(T::kName) + " nat: IPT_SO_GET_ENTRIES failed: " + std::strerror(e));
    }
  }

  bool present() const { return present_; }
  const TableInfo& info() const { return info_; }

  // The chain's rules (its policy or final RETURN excluded), or false when it does not exist.
  bool Rules(const std::string& chain, std::vector<LiveRule>& out) const {
    auto it = chains_.find(chain);
    if (it == chains_.end()) return false;
    for (size_t i = it->second.first; i < it->second.last; i++) {
      const Entry* e = At(offsets_[i]);
      out.push_back(ParseEntry<T>(e, TargetName(offsets_[i], e).c_str()));
    }
    return true;
  }

 private:
  struct Span {
    size_t first = 0;  // index in offsets_ of the first rule
    size_t last = 0;   // index one past the last rule (the foot: policy or final RETURN)
  };

  const uint8_t* Base() const { return reinterpret_cast<const uint8_t*>(words_.get()) + offsetof(typename T::GetEntries, entrytable); }
  const Entry* At(uint32_t off) const { return reinterpret_cast<const Entry*>(Base() + off); }
  static const struct xt_entry_target* TargetOf(const Entry* e) {
    return reinterpret_cast<const struct xt_entry_target*>(reinterpret_cast<const uint8_t*>(e) + e->target_offset);
  }
  [[noreturn]] void Corrupt(uint32_t off, const char* why) const {
    throw SysError(EINVAL, "getsockopt",
                   std::string(T::kName) + " nat: malformed entry at offset " + std::to_string(off) + " of IPT_SO_GET_ENTRIES: " + why);
  }

  // Walks every entry once: bounds, then the chain boundaries (hook entries and ERROR heads).
  // Spans are kept for the wanted chains only; every user chain's first-rule offset is kept
  // (increasing, so binary-searchable) to name jump targets.
  void Index() {
    std::map<uint32_t, unsigned> hookAt;
    for (unsigned h = 0; h < NF_INET_NUMHOOKS; h++)
      if (hookEntry_[h] != UINT32_MAX) hookAt[hookEntry_[h]] = h;
    std::string open;  // the chain whose rules are being walked
    size_t openFirst = 0;
    int openHook = -1;
    auto close = [&](size_t endIndex) {
      if (open.empty()) return;
      // The last entry before the next chain is the chain's foot (policy or final RETURN).
      if (endIndex == 0 || endIndex - 1 < openFirst) Corrupt(offsets_.empty() ? 0 : offsets_.back(), "a chain without its foot entry");
      if (openHook >= 0 && offsets_[endIndex - 1] != underflow_[openHook])
        Corrupt(offsets_[endIndex - 1], "built-in chain does not end at its underflow");
      if (wanted_.count(open)) chains_[open] = Span{openFirst, endIndex - 1};
      open.clear();
      openHook = -1;
    };
    for (uint32_t off = 0; off < size_;) {
      if (size_ - off < sizeof(Entry)) Corrupt(off, "truncated");
      const Entry* e = At(off);
      if (e->next_offset < sizeof(Entry) || e->next_offset > size_ - off || e->next_offset % 8 != 0) Corrupt(off, "bad next_offset");
      if (e->target_offset < sizeof(Entry) || e->target_offset + sizeof(struct xt_entry_target) > e->next_offset)
        Corrupt(off, "bad target_offset");
      const auto* t = TargetOf(e);
      if (t->u.target_size < sizeof(struct xt_entry_target) || e->target_offset + t->u.target_size > e->next_offset)
        Corrupt(off, "bad target size");
      const size_t index = offsets_.size();
      offsets_.push_back(off);
      auto hook = hookAt.find(off);
      if (hook != hookAt.end()) {
        close(index);
        open = kHookNames[hook->second];
        openHook = static_cast<int>(hook->second);
        openFirst = index;
      } else if (std::strcmp(t->u.user.name, XT_ERROR_TARGET) == 0) {
        close(index);
        if (off + e->next_offset < size_) {  // not the table's final ERROR entry
          open = ErrorName(e);
          openFirst = index + 1;
          userChains_.push_back({off + e->next_offset, off});
        }
      }
      off += e->next_offset;
    }
    close(offsets_.size());
  }

  std::string TargetName(uint32_t off, const Entry* e) const {
    const auto* t = TargetOf(e);
    if (t->u.user.name[0] != '\0' && std::strcmp(t->u.user.name, XT_STANDARD_TARGET) != 0)
      return std::string(t->u.user.name, strnlen(t->u.user.name, sizeof t->u.user.name));
    if (t->u.target_size < XT_ALIGN(sizeof(struct xt_standard_target))) return "";
    int verdict = reinterpret_cast<const struct xt_standard_target*>(t)->verdict;
    if (verdict < 0) {
      switch (-verdict - 1) {
        case NF_ACCEPT: return "ACCEPT";
        case NF_DROP: return "DROP";
        case NF_QUEUE: return "QUEUE";
        case NF_REPEAT: return "RETURN";  // XT_RETURN
        default: return "";
      }
    }
    if (static_cast<uint32_t>(verdict) == off + e->next_offset) return "";  // fall through: no target
    auto it = std::lower_bound(userChains_.begin(), userChains_.end(), std::make_pair(static_cast<uint32_t>(verdict), uint32_t{0}));
    if (it == userChains_.end() || it->first != static_cast<uint32_t>(verdict)) return "";
    return ErrorName(At(it->second));
  }

  // The name an ERROR entry carries (a user chain's head).
  static std::string ErrorName(const Entry* e) {
    const auto* t = TargetOf(e);
    const char* name = reinterpret_cast<const char*>(t->data);
    size_t max = t->u.target_size - sizeof(struct xt_entry_target);
    return std::string(name, strnlen(name, std::min<size_t>(max, XT_FUNCTION_MAXNAMELEN)));
  }

  std::unique_ptr<uint64_t[]> words_;  // the ipt_get_entries header and blob, 8-byte aligned
  uint32_t size_ = 0;
  bool present_ = false;
  TableInfo info_;
  uint32_t hookEntry_[NF_INET_NUMHOOKS] = {};
  uint32_t underflow_[NF_INET_NUMHOOKS] = {};
  std::set<std::string> wanted_;
  std::vector<uint32_t> offsets_;
  std::map<std::string, Span> chains_;
  std::vector<std::pair<uint32_t, uint32_t>> userChains_;  // (first rule offset, head offset), increasing
};

class Handle {
 public:
  template <class T>
  static Handle Init() {
    xtc_handle* h = T::init(kTable);
    if (!h) {
      int e = errno;
      throw SysError(e, "iptc_init", std::string("cannot read the ") + T::kName + " nat table: " + T::strerror(e));
    }
    return Handle(h, &T::free);
  }
  Handle(Handle&& o) noexcept : h_(o.h_), free_(o.free_) { o.h_ = nullptr; }
  Handle& operator=(Handle&&) = delete;
  Handle(const Handle&) = delete;
  ~Handle() {
    if (h_) free_(h_);
  }
  xtc_handle* get() const { return h_; }

 private:
  Handle(xtc_handle* h, void (*f)(xtc_handle*)) : h_(h), free_(f) {}
  xtc_handle* h_;
  void (*free_)(xtc_handle*);
};

// ---------------------------------------------------------------------------------------------
// Applying ops to a handle

template <class T>
void Check(bool ok, size_t i, const char* syscall, const std::string& what) {
  if (ok) return;
  int e = errno;
  throw TxError(i, e, syscall, what + ": " + T::strerror(e));
}

template <class T>
void RequireChain(xtc_handle* h, size_t i, const std::string& chain) {
  if (!T::is_chain(chain.c_str(), h)) throw TxError(i, ENOENT, "validate", "chain " + chain + " does not exist");
}

template <class T>
void RequireTarget(xtc_handle* h, size_t i, const RuleSpec& r) {
  if (IsVerdict(r.target) || r.target == "DNAT") return;
  if (!T::is_chain(r.target.c_str(), h)) throw TxError(i, ENOENT, "validate", "jump target chain " + r.target + " does not exist");
  if (T::builtin(r.target.c_str(), h)) throw TxError(i, EINVAL, "validate", "cannot jump to built-in chain " + r.target);
}

template <class T>
long FindRule(xtc_handle* h, const std::string& chain, const RuleSpec& r, LiveRule* found = nullptr) {
  long idx = 0;
  for (const auto* e = T::first_rule(chain.c_str(), h); e; e = T::next_rule(e, h), idx++) {
    LiveRule live = ParseEntry<T>(e, T::get_target(e, h));
    if (SameModelled(r, live)) {
      if (found) *found = live;
      return idx;
    }
  }
  return -1;
}

// Minimal edit of `chain` to exactly `want` (rules::MatchRules, rules::KeepInPlace): the rules that
// keep their order stay untouched (libiptc carries their kernel counters over on commit); the
// others are deleted, and the wanted ones inserted, a moved rule with the counters it had.
template <class T>
void ReplaceChainRules(xtc_handle* h, size_t i, const std::string& chain, const std::vector<RuleSpec>& want) {
  const std::vector<LiveRule> have = ChainRulesOf<T>(chain, h);
  std::vector<const RuleSpec*> specs;
  std::vector<bool> reusable;
  for (const auto& r : have) {
    specs.push_back(&r.spec);
    reusable.push_back(r.unknown.empty());
  }
  const std::vector<int> source = rules::MatchRules(specs, reusable, want);
  const std::vector<bool> stays = rules::KeepInPlace(source, std::vector<int64_t>(want.size(), 1), have.size());
  std::vector<bool> kept(have.size(), false);
  for (size_t b = 0; b < want.size(); b++)
    if (stays[b]) kept[static_cast<size_t>(source[b])] = true;
  for (size_t a = have.size(); a-- > 0;)
    if (!kept[a])
      Check<T>(T::delete_num_entry(chain.c_str(), static_cast<unsigned>(a), h), i, "iptc_delete_num_entry",
               "cannot delete a rule of " + chain);
  for (size_t b = 0; b < want.size(); b++) {
    if (stays[b]) continue;
    RequireTarget<T>(h, i, want[b]);
    const LiveRule* moved = source[b] >= 0 ? &have[static_cast<size_t>(source[b])] : nullptr;
    EntryBuf e = BuildEntry<T>(want[b], moved ? moved->packets : 0, moved ? moved->bytes : 0);
    Check<T>(T::insert_entry(chain.c_str(), reinterpret_cast<const typename T::Entry*>(e.data()), static_cast<unsigned>(b), h), i,
             "iptc_insert_entry", "cannot insert into " + chain);
  }
}

template <class T>
void ApplyOp(xtc_handle* h, size_t i, const Op& op) {
  const char* c = op.chain.c_str();
  using Entry = typename T::Entry;
  switch (op.kind) {
    case OpKind::FlushChain:
      RequireChain<T>(h, i, op.chain);
      Check<T>(T::flush_entries(c, h), i, "iptc_flush_entries", "cannot flush chain " + op.chain);
      return;
    case OpKind::DeleteChain:
      RequireChain<T>(h, i, op.chain);
      if (T::builtin(c, h)) throw TxError(i, EPERM, "validate", "cannot delete built-in chain " + op.chain);
      Check<T>(T::delete_chain(c, h), i, "iptc_delete_chain", "cannot delete chain " + op.chain);
      return;
    case OpKind::InsertRule: {
      RequireChain<T>(h, i, op.chain);
      RequireTarget<T>(h, i, op.rule);
      size_t n = CountRules<T>(op.chain, h);
      int64_t pos = op.position ? op.position : 1;
      if (pos < 1 || static_cast<size_t>(pos) > n + 1)
        throw TxError(i, E2BIG, "validate",
                      "position " + std::to_string(pos) + " is beyond the end of " + op.chain + " (" + std::to_string(n) + " rules)");
      EntryBuf e = BuildEntry<T>(op.rule);
      Check<T>(T::insert_entry(c, reinterpret_cast<const Entry*>(e.data()), static_cast<unsigned>(pos - 1), h), i, "iptc_insert_entry",
               "cannot insert into " + op.chain);
      return;
    }
    case OpKind::DeleteRule: {
      RequireChain<T>(h, i, op.chain);
      long idx = FindRule<T>(h, op.chain, op.rule);
      if (idx < 0) throw TxError(i, ENOENT, "validate", "no such rule in " + op.chain);
      Check<T>(T::delete_num_entry(c, static_cast<unsigned>(idx), h), i, "iptc_delete_num_entry", "cannot delete from " + op.chain);
      return;
    }
    case OpKind::MoveRule: {
      RequireChain<T>(h, i, op.chain);
      LiveRule live;
      long idx = FindRule<T>(h, op.chain, op.rule, &live);
      if (idx < 0) throw TxError(i, ENOENT, "validate", "no such rule in " + op.chain);
      size_t n = CountRules<T>(op.chain, h);
      if (static_cast<size_t>(op.position) > n)
        throw TxError(
            i, E2BIG, "validate",
            "position " + std::to_string(op.position) + " is beyond the end of " + op.chain + " (" + std::to_string(n) + " rules)");
      if (idx == op.position - 1) return;  // already there
      Check<T>(T::delete_num_entry(c, static_cast<unsigned>(idx), h), i, "iptc_delete_num_entry", "cannot move in " + op.chain);
      // Same bytes as before (the rule is fully modelled), with the counters read at init.
      EntryBuf e = BuildEntry<T>(op.rule, live.packets, live.bytes);
      Check<T>(T::insert_entry(c, reinterpret_cast<const Entry*>(e.data()), static_cast<unsigned>(op.position - 1), h), i,
               "iptc_insert_entry", "cannot move in " + op.chain);
      return;
    }
    case OpKind::ReplaceChain:
      if (!T::is_chain(c, h)) Check<T>(T::create_chain(c, h), i, "iptc_create_chain", "cannot create chain " + op.chain);
      else if (T::builtin(c, h)) throw TxError(i, EPERM, "validate", "replaceChain on built-in chain " + op.chain);
      ReplaceChainRules<T>(h, i, op.chain, op.rules);
      return;
  }
}

struct Intended {
  std::string chain;
  bool exists = false;
  std::vector<LiveRule> rules;
};

template <class T>
std::vector<Intended> Capture(xtc_handle* h, const std::vector<std::string>& chains) {
  std::vector<Intended> out;
  for (const auto& c : chains) {
    Intended it;
    it.chain = c;
    it.exists = T::is_chain(c.c_str(), h);
    if (it.exists) it.rules = ChainRulesOf<T>(c, h);
    out.push_back(std::move(it));
  }
  return out;
}

bool SameState(const std::vector<Intended>& a, const std::vector<Intended>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); i++) {
    if (a[i].chain != b[i].chain || a[i].exists != b[i].exists || a[i].rules.size() != b[i].rules.size()) return false;
    for (size_t j = 0; j < a[i].rules.size(); j++)
      if (!SameLive(a[i].rules[j], b[i].rules[j])) return false;
  }
  return true;
}

double MsSince(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

std::string LockPath(const ApplyOptions& o) { return LockFilePath(o.lockfile); }

std::vector<std::string> TouchedChains(const std::vector<Op>& ops) {
  std::vector<std::string> touched;
  std::set<std::string> seen;
  for (const auto& op : ops)
    if (seen.insert(op.chain).second) touched.push_back(op.chain);
  return touched;
}

// libiptc parses a table into many small allocations in the arena of the worker thread that read
// it; after iptc_free glibc keeps them (a kube-proxy table of 1 000 services leaves ~5 MiB). Hand
// them back to the kernel after every table worth it: one trim per sync costs well under a
// millisecond, and an idle agent then holds only what it uses. (Idle polls read the table's head
// only and do not come here.)
void TrimAfter(uint64_t tableSize) {
  if (tableSize >= (256u << 10)) malloc_trim(0);
}

// The body of a transaction, with the xtables lock held by the caller: apply every op to one
// handle and commit once. `first` is a handle read under that same lock (a session's), used for
// the first attempt; later attempts (after EAGAIN from a writer that ignored the lock) re-read.
template <class T>
ApplyResult CommitLocked(std::vector<Op>& ops, const ApplyOptions& o, ApplyResult res, std::chrono::steady_clock::time_point start,
                         std::unique_ptr<Handle> first) {
  const std::vector<std::string> touched = TouchedChains(ops);
  const int maxAttempts = std::max(1, o.maxAttempts);
  std::lock_guard<std::mutex> guard(IptcMutex());
  int lastErr = 0;
  uint64_t size = 0;
  for (int attempt = 1; attempt <= maxAttempts; attempt++) {
    res.attempts = attempt;
    std::vector<Intended> intended;
    {
      std::unique_ptr<Handle> h = std::move(first);
      if (!h) h = std::make_unique<Handle>(Handle::Init<T>());
      for (size_t i = 0; i < ops.size(); i++) ApplyOp<T>(h->get(), i, ops[i]);
      if (T::commit(h->get())) {
        TableInfo after = GetInfo<T>();
        res.sizeAfter = after.size;
        res.entriesAfter = after.entries;
        res.builtinLayoutAfter = after.builtinLayout;
        res.headDigestAfter = after.headDigest;
        h.reset();
        TrimAfter(after.size);
        res.durationMs = MsSince(start);
        return res;
      }
      lastErr = errno;
      // What we meant to write, for the check below (a failed commit leaves the handle's cache as
      // it was; only read when needed: 10 000 rules take 5 ms to decode).
      if (lastErr != EAGAIN) intended = Capture<T>(h->get(), touched);
    }
    if (lastErr == EAGAIN) continue;  // lost a race with a writer that did not take the lock: re-read, re-apply
    // Other errors: the kernel may have installed the new table and failed afterwards (seen: EINVAL
    // from the counters step). Look before retrying or failing.
    {
      Handle check = Handle::Init<T>();
      if (SameState(Capture<T>(check.get(), touched), intended)) {
        TableInfo after = GetInfo<T>();
        res.sizeAfter = after.size;
        res.entriesAfter = after.entries;
        res.builtinLayoutAfter = after.builtinLayout;
        res.headDigestAfter = after.headDigest;
        size = after.size;
        res.durationMs = MsSince(start);
        return res;
      }
    }
    if (lastErr != EINVAL) break;
  }
  TrimAfter(size);
  throw SysError(lastErr, "iptc_commit",
                 std::string("commit of the ") + T::kName + " nat table failed after " + std::to_string(res.attempts) +
                     " attempt(s): " + T::strerror(lastErr));
}

template <class T>
ApplyResult ApplyT(std::vector<Op>& ops, const ApplyOptions& o) {
  auto start = std::chrono::steady_clock::now();
  ApplyResult res;
  Validate(T::kFamily, ops);
  if (ops.empty()) {
    res.durationMs = MsSince(start);
    return res;
  }
  NetnsGuard ns(o.netnsPath);
  XtLock lock(LockPath(o), o.lockWaitMs, o.lockIntervalMs, res.lockWaitMs);
  return CommitLocked<T>(ops, o, res, start, nullptr);
}

// ---------------------------------------------------------------------------------------------
// Sessions: read and commit under one xtables lock with one table read (what iptables-restore
// does in one process), while TypeScript plans in between.

struct SessionState {
  Family family;
  ApplyOptions options;
  std::chrono::steady_clock::time_point start;
  double lockWaitMs = 0;
  std::unique_ptr<XtLock> lock;
  std::unique_ptr<Handle> handle;
  uint64_t tableSize = 0;
};

std::mutex& SessionsMutex() {
  static std::mutex m;
  return m;
}
std::map<uint64_t, std::unique_ptr<SessionState>>& Sessions() {
  static std::map<uint64_t, std::unique_ptr<SessionState>> s;
  return s;
}

std::unique_ptr<SessionState> TakeSession(uint64_t id) {
  std::lock_guard<std::mutex> g(SessionsMutex());
  auto it = Sessions().find(id);
  if (it == Sessions().end())
    throw SysError(ENOENT, "iptc_session", "no open iptables transaction " + std::to_string(id) + " (already committed or aborted)");
  std::unique_ptr<SessionState> st = std::move(it->second);
  Sessions().erase(it);
  return st;
}

template <class T>
BeginResult BeginT(const std::vector<std::string>& chains, const ApplyOptions& o) {
  auto st = std::make_unique<SessionState>();
  st->family = T::kFamily;
  st->options = o;
  st->start = std::chrono::steady_clock::now();
  NetnsGuard ns(o.netnsPath);
  st->lock = std::make_unique<XtLock>(LockPath(o), o.lockWaitMs, o.lockIntervalMs, st->lockWaitMs);
  BeginResult r;
  {
    std::lock_guard<std::mutex> guard(IptcMutex());
    st->handle = std::make_unique<Handle>(Handle::Init<T>());
    for (const auto& c : chains) {
      if (c.empty() || c.size() >= sizeof(xt_chainlabel) || !T::is_chain(c.c_str(), st->handle->get())) continue;
      r.snapshot.chains.push_back(ChainRules{c, ChainRulesOf<T>(c, st->handle->get())});
    }
  }
  r.snapshot.info = GetInfo<T>();
  st->tableSize = r.snapshot.info.size;
  static std::atomic<uint64_t> next{1};
  r.session = next++;
  std::lock_guard<std::mutex> g(SessionsMutex());
  Sessions()[r.session] = std::move(st);
  return r;
}

// A read without libiptc and without the lock: one IPT_SO_GET_ENTRIES is one consistent table
// (the kernel replaces tables atomically), and its token is the info read with it.
template <class T>
Snapshot ReadT(const std::vector<std::string>& chains) {
  Snapshot snap;
  {
    RawTable<T> t = RawTable<T>::Read(chains);
    if (!t.present()) return snap;  // never create the table by reading it
    snap.info = t.info();
    for (const auto& c : chains) {
      ChainRules cr{c, {}};
      if (t.Rules(c, cr.rules)) snap.chains.push_back(std::move(cr));
    }
  }
  TrimAfter(snap.info.size);
  return snap;
}

}  // namespace

TableInfo Info(Family family, const std::string& netnsPath, bool digest) {
  NetnsGuard ns(netnsPath);
  return family == Family::V4 ? GetInfo<V4>(digest) : GetInfo<V6>(digest);
}

std::string LockFilePath(const std::string& configured) {
  if (!configured.empty()) return configured;
  const char* env = std::getenv("XTABLES_LOCKFILE");
  return env && *env ? env : "/run/xtables.lock";
}

LockWatch::LockWatch(const std::string& path) : path_(path) {
  fd_ = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (fd_ < 0) {
    int e = errno;
    throw SysError(e, "inotify_init1", std::string("cannot watch the xtables lock: ") + std::strerror(e));
  }
  try {
    Arm();
  } catch (...) {
    close(fd_);
    throw;
  }
}

LockWatch::~LockWatch() { close(fd_); }

void LockWatch::Arm() {
  int f = open(path_.c_str(), O_RDONLY | O_CREAT | O_CLOEXEC, 0600);
  if (f < 0) {
    int e = errno;
    throw SysError(e, "open", "cannot open the xtables lock file " + path_ + ": " + std::strerror(e));
  }
  close(f);
  wd_ = inotify_add_watch(fd_, path_.c_str(), IN_OPEN | IN_CLOSE | IN_MODIFY | IN_ATTRIB | IN_DELETE_SELF | IN_MOVE_SELF);
  if (wd_ < 0) {
    int e = errno;
    throw SysError(e, "inotify_add_watch", "cannot watch the xtables lock file " + path_ + ": " + std::strerror(e));
  }
}

uint64_t LockWatch::Drain() {
  uint64_t n = 0;
  bool rearm = false;
  alignas(struct inotify_event) char buf[4096];
  for (;;) {
    ssize_t r = read(fd_, buf, sizeof buf);
    if (r < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      int e = errno;
      throw SysError(e, "read", std::string("cannot read xtables lock events: ") + std::strerror(e));
    }
    if (r == 0) break;
    for (ssize_t off = 0; off < r;) {
      const auto* ev = reinterpret_cast<const struct inotify_event*>(buf + off);
      n++;
      if (ev->mask & (IN_IGNORED | IN_DELETE_SELF | IN_MOVE_SELF | IN_Q_OVERFLOW)) rearm = true;
      off += static_cast<ssize_t>(sizeof(struct inotify_event) + ev->len);
    }
  }
  if (rearm) {
    if (wd_ >= 0) inotify_rm_watch(fd_, wd_);  // may already be gone (IN_IGNORED): harmless
    wd_ = -1;
    Arm();
  }
  return n;
}

Snapshot Read(Family family, const std::vector<std::string>& chains, const std::string& netnsPath) {
  NetnsGuard ns(netnsPath);
  return family == Family::V4 ? ReadT<V4>(chains) : ReadT<V6>(chains);
}

ApplyResult Apply(Family family, std::vector<Op> ops, const ApplyOptions& options) {
  return family == Family::V4 ? ApplyT<V4>(ops, options) : ApplyT<V6>(ops, options);
}

BeginResult Begin(Family family, const std::vector<std::string>& chains, const ApplyOptions& options) {
  return family == Family::V4 ? BeginT<V4>(chains, options) : BeginT<V6>(chains, options);
}

ApplyResult CommitSession(uint64_t session, std::vector<Op> ops) {
  std::unique_ptr<SessionState> st = TakeSession(session);  // the lock and handle go when this returns or throws
  ApplyResult res;
  res.lockWaitMs = st->lockWaitMs;
  Validate(st->family, ops);
  if (ops.empty()) {
    res.durationMs = MsSince(st->start);
    return res;
  }
  NetnsGuard ns(st->options.netnsPath);
  auto run = [&](auto tag) {
    using T = decltype(tag);
    return CommitLocked<T>(ops, st->options, res, st->start, std::move(st->handle));
  };
  return st->family == Family::V4 ? run(V4{}) : run(V6{});
}

void AbortSession(uint64_t session) {
  std::unique_ptr<SessionState> st = TakeSession(session);
  uint64_t size = st->tableSize;
  st.reset();  // frees the handle, releases the lock
  TrimAfter(size);
}

}  // namespace iptc
}  // namespace edgemesh
