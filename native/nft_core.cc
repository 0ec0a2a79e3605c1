// See nft_core.h. Plain C++ over libmnl/libnftnl; every netlink socket is owned by one NlSocket
// and closed exactly once by its destructor.
#include "nft_core.h"

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

#include "netns.h"
#include "syserror.h"

namespace edgemesh {
namespace nft {

namespace {

constexpr int kRestart = 85;                  // ERESTART: the batch's generation id is stale
constexpr size_t kCommentLen = 256;           // XT_MAX_COMMENT_LEN: struct xt_comment_info
constexpr uint8_t kUdataRuleComment = 0;      // NFTNL_UDATA_RULE_COMMENT (nft's udata TLV type)
constexpr uint8_t kUdataSetElemComment = 0;   // NFTNL_UDATA_SET_ELEM_COMMENT
constexpr uint8_t kUdataSetKeyByteorder = 0;  // NFTNL_UDATA_SET_KEYBYTEORDER
constexpr uint32_t kByteorderBigEndian = 2;   // nft's BYTEORDER_BIG_ENDIAN, as nft stores it
constexpr uint32_t kTypeIpv4Addr = 7;         // nft datatype ids (TYPE_IPADDR, TYPE_IP6ADDR)
constexpr uint32_t kTypeIpv6Addr = 8;

std::string Errstr(int e) { return std::string(strerror(e)); }

// ---------------------------------------------------------------------------------------------
// Netlink socket

// How long a read keeps asking again while the ruleset changes under it. The kernel flags a dump
// another commit interleaved with (NLM_F_DUMP_INTR) and a multi-dump read sees the generation
// move; both are asked again. iptables-nft and nft retry without bound; a writer committing in a
// loop (another agent, a kube-proxy resync storm) can interrupt dozens of dumps in a row, so a
// count alone gives up too early on a busy or slow machine. The first attempts follow at once (a
// pause only gives the writer more room); after that a 1 ms pause keeps a long retry from
// spinning a core, until the deadline.
class ChangingRetry {
 public:
  static constexpr int kImmediate = 50;
  static constexpr std::chrono::milliseconds kBudget{10'000};
  bool Again() {
    if (attempts_ == 0) deadline_ = std::chrono::steady_clock::now() + kBudget;
    if (attempts_ >= kImmediate) {
      if (std::chrono::steady_clock::now() >= deadline_) return false;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    attempts_++;
    return true;
  }

 private:
  int attempts_ = 0;
  std::chrono::steady_clock::time_point deadline_;
};

class NlSocket {
 public:
  NlSocket() {
    nl_ = mnl_socket_open(NETLINK_NETFILTER);
    if (!nl_) throw SysError(errno, "socket", "cannot open a netfilter netlink socket: " + Errstr(errno));
    if (mnl_socket_bind(nl_, 0, MNL_SOCKET_AUTOPID) < 0) {
      int e = errno;
      mnl_socket_close(nl_);
      nl_ = nullptr;
      throw SysError(e, "bind", "cannot bind the netfilter netlink socket: " + Errstr(e));
    }
    portid_ = mnl_socket_get_portid(nl_);
    seq_ = static_cast<uint32_t>(time(nullptr));
  }
  ~NlSocket() {
    if (nl_) mnl_socket_close(nl_);
    // A large dump leaves glibc's arena of this worker thread holding what libnftnl parsed it
    // into: hand it back, or an idle agent beside a big table keeps that RSS until the next one.
    if (received_ >= kTrimAfterBytes) malloc_trim(0);
  }
  NlSocket(const NlSocket&) = delete;
  NlSocket& operator=(const NlSocket&) = delete;

  uint32_t NextSeq() { return ++seq_; }
  // After a batch used sequence numbers up to `last`: never reuse them for a request.
  void SeqUsedUpTo(uint32_t last) { seq_ = std::max(seq_, last); }
  mnl_socket* get() { return nl_; }
  int fd() { return mnl_socket_get_fd(nl_); }

  // Sends one request and runs `cb` on every data message of the answer (a dump, or a reply and
  // its ack). Throws SysError (errno of the kernel's answer) on failure. A dump the kernel flags
  // as interrupted (NLM_F_DUMP_INTR: the ruleset changed while it was being dumped) is read to
  // its end, discarded and asked again (bounded); *interrupted is then set. `cb` only ever sees
  // the messages of one complete, consistent answer.
  void Talk(nlmsghdr* nlh, const char* call, const std::function<void(const nlmsghdr*)>& cb, bool* interrupted = nullptr) {
    std::vector<char> buf(1 << 16);
    for (ChangingRetry retry; retry.Again();) {
      const uint32_t seq = NextSeq();
      nlh->nlmsg_seq = seq;
      if (mnl_socket_sendto(nl_, nlh, nlh->nlmsg_len) < 0)
        throw SysError(errno, "sendto", std::string(call) + ": sendto: " + Errstr(errno));
      std::vector<std::vector<char>> msgs;
      bool intr = false, done = false;
      int err = 0;
      for (int guard = 0; !done && guard < 10'000'000; guard++) {
        ssize_t n = mnl_socket_recvfrom(nl_, buf.data(), buf.size());
        if (n < 0) {
          if (errno == EINTR) continue;
          throw SysError(errno, "recvfrom", std::string(call) + ": recvfrom: " + Errstr(errno));
        }
        int len = static_cast<int>(n);
        received_ += static_cast<size_t>(n);
        for (auto* m = reinterpret_cast<const nlmsghdr*>(buf.data()); !done && mnl_nlmsg_ok(m, len); m = mnl_nlmsg_next(m, &len)) {
          if (m->nlmsg_seq != seq || (m->nlmsg_pid != 0 && m->nlmsg_pid != portid_)) continue;  // stale answer
          if (m->nlmsg_flags & NLM_F_DUMP_INTR) intr = true;
          if (m->nlmsg_type == NLMSG_DONE) {
            int v = 0;
            if (mnl_nlmsg_get_payload_len(m) >= sizeof v) std::memcpy(&v, mnl_nlmsg_get_payload(m), sizeof v);
            if (v < 0) err = -v;
            done = true;
          } else if (m->nlmsg_type == NLMSG_ERROR) {
            const auto* e = static_cast<const nlmsgerr*>(mnl_nlmsg_get_payload(m));
            err = -e->error;
            done = true;
          } else if (m->nlmsg_type >= NLMSG_MIN_TYPE) {
            const char* b = reinterpret_cast<const char*>(m);
            msgs.emplace_back(b, b + m->nlmsg_len);
          }
        }
      }
      if (!done) throw SysError(0, call, std::string(call) + ": netlink answer never ended", "ENATIVE");
      if (intr || err == EINTR) {
        if (interrupted) *interrupted = true;
        continue;
      }
      if (err) throw SysError(err, call, std::string(call) + ": " + Errstr(err));
      for (const auto& m : msgs) cb(reinterpret_cast<const nlmsghdr*>(m.data()));
      return;
    }
    throw SysError(EAGAIN, call, std::string(call) + ": the ruleset kept changing during the dump (asked again for 10 s)", "EAGAIN");
  }

 private:
  static constexpr size_t kTrimAfterBytes = 256 << 10;
  mnl_socket* nl_ = nullptr;
  size_t received_ = 0;
  uint32_t portid_ = 0;
  uint32_t seq_ = 0;
};

// Owners of libnftnl objects: each freed exactly once, by its own free function.
template <auto Free>
struct NftnlFree {
  template <typename T>
  void operator()(T* p) const {
    Free(p);
  }
};
using RulePtr = std::unique_ptr<nftnl_rule, NftnlFree<nftnl_rule_free>>;
using ChainPtr = std::unique_ptr<nftnl_chain, NftnlFree<nftnl_chain_free>>;
using TablePtr = std::unique_ptr<nftnl_table, NftnlFree<nftnl_table_free>>;
using BatchPtr = std::unique_ptr<nftnl_batch, NftnlFree<nftnl_batch_free>>;
using UdataPtr = std::unique_ptr<nftnl_udata_buf, NftnlFree<nftnl_udata_buf_free>>;
using SetPtr = std::unique_ptr<nftnl_set, NftnlFree<nftnl_set_free>>;

// libmnl's attribute iteration macros do not compile as C++ (void* conversions).
template <typename F>
void ForEachAttr(const void* start, size_t len, F f) {
  const auto* a = static_cast<const nlattr*>(start);
  int remaining = static_cast<int>(len);
  while (mnl_attr_ok(a, remaining)) {
    f(a);
    remaining -= static_cast<int>(MNL_ALIGN(a->nla_len));
    a = reinterpret_cast<const nlattr*>(reinterpret_cast<const char*>(a) + MNL_ALIGN(a->nla_len));
  }
}
template <typename F>
void ForEachNested(const nlattr* nest, F f) {
  ForEachAttr(mnl_attr_get_payload(nest), mnl_attr_get_payload_len(nest), f);
}

uint32_t QueryGenId(NlSocket& s) {
  char buf[MNL_SOCKET_BUFFER_SIZE] = {};  // zeroed: libnftnl leaves attribute padding unwritten
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETGEN, AF_UNSPEC, NLM_F_ACK, s.NextSeq());
  uint32_t id = 0;
  bool got = false;
  s.Talk(nlh, "nft_getgen", [&](const nlmsghdr* m) {
    nftnl_gen* g = nftnl_gen_alloc();
    if (!g) return;
    if (nftnl_gen_nlmsg_parse(m, g) == 0 && nftnl_gen_is_set(g, NFTNL_GEN_ID)) {
      id = nftnl_gen_get_u32(g, NFTNL_GEN_ID);
      got = true;
    }
    nftnl_gen_free(g);
  });
  if (!got) throw SysError(0, "nft_getgen", "the kernel answered NFT_MSG_GETGEN without a generation id", "ENATIVE");
  return id;
}

// A request for one object by name: false when the kernel answers ENOENT (no such object).
bool TalkUnlessMissing(NlSocket& s, nlmsghdr* nlh, const char* call, const std::function<void(const nlmsghdr*)>& cb) {
  try {
    s.Talk(nlh, call, cb);
  } catch (const SysError& e) {
    if (e.err == ENOENT) return false;
    throw;
  }
  return true;
}

bool TableExists(NlSocket& s, uint8_t family, const std::string& table) {
  char buf[MNL_SOCKET_BUFFER_SIZE] = {};  // zeroed: libnftnl leaves attribute padding unwritten
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETTABLE, family, NLM_F_ACK, s.NextSeq());
  TablePtr t(nftnl_table_alloc());
  nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, table.c_str());
  nftnl_table_nlmsg_build_payload(nlh, t.get());
  return TalkUnlessMissing(s, nlh, "nft_gettable", [](const nlmsghdr*) {});
}

ChainInfo ChainFromNl(const nftnl_chain* c) {
  ChainInfo ci;
  ci.name = nftnl_chain_get_str(c, NFTNL_CHAIN_NAME);
  if (nftnl_chain_is_set(c, NFTNL_CHAIN_HANDLE)) ci.handle = nftnl_chain_get_u64(c, NFTNL_CHAIN_HANDLE);
  if (nftnl_chain_is_set(c, NFTNL_CHAIN_HOOKNUM)) {
    ci.base = true;
    ci.hook = nftnl_chain_get_u32(c, NFTNL_CHAIN_HOOKNUM);
    ci.priority = nftnl_chain_get_s32(c, NFTNL_CHAIN_PRIO);
    if (nftnl_chain_is_set(c, NFTNL_CHAIN_TYPE)) ci.type = nftnl_chain_get_str(c, NFTNL_CHAIN_TYPE);
    if (nftnl_chain_is_set(c, NFTNL_CHAIN_POLICY)) ci.policy = nftnl_chain_get_u32(c, NFTNL_CHAIN_POLICY);
  }
  if (nftnl_chain_is_set(c, NFTNL_CHAIN_USE)) ci.use = nftnl_chain_get_u32(c, NFTNL_CHAIN_USE);
  return ci;
}

// One chain (nullopt when missing), without rules.
std::optional<ChainInfo> GetChain(NlSocket& s, uint8_t family, const std::string& table, const std::string& chain) {
  char buf[MNL_SOCKET_BUFFER_SIZE] = {};  // zeroed: libnftnl leaves attribute padding unwritten
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETCHAIN, family, NLM_F_ACK, s.NextSeq());
  ChainPtr c(nftnl_chain_alloc());
  nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, table.c_str());
  nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, chain.c_str());
  nftnl_chain_nlmsg_build_payload(nlh, c.get());
  std::optional<ChainInfo> out;
  bool found = TalkUnlessMissing(s, nlh, "nft_getchain", [&](const nlmsghdr* m) {
    ChainPtr r(nftnl_chain_alloc());
    if (nftnl_chain_nlmsg_parse(m, r.get()) == 0) out = ChainFromNl(r.get());
  });
  return found ? out : std::nullopt;
}

std::vector<ChainInfo> DumpChains(NlSocket& s, uint8_t family, const std::string& table, bool* intr) {
  char buf[MNL_SOCKET_BUFFER_SIZE] = {};  // zeroed: libnftnl leaves attribute padding unwritten
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETCHAIN, family, NLM_F_DUMP, s.NextSeq());
  ChainPtr c(nftnl_chain_alloc());
  nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, table.c_str());
  nftnl_chain_nlmsg_build_payload(nlh, c.get());
  std::vector<ChainInfo> out;
  s.Talk(
      nlh, "nft_getchain",
      [&](const nlmsghdr* m) {
        ChainPtr r(nftnl_chain_alloc());
        if (nftnl_chain_nlmsg_parse(m, r.get()) != 0) return;
        if (table != nftnl_chain_get_str(r.get(), NFTNL_CHAIN_TABLE)) return;
        out.push_back(ChainFromNl(r.get()));
      },
      intr);
  return out;
}

void DumpRules(NlSocket& s, uint8_t family, const std::string& table, const std::string& chain, bool* intr,
               const std::function<void(const nlmsghdr*, nftnl_rule*)>& each) {
  char buf[MNL_SOCKET_BUFFER_SIZE] = {};  // zeroed: libnftnl leaves attribute padding unwritten
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETRULE, family, NLM_F_DUMP, s.NextSeq());
  RulePtr r(nftnl_rule_alloc());
  nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, table.c_str());
  nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, chain.c_str());
  nftnl_rule_nlmsg_build_payload(nlh, r.get());
  s.Talk(
      nlh, "nft_getrule",
      [&](const nlmsghdr* m) {
        RulePtr x(nftnl_rule_alloc());
        if (nftnl_rule_nlmsg_parse(m, x.get()) != 0) return;
        if (chain != nftnl_rule_get_str(x.get(), NFTNL_RULE_CHAIN) || table != nftnl_rule_get_str(x.get(), NFTNL_RULE_TABLE)) return;
        each(m, x.get());
      },
      intr);
}

// ---------------------------------------------------------------------------------------------
// Addresses

struct Cidr {
  uint8_t bytes[16] = {0};
  uint8_t mask[16] = {0};
  int len = 4;  // 4 or 16
  int prefix = 32;
};

Cidr ParseCidr(const std::string& text, uint8_t family) {
  Cidr c;
  c.len = family == NFPROTO_IPV6 ? 16 : 4;
  std::string addr = text;
  int prefix = c.len * 8;
  auto slash = text.find('/');
  if (slash != std::string::npos) {
    addr = text.substr(0, slash);
    std::string p = text.substr(slash + 1);
    if (p.empty() || p.size() > 3 || p.find_first_not_of("0123456789") != std::string::npos)
      throw std::invalid_argument("bad prefix length in " + text);
    prefix = std::stoi(p);
    if (prefix > c.len * 8) throw std::invalid_argument("prefix length out of range in " + text);
  }
  if (inet_pton(family == NFPROTO_IPV6 ? AF_INET6 : AF_INET, addr.c_str(), c.bytes) != 1)
    throw std::invalid_argument(std::string("not an ") + (family == NFPROTO_IPV6 ? "IPv6" : "IPv4") + " address: " + text);
  c.prefix = prefix;
  for (int i = 0; i < c.len; i++) {
    int bits = std::max(0, std::min(8, prefix - i * 8));
    c.mask[i] = static_cast<uint8_t>(bits == 0 ? 0 : (0xff << (8 - bits)) & 0xff);
    c.bytes[i] &= c.mask[i];
  }
  return c;
}

std::string FormatCidr(const uint8_t* bytes, int len, int prefix) {
  char out[INET6_ADDRSTRLEN] = {0};
  inet_ntop(len == 16 ? AF_INET6 : AF_INET, bytes, out, sizeof out);
  return std::string(out) + "/" + std::to_string(prefix);
}

std::string FormatAddr(const uint8_t* bytes, int len) {
  char out[INET6_ADDRSTRLEN] = {0};
  inet_ntop(len == 16 ? AF_INET6 : AF_INET, bytes, out, sizeof out);
  return out;
}

// Prefix length of a mask that is a prefix mask, or -1.
int MaskPrefix(const uint8_t* m, int len) {
  int prefix = 0;
  bool ended = false;
  for (int i = 0; i < len; i++) {
    for (int b = 7; b >= 0; b--) {
      bool bit = (m[i] >> b) & 1;
      if (bit && ended) return -1;
      if (bit) prefix++;
      else ended = true;
    }
  }
  return prefix;
}

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

uint8_t ProtoNumber(const std::string& p) { return p == "tcp" ? IPPROTO_TCP : p == "udp" ? IPPROTO_UDP : 0; }

bool IsVerdict(const std::string& t) { return t == "RETURN" || t == "ACCEPT" || t == "DROP"; }

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
  Cidr a = ParseCidr(spec.toAddress, family);
  uint8_t info[kRange2Size] = {0};
  nf_nat_range2 range{};
  range.flags = NF_NAT_RANGE_MAP_IPS;
  std::memcpy(&range.min_addr, a.bytes, a.len);
  std::memcpy(&range.max_addr, a.bytes, a.len);
  if (spec.toPort >= 0) {
    range.flags |= NF_NAT_RANGE_PROTO_SPECIFIED;
    range.min_proto.all = htons(static_cast<uint16_t>(spec.toPort));
    range.max_proto.all = htons(static_cast<uint16_t>(spec.toPort));
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
  Cidr a = ParseCidr(spec.toAddress, family);
  nftnl_expr* e = NewExpr("immediate");
  nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_1);
  nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, a.bytes, a.len);
  AddExpr(r, e);
  if (spec.toPort >= 0) {
    uint16_t port = htons(static_cast<uint16_t>(spec.toPort));
    e = NewExpr("immediate");
    nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_2);
    nftnl_expr_set(e, NFTNL_EXPR_IMM_DATA, &port, sizeof port);
    AddExpr(r, e);
  }
  e = NewExpr("nat");
  nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_TYPE, NFT_NAT_DNAT);
  nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_FAMILY, family);
  nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_ADDR_MIN, NFT_REG_1);
  if (spec.toPort >= 0) {
    nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_PROTO_MIN, NFT_REG_2);
    nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_FLAGS, NF_NAT_RANGE_PROTO_SPECIFIED);
  }
  AddExpr(r, e);
}

// Checks that a rule can be written; throws std::invalid_argument naming the problem.
void ValidateSpec(const RuleSpec& s, uint8_t family, Dialect d) {
  if (!s.src.empty()) ParseCidr(s.src, family);
  if (!s.dst.empty()) ParseCidr(s.dst, family);
  if (!s.dstSet.empty()) {
    if (d != Dialect::Native) throw std::invalid_argument("dstSet (a set lookup) is only for the nft dialect");
    if (!s.dst.empty()) throw std::invalid_argument("dst and dstSet cannot both be given");
    if (s.dstSet.size() > 255) throw std::invalid_argument("set name too long: " + s.dstSet);
  }
  if (!s.protocol.empty() && ProtoNumber(s.protocol) == 0) throw std::invalid_argument("unsupported protocol " + s.protocol);
  if (s.hasComment && s.comment.size() >= kCommentLen) throw std::invalid_argument("comment longer than 255 bytes");
  if (s.target == "DNAT") {
    if (!s.hasTo) throw std::invalid_argument("DNAT without a destination");
    ParseCidr(s.toAddress, family);
    if (s.toAddress.find('/') != std::string::npos) throw std::invalid_argument("DNAT destination must be an address: " + s.toAddress);
    if (s.toPort > 65535 || s.toPort == 0) throw std::invalid_argument("DNAT port out of range");
  } else if (s.hasTo) {
    throw std::invalid_argument("toDestination is only valid with target DNAT");
  }
  if (!s.target.empty() && !IsVerdict(s.target) && s.target != "DNAT") {
    const size_t max = d == Dialect::Xt ? 28 : 255;  // XT_EXTENSION_MAXNAMELEN - 1 / NFT_CHAIN_MAXNAMELEN - 1
    if (s.target.size() > max) throw std::invalid_argument("chain name too long: " + s.target);
    static const std::set<std::string> unsupported = {"MASQUERADE", "SNAT", "REDIRECT", "MARK", "REJECT", "LOG", "QUEUE"};
    if (unsupported.count(s.target)) throw std::invalid_argument("unsupported target " + s.target);
  }
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
  uint8_t proto = ProtoNumber(s.protocol);
  if (d == Dialect::Xt) {
    // nft_ipv4_add()/nft_ipv6_add(): protocol, source, destination, matches, counter, compat, action.
    if (proto) AddMetaL4(r.get(), proto);
    AddAddrs(r.get(), s, family);
    if (s.hasComment) {
      nftnl_expr* e = NewExpr("match");
      nftnl_expr_set(e, NFTNL_EXPR_MT_NAME, "comment", 7);
      nftnl_expr_set_u32(e, NFTNL_EXPR_MT_REV, 0);
      void* info = calloc(1, kCommentLen);
      if (!info) throw SysError(ENOMEM, "calloc", "out of memory");
      std::memcpy(info, s.comment.data(), std::min(s.comment.size(), kCommentLen - 1));
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
    if (s.hasComment) {
      UdataPtr u(nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN));
      if (!u) throw SysError(ENOMEM, "nftnl_udata_buf_alloc", "out of memory");
      if (!nftnl_udata_put_strz(u.get(), kUdataRuleComment, s.comment.c_str())) throw std::invalid_argument("comment too long");
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
        if (dlen != 1 || !(data[0] == IPPROTO_TCP || data[0] == IPPROTO_UDP) || !lr.spec.protocol.empty()) {
          unknown("protocol");
          continue;
        }
        lr.spec.protocol = data[0] == IPPROTO_TCP ? "tcp" : "udp";
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
          !lr.spec.hasComment) {
        lr.spec.hasComment = true;
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
      lr.spec.hasTo = true;
      lr.spec.toAddress = FormatAddr(reinterpret_cast<const uint8_t*>(&range.min_addr), alen);
      lr.spec.toPort = port ? ntohs(range.min_proto.all) : -1;
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
      lr.spec.hasTo = true;
      lr.spec.toAddress = FormatAddr(a->second.data, alen);
      if (hasPort) {
        auto p = regs.find(nftnl_expr_get_u32(e, NFTNL_EXPR_NAT_REG_PROTO_MIN));
        if (p == regs.end() || p->second.kind != Reg::Imm || p->second.len != 2) {
          unknown("nat");
          continue;
        }
        uint16_t port;
        std::memcpy(&port, p->second.data, 2);
        lr.spec.toPort = ntohs(port);
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
      lr.spec.hasComment = UdataComment(ud, ulen, kUdataRuleComment, &lr.spec.comment, &other);
      if (other) unknown("userdata");
    }
    // Xt: iptables-nft 1.8.9 keeps the comment in the xt match; newer versions add userdata
    // describing the rule for old readers, which does not change what it means.
  }
  if (d == Dialect::Xt && nftnl_rule_is_set(r, NFTNL_RULE_COMPAT_FLAGS) && nftnl_rule_get_u32(r, NFTNL_RULE_COMPAT_FLAGS) != 0)
    unknown("compat flags");
  return lr;
}

// ---------------------------------------------------------------------------------------------
// Reading

ChainInfo ReadChainRules(NlSocket& s, const ChainInfo& base, uint8_t family, const std::string& table, Dialect d, bool* intr) {
  ChainInfo c = base;
  DumpRules(s, family, table, c.name, intr, [&](const nlmsghdr*, nftnl_rule* r) { c.rules.push_back(ParseRule(r, family, d)); });
  return c;
}

ReadResult ReadWith(NlSocket& s, const ReadRequest& req) {
  // A read spans several dumps and must see one generation: retried like Talk.
  for (ChangingRetry retry; retry.Again();) {
    ReadResult out;
    bool intr = false;
    out.genid = QueryGenId(s);
    out.tableExists = TableExists(s, req.family, req.table);
    if (out.tableExists) {
      std::vector<ChainInfo> chains;
      if (req.allChains) {
        chains = DumpChains(s, req.family, req.table, &intr);
      } else {
        for (const auto& name : req.chains) {
          auto c = GetChain(s, req.family, req.table, name);
          if (c) chains.push_back(*c);
        }
      }
      for (auto& c : chains) out.chains.push_back(req.withRules ? ReadChainRules(s, c, req.family, req.table, req.dialect, &intr) : c);
      out.sets = ReadSets(s, req.family, req.table, req.sets, &intr);
    }
    if (!intr && QueryGenId(s) == out.genid) return out;
  }
  throw SysError(EAGAIN, "nft_getrule", "the table kept changing while it was read (asked again for 10 s)", "EAGAIN");
}

// ---------------------------------------------------------------------------------------------
// The transaction model

struct Entry {
  int live = -1;  // index into the chain's live rules, -1 for a new rule
  RuleSpec spec;
  bool pinned = false;  // live rule we cannot re-create (unmodelled parts)
  uint64_t packets = 0, bytes = 0;
};

struct ChainModel {
  std::string name;
  std::optional<ChainInfo> live;
  bool exists = false;
  bool createRegular = false;
  bool createBase = false;
  bool recreateBase = false;  // native: live base chain with the wrong hook/priority
  BaseChainSpec base;
  bool deleteAtEnd = false;
  std::vector<Entry> entries;
};

struct XtBuiltin {
  const char* name;
  uint32_t hook;
  int32_t prio;
};
// iptables-nft's nat table (nft.c xtables_ipv4/ipv6 "nat" builtin chains).
const XtBuiltin kXtNatBuiltins[] = {
    {"PREROUTING", NF_INET_PRE_ROUTING, -100},
    {"INPUT", NF_INET_LOCAL_IN, 100},
    {"OUTPUT", NF_INET_LOCAL_OUT, -100},
    {"POSTROUTING", NF_INET_POST_ROUTING, 100},
};

const XtBuiltin* FindXtBuiltin(const std::string& name) {
  for (const auto& b : kXtNatBuiltins)
    if (name == b.name) return &b;
  return nullptr;
}

// Max-weight subsequence of `items` (in final order) whose live indexes increase: the rules
// that can stay where they are. Fenwick tree over live indexes, O(n log n).
std::vector<bool> KeepInPlace(const std::vector<Entry>& entries, size_t liveCount) {
  std::vector<bool> keep(entries.size(), false);
  if (liveCount == 0) return keep;
  std::vector<std::pair<int64_t, int>> tree(liveCount + 1, {0, -1});  // (best weight, entry index)
  std::vector<int> prev(entries.size(), -1);
  std::vector<int64_t> best(entries.size(), 0);
  auto query = [&](size_t i) {  // max over [1, i]
    std::pair<int64_t, int> r{0, -1};
    for (; i > 0; i -= i & (~i + 1)) r = std::max(r, tree[i]);
    return r;
  };
  auto update = [&](size_t i, std::pair<int64_t, int> v) {
    for (; i <= liveCount; i += i & (~i + 1)) tree[i] = std::max(tree[i], v);
  };
  std::pair<int64_t, int> top{0, -1};
  for (size_t k = 0; k < entries.size(); k++) {
    if (entries[k].live < 0) continue;
    size_t pos = static_cast<size_t>(entries[k].live) + 1;
    auto q = query(pos - 1);
    int64_t w = entries[k].pinned ? 1'000'000 : 1;
    best[k] = q.first + w;
    prev[k] = q.second;
    std::pair<int64_t, int> v{best[k], static_cast<int>(k)};
    update(pos, v);
    top = std::max(top, v);
  }
  for (int k = top.second; k >= 0; k = prev[k]) keep[static_cast<size_t>(k)] = true;
  return keep;
}

struct BatchBuilder {
  BatchPtr batch;
  uint32_t seq;
  uint32_t firstSeq;
  std::vector<std::string> what;  // description per message (index = seq - firstSeq - 1)
  nlmsghdr* last = nullptr;

  // Pages of 256 KiB: sendmsg() takes at most IOV_MAX (1024) iovecs, one per page, and the
  // whole batch must go in one sendmsg() to be one transaction (nft uses 32 * page size).
  static constexpr uint32_t kPage = 256 * 1024;
  BatchBuilder(uint32_t startSeq, uint32_t genid) : batch(nftnl_batch_alloc(kPage, MNL_SOCKET_BUFFER_SIZE)) {
    if (!batch) throw SysError(ENOMEM, "nftnl_batch_alloc", "out of memory");
    seq = startSeq;
    firstSeq = seq;
    std::memset(nftnl_batch_buffer(batch.get()), 0, MNL_SOCKET_BUFFER_SIZE);
    nlmsghdr* nlh = nftnl_batch_begin(static_cast<char*>(nftnl_batch_buffer(batch.get())), seq++);
    mnl_attr_put_u32(nlh, NFNL_BATCH_GENID, htonl(genid));
    nftnl_batch_update(batch.get());
  }
  bool pending = false;  // the last message's payload is built but not yet accounted
  // Starts a message; its payload is built by the caller before the next Msg()/Done().
  nlmsghdr* Msg(uint16_t type, uint8_t family, uint16_t flags, std::string desc) {
    if (pending) nftnl_batch_update(batch.get());
    pending = true;
    what.push_back(std::move(desc));
    // libnftnl leaves attribute padding unwritten; never send stale heap bytes to the kernel.
    std::memset(nftnl_batch_buffer(batch.get()), 0, MNL_SOCKET_BUFFER_SIZE);
    nlmsghdr* nlh = nftnl_nlmsg_build_hdr(static_cast<char*>(nftnl_batch_buffer(batch.get())), type, family, flags, seq++);
    last = nlh;
    return nlh;
  }
  void Done() {
    if (pending) nftnl_batch_update(batch.get());
    pending = false;
  }
  size_t Count() const { return what.size(); }
};

std::string DescribeRule(const std::string& chain, const RuleSpec& s) {
  std::string out = chain;
  if (!s.src.empty()) out += " -s " + s.src;
  if (!s.dst.empty()) out += " -d " + s.dst;
  if (!s.dstSet.empty()) out += " -d @" + s.dstSet;
  if (!s.protocol.empty()) out += " -p " + s.protocol;
  if (s.hasComment) out += " --comment \"" + s.comment + "\"";
  if (!s.target.empty()) out += " -j " + s.target;
  return out;
}

// Sends the batch; returns 0 or the errno of the first failure (and its description).
int SendBatch(NlSocket& s, BatchBuilder& b, std::string* failed) {
  uint32_t endSeq = b.seq++;
  std::memset(nftnl_batch_buffer(b.batch.get()), 0, MNL_SOCKET_BUFFER_SIZE);
  nftnl_batch_end(static_cast<char*>(nftnl_batch_buffer(b.batch.get())), endSeq);
  nftnl_batch_update(b.batch.get());
  int iovlen = nftnl_batch_iovec_len(b.batch.get());
  if (iovlen > IOV_MAX) throw SysError(EMSGSIZE, "sendmsg", "the nf_tables batch is too large (" + std::to_string(iovlen) + " pages)");
  std::vector<iovec> iov(static_cast<size_t>(iovlen));
  nftnl_batch_iovec(b.batch.get(), iov.data(), static_cast<uint32_t>(iovlen));
  size_t total = 0;
  for (auto& v : iov) total += v.iov_len;
  // The whole batch must reach the kernel as one message (one skb) to be one transaction.
  int sndbuf = static_cast<int>(total + 65536);
  if (setsockopt(s.fd(), SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof sndbuf) != 0) {
    setsockopt(s.fd(), SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof sndbuf);
  }
  sockaddr_nl snl{};
  snl.nl_family = AF_NETLINK;
  msghdr msg{};
  msg.msg_name = &snl;
  msg.msg_namelen = sizeof snl;
  msg.msg_iov = iov.data();
  msg.msg_iovlen = iov.size();
  ssize_t sent;
  do {
    sent = sendmsg(s.fd(), &msg, 0);
  } while (sent < 0 && errno == EINTR);
  s.SeqUsedUpTo(b.seq);
  if (sent < 0) throw SysError(errno, "sendmsg", "cannot send the nf_tables batch: " + Errstr(errno));
  // nfnetlink processes the batch synchronously inside sendmsg(): every answer is queued now.
  // The last message asked for an ack, so a good batch answers exactly once with error 0.
  int firstErr = 0;
  bool acked = false;
  std::vector<char> buf(1 << 16);
  for (int guard = 0; guard < 100000; guard++) {
    pollfd p{s.fd(), POLLIN, 0};
    int pr = poll(&p, 1, acked || firstErr ? 0 : 5000);
    if (pr < 0 && errno == EINTR) continue;
    if (pr <= 0) break;
    ssize_t n = recv(s.fd(), buf.data(), buf.size(), MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN) break;
      throw SysError(errno, "recv", "cannot read the nf_tables batch answer: " + Errstr(errno));
    }
    int len = static_cast<int>(n);
    for (auto* nlh = reinterpret_cast<nlmsghdr*>(buf.data()); mnl_nlmsg_ok(nlh, len); nlh = mnl_nlmsg_next(nlh, &len)) {
      if (nlh->nlmsg_type != NLMSG_ERROR) continue;
      auto* err = static_cast<nlmsgerr*>(mnl_nlmsg_get_payload(nlh));
      if (err->error == 0) {
        acked = true;
        continue;
      }
      uint32_t sq = nlh->nlmsg_seq;
      std::string where = sq > b.firstSeq && sq - b.firstSeq - 1 < b.what.size() ? b.what[sq - b.firstSeq - 1] : "the batch";
      if (!firstErr) {
        firstErr = -err->error;
        *failed = where;
      } else if (failed->size() < 2000) {
        *failed += "\" and at \"" + where + " (" + Errstr(-err->error) + ")";
      }
    }
  }
  if (!firstErr && !acked) throw SysError(ETIMEDOUT, "nft_batch", "the kernel did not answer the nf_tables batch", "ETIMEDOUT");
  return firstErr;
}

ChainModel& ModelFor(std::map<std::string, ChainModel>& models, std::vector<std::string>& order, NlSocket& s, const ApplyRequest& req,
                     const std::string& name, bool* intr) {
  auto it = models.find(name);
  if (it != models.end()) return it->second;
  ChainModel m;
  m.name = name;
  auto ci = GetChain(s, req.family, req.table, name);
  if (ci) {
    m.live = ReadChainRules(s, *ci, req.family, req.table, req.dialect, intr);
    m.exists = true;
    for (size_t i = 0; i < m.live->rules.size(); i++) {
      const auto& lr = m.live->rules[i];
      Entry e;
      e.live = static_cast<int>(i);
      e.spec = lr.spec;
      e.pinned = !lr.unknown.empty();
      e.packets = lr.packets;
      e.bytes = lr.bytes;
      m.entries.push_back(e);
    }
  }
  order.push_back(name);
  return models.emplace(name, std::move(m)).first->second;
}

int FindRule(const ChainModel& m, const RuleSpec& spec) {
  for (size_t i = 0; i < m.entries.size(); i++)
    if (!m.entries[i].pinned && SameRule(m.entries[i].spec, spec)) return static_cast<int>(i);
  return -1;
}

std::string RuleKey(const RuleSpec& s) {
  // Equal keys <=> SameRule(); fields length-prefixed so that no content can collide.
  std::string k;
  for (const std::string& f : {s.src, s.dst, s.dstSet, s.protocol, s.hasComment ? s.comment : std::string(), s.target,
                               s.hasTo ? s.toAddress : std::string(), std::to_string(s.hasTo ? std::max(s.toPort, 0) : 0)}) {
    k += std::to_string(f.size()) + ":" + f;
  }
  return k;
}

struct Attempt {
  int messages = 0;
  int err = 0;
  std::string failed;
};

Attempt ApplyOnce(NlSocket& s, const ApplyRequest& req, uint32_t genid, bool* intr) {
  std::map<std::string, ChainModel> models;
  std::vector<std::string> order;
  bool tableExists = TableExists(s, req.family, req.table);
  bool createTable = false;
  auto need = [&](int idx, const std::string& chain) -> ChainModel& {
    ChainModel& m = ModelFor(models, order, s, req, chain, intr);
    if (m.deleteAtEnd) throw TxError(idx, "chain " + chain + " was deleted earlier in this transaction");
    if (!m.exists) {
      const XtBuiltin* b = req.dialect == Dialect::Xt ? FindXtBuiltin(chain) : nullptr;
      if (!b) throw TxError(idx, "chain " + chain + " does not exist");
      m.exists = true;
      m.createBase = true;
      m.base = BaseChainSpec{b->name, b->hook, b->prio, "nat"};
      if (!tableExists) createTable = true;
    }
    return m;
  };
  // Native: our base chains exist with exactly the asked hook/priority.
  for (const auto& bc : req.baseChains) {
    ChainModel& m = ModelFor(models, order, s, req, bc.name, intr);
    if (!tableExists) createTable = true;
    if (!m.exists) {
      m.exists = true;
      m.createBase = true;
      m.base = bc;
    } else if (!m.live->base || m.live->hook != bc.hook || m.live->priority != bc.priority || m.live->type != bc.type) {
      m.recreateBase = true;
      m.base = bc;
      m.entries.clear();
    }
  }
  // Sets (native): created when missing; elements removed and added by key.
  struct SetWork {
    const SetSpec* spec = nullptr;
    bool create = false;
    bool recreate = false;  // a live set of another shape: deleted and created anew in this batch
    uint32_t id = 0;        // NFTA_SET_ID of a set this batch creates
    std::vector<SetElem> del;
    std::vector<const SetElem*> add;
  };
  std::vector<SetWork> setWork;
  std::map<std::string, uint32_t> newSetIds;
  for (const auto& spec : req.sets) {
    if (req.dialect != Dialect::Native) throw TxError(-1, "sets are only written in the nft dialect");
    if (spec.name.empty() || spec.name.size() > 255) throw TxError(-1, "bad set name \"" + spec.name + "\"");
    for (const auto& other : setWork)
      if (other.spec->name == spec.name) throw TxError(-1, "set " + spec.name + " given twice");
    SetWork w;
    w.spec = &spec;
    std::optional<SetInfo> live = tableExists ? GetSet(s, req.family, req.table, spec.name) : std::nullopt;
    if (!live || !live->ours) {
      w.create = true;
      w.recreate = live.has_value();
      w.id = static_cast<uint32_t>(newSetIds.size() + 1);
      newSetIds[spec.name] = w.id;
      if (!tableExists) createTable = true;
      for (const auto& el : spec.elements) w.add.push_back(&el);
    } else {
      DumpSetElems(s, req.family, req.table, &*live, intr);
      std::map<std::string, const SetElem*> liveByKey;
      for (const auto& el : live->elements) liveByKey[el.key] = &el;
      for (const auto& el : spec.elements) {
        auto f = liveByKey.find(el.key);
        if (f != liveByKey.end()) {
          const SetElem& l = *f->second;
          bool same = !l.unknown && (l.hasComment ? l.comment : std::string()) == (el.hasComment ? el.comment : std::string());
          liveByKey.erase(f);
          if (same) continue;
          w.del.push_back(l);  // replaced: removed, then added again in the same batch
        }
        w.add.push_back(&el);
      }
      for (const auto& [key, l] : liveByKey) w.del.push_back(*l);
    }
    setWork.push_back(std::move(w));
  }
  for (size_t i = 0; i < req.ops.size(); i++) {
    const Op& op = req.ops[i];
    const int idx = static_cast<int>(i);
    auto validate = [&](const RuleSpec& r) {
      try {
        ValidateSpec(r, req.family, req.dialect);
      } catch (const std::invalid_argument& e) {
        throw TxError(idx, std::string("operation ") + std::to_string(idx) + ": " + e.what());
      }
    };
    switch (op.kind) {
      case OpKind::CreateChain: {
        if (op.chain.empty() || op.chain.size() > (req.dialect == Dialect::Xt ? 28u : 255u))
          throw TxError(idx, "bad chain name \"" + op.chain + "\"");
        ChainModel& m = ModelFor(models, order, s, req, op.chain, intr);
        if (m.exists && !m.deleteAtEnd) throw TxError(idx, "chain " + op.chain + " already exists");
        if (m.deleteAtEnd) {  // deleted then created again: the same as emptied
          m.deleteAtEnd = false;
          m.entries.clear();
        } else {
          m.exists = true;
          m.createRegular = true;
          if (!tableExists) createTable = true;
        }
        break;
      }
      case OpKind::FlushChain: need(idx, op.chain).entries.clear(); break;
      case OpKind::DeleteChain: {
        ChainModel& m = need(idx, op.chain);
        if ((m.live && m.live->base) || m.createBase) throw TxError(idx, "cannot delete built-in chain " + op.chain);
        if (!m.entries.empty()) throw TxError(idx, "chain " + op.chain + " is not empty");
        if (m.createRegular) {
          m.createRegular = false;
          m.exists = false;
        } else {
          m.deleteAtEnd = true;
        }
        break;
      }
      case OpKind::InsertRule: {
        validate(op.rule);
        ChainModel& m = need(idx, op.chain);
        int pos = op.position == 0 ? 1 : op.position;
        if (pos < 1 || static_cast<size_t>(pos) > m.entries.size() + 1)
          throw TxError(idx, "position " + std::to_string(pos) + " out of range for chain " + op.chain);
        Entry e;
        e.spec = op.rule;
        m.entries.insert(m.entries.begin() + (pos - 1), e);
        break;
      }
      case OpKind::AppendRule: {
        validate(op.rule);
        Entry e;
        e.spec = op.rule;
        need(idx, op.chain).entries.push_back(e);
        break;
      }
      case OpKind::DeleteRule: {
        ChainModel& m = need(idx, op.chain);
        int k = FindRule(m, op.rule);
        if (k < 0) throw TxError(idx, "no such rule in chain " + op.chain + ": " + DescribeRule(op.chain, op.rule));
        m.entries.erase(m.entries.begin() + k);
        break;
      }
      case OpKind::DeleteRuleAt: {
        ChainModel& m = need(idx, op.chain);
        if (op.position < 1 || static_cast<size_t>(op.position) > m.entries.size())
          throw TxError(idx, "position " + std::to_string(op.position) + " out of range for chain " + op.chain);
        m.entries.erase(m.entries.begin() + (op.position - 1));
        break;
      }
      case OpKind::ReplaceRule: {
        validate(op.rule);
        ChainModel& m = need(idx, op.chain);
        if (op.position < 1 || static_cast<size_t>(op.position) > m.entries.size())
          throw TxError(idx, "position " + std::to_string(op.position) + " out of range for chain " + op.chain);
        Entry e;
        e.spec = op.rule;
        m.entries[static_cast<size_t>(op.position - 1)] = e;
        break;
      }
      case OpKind::MoveRule: {
        ChainModel& m = need(idx, op.chain);
        int k = FindRule(m, op.rule);
        if (k < 0) throw TxError(idx, "no such rule in chain " + op.chain + ": " + DescribeRule(op.chain, op.rule));
        if (op.position < 1 || static_cast<size_t>(op.position) > m.entries.size())
          throw TxError(idx, "position " + std::to_string(op.position) + " out of range for chain " + op.chain);
        Entry e = m.entries[static_cast<size_t>(k)];
        m.entries.erase(m.entries.begin() + k);
        m.entries.insert(m.entries.begin() + (op.position - 1), e);
        break;
      }
      case OpKind::ReplaceChain: {
        for (const auto& r : op.rules) validate(r);
        ChainModel& m = ModelFor(models, order, s, req, op.chain, intr);
        if (!m.exists || m.deleteAtEnd) {
          if (req.dialect == Dialect::Xt && FindXtBuiltin(op.chain)) {
            need(idx, op.chain);
          } else if (m.deleteAtEnd) {
            m.deleteAtEnd = false;
            m.entries.clear();
          } else {
            if (op.chain.empty() || op.chain.size() > (req.dialect == Dialect::Xt ? 28u : 255u))
              throw TxError(idx, "bad chain name \"" + op.chain + "\"");
            m.exists = true;
            m.createRegular = true;
            if (!tableExists) createTable = true;
          }
        }
        std::map<std::string, std::vector<size_t>> byKey;
        for (size_t k = m.entries.size(); k-- > 0;)
          if (!m.entries[k].pinned) byKey[RuleKey(m.entries[k].spec)].push_back(k);
        std::vector<Entry> next;
        for (const auto& r : op.rules) {
          auto f = byKey.find(RuleKey(r));
          if (f != byKey.end() && !f->second.empty()) {
            next.push_back(m.entries[f->second.back()]);
            f->second.pop_back();
          } else {
            Entry e;
            e.spec = r;
            next.push_back(e);
          }
        }
        m.entries = std::move(next);
        break;
      }
    }
  }

  // A set that is deleted and created again: every rule that looks it up goes first and comes
  // back after (as a new rule: the kernel binds it to the new set), whichever chain holds it.
  std::set<std::string> recreated;
  for (const auto& w : setWork)
    if (w.recreate) recreated.insert(w.spec->name);
  if (!recreated.empty()) {
    for (const auto& c : DumpChains(s, req.family, req.table, intr)) ModelFor(models, order, s, req, c.name, intr);
    for (auto& [name, m] : models) {
      for (auto& e : m.entries) {
        if (e.live >= 0 && recreated.count(e.spec.dstSet)) {
          if (e.pinned)
            throw TxError(-1, "rule " + std::to_string(e.live + 1) + " of chain " + name + " uses set " + e.spec.dstSet +
                                  " and has parts this backend does not model");
          e.live = -1;
        }
      }
    }
  }

  // Emit, in one batch: table; chains; the rules that go; sets and their elements; the rules
  // that come (they may look up a set created above); chain deletions.
  BatchBuilder b(s.NextSeq(), genid);
  const uint8_t fam = req.family;
  if (createTable && !tableExists) {
    TablePtr t(nftnl_table_alloc());
    nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, fam);
    nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, req.table.c_str());
    nftnl_table_nlmsg_build_payload(b.Msg(NFT_MSG_NEWTABLE, fam, NLM_F_CREATE, "create table " + req.table), t.get());
  }
  auto flushMsg = [&](const std::string& chain) {
    RulePtr r(nftnl_rule_alloc());
    nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, fam);
    nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, req.table.c_str());
    nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, chain.c_str());
    nftnl_rule_nlmsg_build_payload(b.Msg(NFT_MSG_DELRULE, fam, 0, "flush chain " + chain), r.get());
  };
  auto chainMsg = [&](uint16_t type, const std::string& name, const BaseChainSpec* base, const std::string& desc) {
    ChainPtr c(nftnl_chain_alloc());
    nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_FAMILY, fam);
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TABLE, req.table.c_str());
    nftnl_chain_set_str(c.get(), NFTNL_CHAIN_NAME, name.c_str());
    if (base) {
      nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_HOOKNUM, base->hook);
      nftnl_chain_set_s32(c.get(), NFTNL_CHAIN_PRIO, base->priority);
      nftnl_chain_set_str(c.get(), NFTNL_CHAIN_TYPE, base->type.c_str());
      nftnl_chain_set_u32(c.get(), NFTNL_CHAIN_POLICY, NF_ACCEPT);
    }
    nftnl_chain_nlmsg_build_payload(b.Msg(type, fam, type == NFT_MSG_NEWCHAIN ? NLM_F_CREATE : 0, desc), c.get());
  };
  for (const auto& name : order) {
    ChainModel& m = models.at(name);
    if (m.recreateBase) {
      if (!m.live->rules.empty()) flushMsg(name);
      chainMsg(NFT_MSG_DELCHAIN, name, nullptr, "delete chain " + name);
      chainMsg(NFT_MSG_NEWCHAIN, name, &m.base, "create base chain " + name);
    } else if (m.createBase) {
      chainMsg(NFT_MSG_NEWCHAIN, name, &m.base, "create base chain " + name);
    } else if (m.createRegular) {
      chainMsg(NFT_MSG_NEWCHAIN, name, nullptr, "create chain " + name);
    }
  }
  // Which live rules stay, per chain (the longest run that keeps its order; see KeepInPlace).
  std::map<std::string, std::vector<bool>> keeps;
  for (const auto& name : order) {
    ChainModel& m = models.at(name);
    if (!m.exists && !m.deleteAtEnd) continue;
    const bool fresh = !m.live || m.recreateBase;
    const size_t liveCount = fresh ? 0 : m.live->rules.size();
    std::vector<bool>& keep = keeps[name] = KeepInPlace(m.entries, liveCount);
    std::vector<bool> liveKept(liveCount, false);
    for (size_t k = 0; k < m.entries.size(); k++) {
      if (keep[k]) liveKept[static_cast<size_t>(m.entries[k].live)] = true;
      else if (m.entries[k].live >= 0 && m.entries[k].pinned)
        throw TxError(-1, "rule " + std::to_string(m.entries[k].live + 1) + " of chain " + name +
                              " would have to move, and it has parts this backend does not model");
    }
    size_t keptCount = 0, gone = 0;
    for (bool k : liveKept) (k ? keptCount : gone)++;
    if (gone > 1 && keptCount == 0) {
      flushMsg(name);
    } else {
      for (size_t i = 0; i < liveCount; i++) {
        if (liveKept[i]) continue;
        RulePtr r(nftnl_rule_alloc());
        nftnl_rule_set_u32(r.get(), NFTNL_RULE_FAMILY, fam);
        nftnl_rule_set_str(r.get(), NFTNL_RULE_TABLE, req.table.c_str());
        nftnl_rule_set_str(r.get(), NFTNL_RULE_CHAIN, name.c_str());
        nftnl_rule_set_u64(r.get(), NFTNL_RULE_HANDLE, m.live->rules[i].handle);
        nftnl_rule_nlmsg_build_payload(b.Msg(NFT_MSG_DELRULE, fam, 0, "delete rule " + DescribeRule(name, m.live->rules[i].spec)), r.get());
      }
    }
  }
  for (const auto& w : setWork) {
    if (!w.create) continue;
    if (w.recreate) {
      SetPtr old(nftnl_set_alloc());
      if (!old) throw SysError(ENOMEM, "nftnl_set_alloc", "out of memory");
      nftnl_set_set_u32(old.get(), NFTNL_SET_FAMILY, fam);
      nftnl_set_set_str(old.get(), NFTNL_SET_TABLE, req.table.c_str());
      nftnl_set_set_str(old.get(), NFTNL_SET_NAME, w.spec->name.c_str());
      nftnl_set_nlmsg_build_payload(b.Msg(NFT_MSG_DELSET, fam, 0, "delete set " + w.spec->name + " (another shape)"), old.get());
    }
    SetPtr st(nftnl_set_alloc());
    if (!st) throw SysError(ENOMEM, "nftnl_set_alloc", "out of memory");
    nftnl_set_set_u32(st.get(), NFTNL_SET_FAMILY, fam);
    nftnl_set_set_str(st.get(), NFTNL_SET_TABLE, req.table.c_str());
    nftnl_set_set_str(st.get(), NFTNL_SET_NAME, w.spec->name.c_str());
    nftnl_set_set_u32(st.get(), NFTNL_SET_FLAGS, 0);
    nftnl_set_set_u32(st.get(), NFTNL_SET_KEY_TYPE, AddrType(fam));
    nftnl_set_set_u32(st.get(), NFTNL_SET_KEY_LEN, AddrLen(fam));
    nftnl_set_set_u32(st.get(), NFTNL_SET_ID, w.id);
    UdataPtr u(nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN));
    if (!u || !nftnl_udata_put_u32(u.get(), kUdataSetKeyByteorder, kByteorderBigEndian))
      throw SysError(ENOMEM, "nftnl_udata_put", "out of memory");
    nftnl_set_set_data(st.get(), NFTNL_SET_USERDATA, nftnl_udata_buf_data(u.get()), nftnl_udata_buf_len(u.get()));
    // The set's counter: the kernel gives every element one (a clone, no per-element parse).
    nftnl_set_add_expr(st.get(), NewExpr("counter"));
    nftnl_set_nlmsg_build_payload(b.Msg(NFT_MSG_NEWSET, fam, NLM_F_CREATE, "create set " + w.spec->name), st.get());
  }
  // Elements go in messages of at most one netlink page each (the batch's overrun size).
  auto elemMsgs = [&](uint16_t type, const SetWork& w, const std::vector<const SetElem*>& els) {
    const size_t budget = MNL_SOCKET_BUFFER_SIZE - 128 - 2 * 260;
    for (size_t i = 0; i < els.size();) {
      SetPtr st(nftnl_set_alloc());
      if (!st) throw SysError(ENOMEM, "nftnl_set_alloc", "out of memory");
      nftnl_set_set_u32(st.get(), NFTNL_SET_FAMILY, fam);
      nftnl_set_set_str(st.get(), NFTNL_SET_TABLE, req.table.c_str());
      nftnl_set_set_str(st.get(), NFTNL_SET_NAME, w.spec->name.c_str());
      if (w.create) nftnl_set_set_u32(st.get(), NFTNL_SET_ID, w.id);
      const size_t first = i;
      for (size_t bytes = 0; i < els.size();) {
        const SetElem& el = *els[i];
        const bool comment = type == NFT_MSG_NEWSETELEM && el.hasComment;
        size_t cost = 48 + (comment ? el.comment.size() + 4 : 0);
        if (i > first && bytes + cost > budget) break;
        bytes += cost;
        i++;
        nftnl_set_elem* e = nftnl_set_elem_alloc();
        if (!e) throw SysError(ENOMEM, "nftnl_set_elem_alloc", "out of memory");
        nftnl_set_elem_add(st.get(), e);  // owned by the set from here on
        Cidr c = ParseCidr(el.key, fam);
        nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, c.bytes, static_cast<uint32_t>(c.len));
        if (comment) {
          UdataPtr u(nftnl_udata_buf_alloc(NFT_USERDATA_MAXLEN));
          if (!u || !nftnl_udata_put_strz(u.get(), kUdataSetElemComment, el.comment.c_str()))
            throw std::invalid_argument("comment too long");
          nftnl_set_elem_set(e, NFTNL_SET_ELEM_USERDATA, nftnl_udata_buf_data(u.get()), nftnl_udata_buf_len(u.get()));
        }
      }
      std::string desc = std::string(type == NFT_MSG_NEWSETELEM ? "add " : "delete ") + std::to_string(i - first) + " element(s) " +
                         (type == NFT_MSG_NEWSETELEM ? "to" : "from") + " set " + w.spec->name + " (first " + els[first]->key + ")";
      nftnl_set_elems_nlmsg_build_payload(b.Msg(type, fam, type == NFT_MSG_NEWSETELEM ? NLM_F_CREATE : 0, desc), st.get());
    }
  };
  for (const auto& w : setWork) {
    std::vector<const SetElem*> del;
    for (const auto& el : w.del) del.push_back(&el);
    elemMsgs(NFT_MSG_DELSETELEM, w, del);
    elemMsgs(NFT_MSG_NEWSETELEM, w, w.add);
  }
  for (const auto& name : order) {
    auto kp = keeps.find(name);
    if (kp == keeps.end()) continue;
    const std::vector<bool>& keep = kp->second;
    ChainModel& m = models.at(name);
    // New rules (and moved ones, with their counters) go before the next rule that stays.
    std::vector<uint64_t> nextKept(m.entries.size() + 1, 0);
    for (size_t k = m.entries.size(); k-- > 0;)
      nextKept[k] = keep[k] ? m.live->rules[static_cast<size_t>(m.entries[k].live)].handle : nextKept[k + 1];
    for (size_t k = 0; k < m.entries.size(); k++) {
      if (keep[k]) continue;
      const Entry& e = m.entries[k];
      auto sid = e.spec.dstSet.empty() ? newSetIds.end() : newSetIds.find(e.spec.dstSet);
      RulePtr r = BuildRule(fam, req.table, name, e.spec, req.dialect, e.live >= 0 ? e.packets : 0, e.live >= 0 ? e.bytes : 0,
                            sid == newSetIds.end() ? 0 : sid->second);
      uint16_t flags = NLM_F_CREATE;
      if (nextKept[k + 1]) nftnl_rule_set_u64(r.get(), NFTNL_RULE_POSITION, nextKept[k + 1]);
      else flags |= NLM_F_APPEND;
      nftnl_rule_nlmsg_build_payload(b.Msg(NFT_MSG_NEWRULE, fam, flags, "add rule " + DescribeRule(name, e.spec)), r.get());
    }
  }
  for (const auto& name : order) {
    ChainModel& m = models.at(name);
    if (m.deleteAtEnd) chainMsg(NFT_MSG_DELCHAIN, name, nullptr, "delete chain " + name);
  }
  Attempt a;
  a.messages = static_cast<int>(b.Count());
  if (a.messages == 0) return a;
  if (*intr) {  // a dump we modelled from was inconsistent: do not write from it
    a.err = kRestart;
    return a;
  }
  b.Done();
  b.last->nlmsg_flags |= NLM_F_ACK;
  a.err = SendBatch(s, b, &a.failed);
  return a;
}

}  // namespace

bool SameRule(const RuleSpec& a, const RuleSpec& b) {
  // The same equality as sameRule() in src/netfilter/rules.ts: an absent comment equals an empty one.
  return a.target == b.target && a.src == b.src && a.dst == b.dst && a.dstSet == b.dstSet && a.protocol == b.protocol &&
         (a.hasComment ? a.comment : std::string()) == (b.hasComment ? b.comment : std::string()) &&
         (a.hasTo ? a.toAddress : std::string()) == (b.hasTo ? b.toAddress : std::string()) &&
         (a.hasTo ? std::max(a.toPort, 0) : 0) == (b.hasTo ? std::max(b.toPort, 0) : 0);
}

std::string CanonicalCidr(const std::string& cidr, uint8_t family) {
  Cidr c = ParseCidr(cidr, family);
  return FormatCidr(c.bytes, c.len, c.prefix);
}

uint32_t GetGenId(const std::string& netns) {
  NetnsGuard g(netns);
  NlSocket s;
  return QueryGenId(s);
}

ReadResult Read(const ReadRequest& req) {
  NetnsGuard g(req.netns);
  NlSocket s;
  return ReadWith(s, req);
}

ApplyResult Apply(const ApplyRequest& in) {
  // Addresses in canonical form, so that rules compare equal to what we read back.
  ApplyRequest req = in;
  for (size_t i = 0; i < req.ops.size(); i++) {
    auto canon = [&](RuleSpec& r) {
      try {
        if (!r.src.empty()) r.src = CanonicalCidr(r.src, req.family);
        if (!r.dst.empty()) r.dst = CanonicalCidr(r.dst, req.family);
        if (r.hasTo) {
          if (r.toAddress.find('/') != std::string::npos)
            throw std::invalid_argument("DNAT destination must be an address: " + r.toAddress);
          Cidr c = ParseCidr(r.toAddress, req.family);
          r.toAddress = FormatAddr(c.bytes, c.len);
        }
      } catch (const std::invalid_argument& e) {
        throw TxError(static_cast<int>(i), "operation " + std::to_string(i) + ": " + e.what());
      }
    };
    canon(req.ops[i].rule);
    for (auto& r : req.ops[i].rules) canon(r);
  }
  for (auto& set : req.sets) {
    std::set<std::string> seen;
    for (auto& el : set.elements) {
      try {
        Cidr c = ParseCidr(el.key, req.family);
        if (c.prefix != c.len * 8) throw std::invalid_argument("set element must be one address: " + el.key);
        el.key = FormatCidr(c.bytes, c.len, c.prefix);
      } catch (const std::invalid_argument& e) {
        throw TxError(-1, "set " + set.name + ": " + e.what());
      }
      // NFT_USERDATA_MAXLEN (256) holds the comment, its NUL and the 2-byte TLV header.
      if (el.hasComment && el.comment.size() > 252) throw TxError(-1, "set " + set.name + ": comment longer than 252 bytes: " + el.comment);
      if (!seen.insert(el.key).second) throw TxError(-1, "set " + set.name + ": element " + el.key + " given twice");
    }
  }
  NetnsGuard g(req.netns);
  NlSocket s;
  ApplyResult out;
  for (int attempt = 1; attempt <= std::max(1, req.maxAttempts); attempt++) {
    out.attempts = attempt;
    bool intr = false;
    uint32_t genid = QueryGenId(s);
    Attempt a = ApplyOnce(s, req, genid, &intr);
    if (a.err == 0) {
      out.messages = a.messages;
      out.genid = a.messages ? QueryGenId(s) : genid;
      return out;
    }
    if (a.err == kRestart) continue;  // somebody wrote in between: read again, retry
    throw SysError(a.err, "nft_batch", "nf_tables rejected the transaction at \"" + a.failed + "\": " + Errstr(a.err));
  }
  throw SysError(EAGAIN, "nft_batch", "the ruleset kept changing; gave up after " + std::to_string(out.attempts) + " attempts", "EAGAIN");
}

bool DeleteTable(const std::string& netns, uint8_t family, const std::string& table) {
  NetnsGuard g(netns);
  NlSocket s;
  for (int attempt = 0; attempt < 5; attempt++) {
    uint32_t genid = QueryGenId(s);
    if (!TableExists(s, family, table)) return false;
    BatchBuilder b(s.NextSeq(), genid);
    TablePtr t(nftnl_table_alloc());
    nftnl_table_set_u32(t.get(), NFTNL_TABLE_FAMILY, family);
    nftnl_table_set_str(t.get(), NFTNL_TABLE_NAME, table.c_str());
    nftnl_table_nlmsg_build_payload(b.Msg(NFT_MSG_DELTABLE, family, NLM_F_ACK, "delete table " + table), t.get());
    b.Done();
    std::string failed;
    int err = SendBatch(s, b, &failed);
    if (err == 0) return true;
    if (err == kRestart) continue;
    if (err == ENOENT) return false;
    throw SysError(err, "nft_batch", "cannot delete table " + table + ": " + Errstr(err));
  }
  throw SysError(EAGAIN, "nft_batch", "the ruleset kept changing while deleting table " + table, "EAGAIN");
}

std::vector<TableName> ListTables(const std::string& netns) {
  NetnsGuard g(netns);
  NlSocket s;
  char buf[MNL_SOCKET_BUFFER_SIZE] = {};  // zeroed: libnftnl leaves attribute padding unwritten
  nlmsghdr* nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETTABLE, NFPROTO_UNSPEC, NLM_F_DUMP, s.NextSeq());
  std::vector<TableName> out;
  s.Talk(nlh, "nft_gettable", [&](const nlmsghdr* m) {
    TablePtr t(nftnl_table_alloc());
    if (nftnl_table_nlmsg_parse(m, t.get()) != 0) return;
    out.push_back({static_cast<uint8_t>(nftnl_table_get_u32(t.get(), NFTNL_TABLE_FAMILY)), nftnl_table_get_str(t.get(), NFTNL_TABLE_NAME)});
  });
  return out;
}

std::vector<RawRule> RawRules(const std::string& netns, uint8_t family, const std::string& table, const std::string& chain) {
  NetnsGuard g(netns);
  NlSocket s;
  std::vector<RawRule> out;
  auto hex = [](const void* p, size_t n) {
    static const char* digits = "0123456789abcdef";
    std::string h;
    for (size_t i = 0; i < n; i++) {
      uint8_t c = static_cast<const uint8_t*>(p)[i];
      h += digits[c >> 4];
      h += digits[c & 15];
    }
    return h;
  };
  DumpRules(s, family, table, chain, nullptr, [&](const nlmsghdr* m, nftnl_rule* r) {
    RawRule rr;
    if (nftnl_rule_is_set(r, NFTNL_RULE_HANDLE)) rr.handle = nftnl_rule_get_u64(r, NFTNL_RULE_HANDLE);
    const char* payload = static_cast<const char*>(mnl_nlmsg_get_payload(m)) + MNL_ALIGN(sizeof(nfgenmsg));
    size_t plen = m->nlmsg_len - MNL_NLMSG_HDRLEN - MNL_ALIGN(sizeof(nfgenmsg));
    ForEachAttr(payload, plen, [&](const nlattr* a) {
      uint16_t type = mnl_attr_get_type(a);
      if (type == NFTA_RULE_EXPRESSIONS) {
        ForEachNested(a, [&](const nlattr* el) {
          const nlattr* nameAttr = nullptr;
          ForEachNested(el, [&](const nlattr* x) {
            if (mnl_attr_get_type(x) == NFTA_EXPR_NAME) nameAttr = x;
          });
          if (nameAttr && std::string(mnl_attr_get_str(nameAttr)) == "counter") rr.exprsHex += "[counter]";
          else rr.exprsHex += "[" + hex(el, mnl_attr_get_len(el)) + "]";
        });
      } else if (type == NFTA_RULE_COMPAT) {
        rr.compatHex = hex(mnl_attr_get_payload(a), mnl_attr_get_payload_len(a));
      } else if (type == NFTA_RULE_USERDATA) {
        rr.userdataHex = hex(mnl_attr_get_payload(a), mnl_attr_get_payload_len(a));
      }
    });
    out.push_back(std::move(rr));
  });
  return out;
}

std::optional<std::string> ReadProcNet(const std::string& netns, const std::string& name) {
  if (name.empty() || name.find('/') != std::string::npos || name[0] == '.')
    throw SysError(EINVAL, "open", "bad /proc/net file name " + name);
  NetnsGuard g(netns);
  // /proc/self/net is the thread-group leader's namespace; this thread may be elsewhere.
  std::string path = "/proc/thread-self/net/" + name;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return std::nullopt;
    throw SysError(errno, "open", "cannot open " + path + ": " + Errstr(errno));
  }
  std::string out;
  char buf[4096];
  for (int guard = 0; guard < 4096; guard++) {
    ssize_t n = read(fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      throw SysError(e, "read", "cannot read " + path + ": " + Errstr(e));
    }
    if (n == 0) break;
    out.append(buf, static_cast<size_t>(n));
  }
  close(fd);
  return out;
}

}  // namespace nft
}  // namespace edgemesh
