// See nft_core.h: the reads and the small entry points; the transaction is in apply.cc, the
// netlink side in netlink.cc, the rule codec in codec.cc.
#include "nft/nft_core.h"

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
#include "nft/codec.h"
#include "nft/netlink.h"
#include "common/syserror.h"
#include "rules/rule_model.h"

namespace edgemesh {
namespace nft {

namespace {

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

}  // namespace

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
