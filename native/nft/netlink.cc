// See netlink.h.
#include "nft/netlink.h"

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

}  // namespace nft
}  // namespace edgemesh
