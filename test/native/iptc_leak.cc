// Leak check of the libiptc core (native/iptc/iptc_core.cc) over many transactions, built with
// -fsanitize=address (LeakSanitizer on) by scripts/test-asan.sh:
//
//   iptc_leak NETNS_PATH LOCKFILE COUNT
//   iptc_leak --leak-canary          (leaks 4 KiB on purpose: LeakSanitizer must report it)
//
// Runs COUNT apply transactions (IPv4 and IPv6, alternating desired states of EDGE-MESH and
// EDGE-MESH-TCP, the jumps at rule 1, moves, deletions, and transactions that fail half-way with
// the libiptc handle open), plus a read and an info after each, all inside the network namespace
// NETNS_PATH, which every call enters itself (ApplyOptions.netnsPath, Read/Info's path). Run it
// from the host's namespace, not under `ip netns exec`: it refuses to run when NETNS_PATH is its
// own namespace, so a wrong argument can never write the host's table.
//
// Two checks: LeakSanitizer at exit (memory no longer reachable), and the sanitizer allocator's
// live bytes after the warm-up vs at the end (memory still reachable but growing, e.g. a cache).
#include <sys/stat.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "iptc/iptc_core.h"
#include "common/syserror.h"

// From the sanitizer runtime (<sanitizer/allocator_interface.h>, which gcc 12 does not install).
extern "C" size_t __sanitizer_get_current_allocated_bytes();

using namespace edgemesh;
using namespace edgemesh::iptc;

namespace {

RuleSpec Rule(const std::string& dst, rules::Protocol proto, const std::string& comment, const std::string& target) {
  RuleSpec r;
  r.dst = dst;
  r.protocol = proto;
  if (!comment.empty()) r.comment = comment;
  r.target = target;
  return r;
}

RuleSpec Dnat(Family f, int port) {
  RuleSpec r = Rule("", rules::Protocol::Tcp, "edgemesh tcp proxy", "DNAT");
  r.to = rules::Endpoint{f == Family::V4 ? "169.254.96.16" : "fd00::96:16", static_cast<uint16_t>(port)};
  return r;
}

std::string Ip(Family f, int i) {
  return f == Family::V4 ? "10.10." + std::to_string(i / 250) + "." + std::to_string(i % 250 + 1) + "/32"
                         : "fd00:10::" + std::to_string(i + 1) + "/128";
}

// The desired state of round `n`: a varying number of ignored services and a varying proxy port.
std::vector<Op> Desired(Family f, int n) {
  std::vector<RuleSpec> em;
  const int ignored = n % 17;
  for (int i = 0; i < ignored; i++) em.push_back(Rule(Ip(f, (i * 7 + n) % 300), rules::Protocol::Any, "ignore ns/svc-" + std::to_string(i) + " service", "RETURN"));
  em.push_back(Rule(f == Family::V4 ? "10.10.0.0/16" : "fd00:10::/112", rules::Protocol::Tcp, "tcp service proxy", "EDGE-MESH-TCP"));
  Op tcp;
  tcp.kind = OpKind::ReplaceChain;
  tcp.chain = "EDGE-MESH-TCP";
  tcp.rules = {Dnat(f, 40000 + n % 5)};
  Op edge;
  edge.kind = OpKind::ReplaceChain;
  edge.chain = "EDGE-MESH";
  edge.rules = em;
  return {tcp, edge};
}

Op Jump(OpKind kind, const char* chain, int64_t position) {
  Op op;
  op.kind = kind;
  op.chain = chain;
  op.rule = Rule("", rules::Protocol::Any, "edgemesh root chain", "EDGE-MESH");
  op.position = position;
  return op;
}

int failures = 0;

void Expect(bool ok, const std::string& what) {
  if (ok) return;
  std::fprintf(stderr, "iptc_leak: FAILED: %s\n", what.c_str());
  failures++;
}

// One transaction of round n; returns true if it was expected to fail and did.
void Transaction(Family f, int n, const ApplyOptions& o) {
  std::vector<Op> ops = Desired(f, n);
  switch (n % 5) {
    case 0:  // the jumps at rule 1 (insert if missing, the usual first sync)
      if (n == 0) {
        ops.push_back(Jump(OpKind::InsertRule, "PREROUTING", 1));
        ops.push_back(Jump(OpKind::InsertRule, "OUTPUT", 1));
      }
      break;
    case 1: {  // a transaction that fails after the handle is open: nothing is committed
      Op bad;
      bad.kind = OpKind::DeleteRule;
      bad.chain = "EDGE-MESH";
      bad.rule = Rule(Ip(f, 999), rules::Protocol::Any, "not there", "RETURN");
      ops.push_back(bad);
      try {
        Apply(f, ops, o);
        Expect(false, "a transaction deleting a missing rule succeeded");
      } catch (const SysError& e) {
        Expect(e.code == "ETRANSACTION" && e.opIndex == 2, std::string("expected ETRANSACTION at op 2, got ") + e.code + ": " + e.what());
      }
      return;
    }
    case 2:  // move the jump (already at 1: a no-op move inside the transaction)
      ops.push_back(Jump(OpKind::MoveRule, "OUTPUT", 1));
      break;
    case 3: {  // an invalid op refused by validation before the lock
      Op bad;
      bad.kind = OpKind::ReplaceChain;
      bad.chain = std::string(40, 'X');
      ops.push_back(bad);
      try {
        Apply(f, ops, o);
        Expect(false, "a 40-character chain name was accepted");
      } catch (const SysError& e) {
        Expect(e.code == "ETRANSACTION", std::string("expected ETRANSACTION, got ") + e.code);
      }
      return;
    }
    default:  // flush and refill our chain in the same transaction
    {
      Op flush;
      flush.kind = OpKind::FlushChain;
      flush.chain = "EDGE-MESH-TCP";
      ops.insert(ops.begin(), flush);
      break;
    }
  }
  ApplyResult r = Apply(f, ops, o);
  Expect(r.attempts >= 1 && r.sizeAfter > 0, "apply returned no attempts or no table size");
}

void Verify(Family f, int n, const std::string& ns) {
  Snapshot s = Read(f, {"PREROUTING", "OUTPUT", "EDGE-MESH", "EDGE-MESH-TCP"}, ns);
  Expect(s.chains.size() == 4, "read did not return the four chains");
  if (s.chains.size() != 4) return;
  // The last committed state is that of round n (n % 5 == 1 or 3 failed: round n - 1).
  int committed = n % 5 == 1 || n % 5 == 3 ? n - 1 : n;
  std::vector<Op> want = Desired(f, committed);
  Expect(s.chains[2].rules.size() == want[1].rules.size(),
         "EDGE-MESH has " + std::to_string(s.chains[2].rules.size()) + " rules, want " + std::to_string(want[1].rules.size()));
  Expect(s.chains[3].rules.size() == 1 && s.chains[3].rules[0].spec.to && want[0].rules[0].to &&
             s.chains[3].rules[0].spec.to->port == want[0].rules[0].to->port, "EDGE-MESH-TCP is not the desired DNAT");
  for (int c = 0; c < 2; c++)
    Expect(!s.chains[c].rules.empty() && s.chains[c].rules[0].spec.target == "EDGE-MESH" &&
               s.chains[c].rules[0].spec.comment == std::string("edgemesh root chain"),
           s.chains[c].name + ": our jump is not rule 1");
  TableInfo i = Info(f, ns);
  Expect(i.present && i.size == s.info.size && i.entries == s.info.entries, "info() token differs from the read's");
}

__attribute__((noinline)) void LeakOnPurpose() {
  volatile char* p = static_cast<char*>(std::malloc(4096));
  p[0] = 1;
}

}  // namespace

int main(int argc, char** argv) {
  // The script's proof that LeakSanitizer works on this machine (ptrace allowed, detect_leaks on):
  // this leak must be reported, or a clean run of the real check would prove nothing.
  if (argc == 2 && std::string(argv[1]) == "--leak-canary") {
    for (int i = 0; i < 64; i++) LeakOnPurpose();
    return 0;
  }
  if (argc != 4) {
    std::fprintf(stderr, "usage: %s NETNS_PATH LOCKFILE COUNT\n", argv[0]);
    return 2;
  }
  const std::string ns = argv[1];
  const std::string lock = argv[2];
  const int count = std::atoi(argv[3]);
  struct stat host {}, target {};
  if (ns.empty() || stat("/proc/self/ns/net", &host) != 0 || stat(ns.c_str(), &target) != 0 ||
      (host.st_dev == target.st_dev && host.st_ino == target.st_ino)) {
    std::fprintf(stderr, "iptc_leak: %s is not a network namespace other than our own; refusing\n", ns.c_str());
    return 2;
  }
  if (count < 10 || count > 100000) {
    std::fprintf(stderr, "iptc_leak: COUNT must be in [10, 100000]\n");
    return 2;
  }
  ApplyOptions o;
  o.lockfile = lock;
  o.lockWaitMs = 5000;
  o.netnsPath = ns;
  const int warmup = count / 10;
  size_t liveAfterWarmup = 0;
  int done = 0;
  try {
    for (int n = 0; n < count; n++) {
      Family f = n % 2 ? Family::V6 : Family::V4;
      // Each family sees rounds 0, 1, 2, ... of its own (the jumps are inserted in its first rounds).
      Transaction(f, n / 2, o);
      Verify(f, n / 2, ns);
      done++;
      if (n + 1 == warmup) liveAfterWarmup = __sanitizer_get_current_allocated_bytes();
    }
  } catch (const SysError& e) {
    std::fprintf(stderr, "iptc_leak: transaction %d failed: %s: %s (%s)\n", done, e.code.c_str(), e.what(), e.syscall.c_str());
    return 1;
  }
  const size_t liveAtEnd = __sanitizer_get_current_allocated_bytes();
  const long growth = static_cast<long>(liveAtEnd) - static_cast<long>(liveAfterWarmup);
  std::printf("iptc_leak: %d transactions (+ %d reads and infos); live heap after %d: %zu bytes, at the end: %zu bytes (%+ld)\n", done, done, warmup,
              liveAfterWarmup, liveAtEnd, growth);
  // The states cycle, so the live heap at the end must be what it was after the warm-up give or take
  // allocator slack; a leak of even one small allocation per transaction would exceed this.
  Expect(growth < 16 * 1024, "the live heap grew by " + std::to_string(growth) + " bytes over " + std::to_string(count - warmup) + " transactions");
  if (failures) {
    std::fprintf(stderr, "iptc_leak: %d check(s) failed\n", failures);
    return 1;
  }
  return 0;  // LeakSanitizer runs after this and exits nonzero on a leak
}
