// The netlink side of the nf_tables core: one socket per call (NlSocket, closed exactly once),
// owners of libnftnl objects, the dumps and lookups a read needs, and the batch a transaction is
// sent in (BatchBuilder, SendBatch). Internal to native/nft/.
#pragma once
#include <arpa/inet.h>
#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/chain.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter/nfnetlink.h>
#include <malloc.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "common/syserror.h"
#include "nft/nft_core.h"

namespace edgemesh {
namespace nft {

constexpr int kRestart = 85;  // ERESTART: the batch's generation id is stale

inline std::string Errstr(int e) { return std::string(strerror(e)); }

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

// The generation id of the ruleset (NFT_MSG_GETGEN).
uint32_t QueryGenId(NlSocket& s);
// A request for one object by name: false when the kernel answers ENOENT (no such object).
bool TalkUnlessMissing(NlSocket& s, nlmsghdr* nlh, const char* call, const std::function<void(const nlmsghdr*)>& cb);
bool TableExists(NlSocket& s, uint8_t family, const std::string& table);
ChainInfo ChainFromNl(const nftnl_chain* c);
// One chain (nullopt when missing), without rules.
std::optional<ChainInfo> GetChain(NlSocket& s, uint8_t family, const std::string& table, const std::string& chain);
std::vector<ChainInfo> DumpChains(NlSocket& s, uint8_t family, const std::string& table, bool* intr);
void DumpRules(NlSocket& s, uint8_t family, const std::string& table, const std::string& chain, bool* intr,
               const std::function<void(const nlmsghdr*, nftnl_rule*)>& each);

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

// Sends the batch; returns 0 or the errno of the first failure (and its description).
int SendBatch(NlSocket& s, BatchBuilder& b, std::string* failed);

}  // namespace nft
}  // namespace edgemesh
