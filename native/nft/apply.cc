// The nf_tables transaction (see nft_core.h Apply, DeleteTable): the ops applied to a model of
// the chains they touch, the minimal edit of each chain (rules/rule_model.h), and one netlink
// batch guarded by the generation id.
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

using rules::Cidr;
using rules::DescribeRule;

namespace {

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

// The entries that can stay where they are (rules::KeepInPlace); a live rule we cannot re-create
// weighs more than any number of others.
std::vector<bool> KeepInPlace(const std::vector<Entry>& entries, size_t liveCount) {
  std::vector<int> live;
  std::vector<int64_t> weight;
  for (const auto& e : entries) {
    live.push_back(e.live);
    weight.push_back(e.pinned ? 1'000'000 : 1);
  }
  return rules::KeepInPlace(live, weight, liveCount);
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
    switch (op.kind) {
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
        ChainModel& m = need(idx, op.chain);
        const int64_t pos = op.position == 0 ? 1 : op.position;
        if (pos < 1 || static_cast<size_t>(pos) > m.entries.size() + 1)
          throw TxError(idx, "position " + std::to_string(pos) + " out of range for chain " + op.chain);
        Entry e;
        e.spec = op.rule;
        m.entries.insert(m.entries.begin() + (pos - 1), e);
        break;
      }
      case OpKind::DeleteRule: {
        ChainModel& m = need(idx, op.chain);
        int k = FindRule(m, op.rule);
        if (k < 0) throw TxError(idx, "no such rule in chain " + op.chain + ": " + DescribeRule(op.chain, op.rule));
        m.entries.erase(m.entries.begin() + k);
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
        // The minimal edit: every wanted rule reuses a rule the chain holds when it can (its
        // counters and, when the order allows, its place: see KeepInPlace).
        std::vector<const RuleSpec*> have;
        std::vector<bool> reusable;
        for (const auto& e : m.entries) {
          have.push_back(&e.spec);
          reusable.push_back(!e.pinned);
        }
        const std::vector<int> source = rules::MatchRules(have, reusable, op.rules);
        std::vector<Entry> next;
        for (size_t k = 0; k < op.rules.size(); k++) {
          if (source[k] >= 0) {
            next.push_back(m.entries[static_cast<size_t>(source[k])]);
          } else {
            Entry e;
            e.spec = op.rules[k];
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

ApplyResult Apply(const ApplyRequest& in) {
  // Addresses in canonical form, so that rules compare equal to what we read back.
  ApplyRequest req = in;
  // Every rule checked, its addresses made canonical (so that rules compare equal to what we read
  // back), before anything is read or written.
  const rules::RuleLimits limits{req.dialect == Dialect::Xt ? size_t{28} : size_t{255}, req.dialect == Dialect::Native, true};
  for (size_t i = 0; i < req.ops.size(); i++) {
    Op& op = req.ops[i];
    auto validate = [&](RuleSpec& r) {
      try {
        rules::ValidateRule(FamilyOf(req.family), r, limits);
      } catch (const rules::RuleError& e) {
        throw TxError(static_cast<int>(i), "operation " + std::to_string(i) + ": " + e.what());
      }
    };
    if (op.chain.empty() || op.chain.size() > limits.maxChainName)
      throw TxError(static_cast<int>(i), "bad chain name \"" + op.chain.substr(0, 64) + "\"");
    if (op.kind == OpKind::InsertRule || op.kind == OpKind::MoveRule || op.kind == OpKind::DeleteRule) validate(op.rule);
    for (auto& r : op.rules) validate(r);
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
    if (req.plannedGenid && genid != *req.plannedGenid) throw GenerationError(*req.plannedGenid, genid);
    Attempt a = ApplyOnce(s, req, genid, &intr);
    if (a.err == 0) {
      out.messages = a.messages;
      // Our batch committed only if the generation was still `genid`, and the commit bumped it
      // by one: the token of the ruleset exactly as we left it, with no second read to race.
      out.genid = a.messages ? NextGenId(genid) : genid;
      return out;
    }
    if (a.err == kRestart) {
      if (req.plannedGenid) throw GenerationError(*req.plannedGenid, QueryGenId(s));
      continue;  // somebody wrote in between: read again, retry
    }
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

}  // namespace nft
}  // namespace edgemesh
