// The iptables-legacy backend core: writes the nat table of IPv4 (libip4tc) and IPv6 (libip6tc)
// through libiptc, in one atomic commit per transaction, under the xtables lock; reads it either
// the same way (inside a transaction) or lock-free from one IPT_SO_GET_ENTRIES that it decodes
// itself (Read: periodic resyncs, watchdog checks, status).
// Plain C++17, no V8: the binding (iptc_binding.cc) turns JS values into the shared rule model
// (rules/rule_model.h).
//
// The logic is written once over a small traits struct per family (see iptc_core.cc).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "rules/rule_model.h"

namespace edgemesh {
namespace iptc {

using rules::Family;
using rules::LiveRule;
using rules::Op;
using rules::OpKind;
using rules::RuleSpec;

// Limit of the kernel ABI (XT_EXTENSION_MAXNAMELEN 29, NUL included).
constexpr size_t kMaxChainName = 28;

// The lock file iptables uses: $XTABLES_LOCKFILE or /run/xtables.lock when `configured` is empty.
std::string LockFilePath(const std::string& configured);

struct ApplyOptions {
  std::string lockfile;  // empty: $XTABLES_LOCKFILE or /run/xtables.lock
  int64_t lockWaitMs = 5000;
  int64_t lockIntervalMs = 20;
  int maxAttempts = 5;
  std::string netnsPath;  // empty: the process's own namespace
};

struct ApplyResult {
  int attempts = 0;
  double lockWaitMs = 0;
  double durationMs = 0;
  uint64_t sizeAfter = 0;     // IPT_SO_GET_INFO right after our commit, still under the lock:
  uint64_t entriesAfter = 0;  // the change token of the table exactly as we left it
  std::string builtinLayoutAfter;
  std::string headDigestAfter;
};

struct TableInfo {
  uint64_t size = 0;
  uint64_t entries = 0;
  bool present = false;  // false: the nat table does not exist in the namespace (and was not created)
  // Offsets of the built-in chains' first rules and policies ("hook:entry-underflow,..."). libiptc
  // writes built-in chains first, so a write that only touches user chains (kube-proxy's usual
  // sync) leaves it unchanged, and a rule inserted into PREROUTING or OUTPUT changes it.
  std::string builtinLayout;
  // A digest (16 hex digits) of the built-in chains' entries, counters left out. A rewrite that
  // keeps the table's size and entry count (a jump deleted and re-inserted elsewhere in
  // PREROUTING) changes it. Info reads only the head of the table to compute it (see Info).
  std::string headDigest;
  // CPU time (user + system, this thread) the digest took, in ms: the caller's cost model.
  double digestCpuMs = 0;
};

struct ChainRules {
  std::string name;
  std::vector<LiveRule> rules;
};

struct Snapshot {
  std::vector<ChainRules> chains;  // the requested chains that exist, in request order
  TableInfo info;
};

// Cheap change detection. Never creates the table. IPT_SO_GET_INFO gives size, entry count and
// the built-in chains' offsets; the digest of the built-in chains comes from one
// IPT_SO_GET_ENTRIES into a buffer of which only the head (up to the last built-in policy) is
// mapped: the kernel copies entries in order and stops with EFAULT at the first unmapped page,
// so the cost does not grow with the user chains' size (they follow the built-in chains in
// what libiptc writes; a table laid out otherwise costs more, never gives a wrong digest).
// `digest` false: IPT_SO_GET_INFO alone (headDigest stays empty).
TableInfo Info(Family family, const std::string& netnsPath, bool digest = true);

// Notices every open and close of the xtables lock file: every iptables-legacy command and
// iptables-restore opens it (and a writer holds it across its commit), so a quiet lock file means
// no cooperating writer touched any legacy table. A non-blocking inotify descriptor, drained by
// Drain() (no thread). The file is created (0600, as iptables does) when missing.
class LockWatch {
 public:
  explicit LockWatch(const std::string& path);
  ~LockWatch();
  LockWatch(const LockWatch&) = delete;
  LockWatch& operator=(const LockWatch&) = delete;
  // Events since the last call (at least 1 when the file was replaced or the queue overflowed);
  // never blocks.
  uint64_t Drain();

 private:
  void Arm();
  std::string path_;
  int fd_ = -1;
  int wd_ = -1;
};

// Reads the named chains without libiptc and without the lock: one IPT_SO_GET_ENTRIES (a consistent
// table: the kernel replaces tables atomically), only the named chains decoded. When the nat table
// does not exist, returns no chains (and does not create it).
Snapshot Read(Family family, const std::vector<std::string>& chains, const std::string& netnsPath);

// Validates every op, takes the xtables lock, applies all ops to one handle and commits once.
// Failures: SysError code ETRANSACTION (with opIndex) for a bad op, ELOCKTIMEOUT for the lock,
// the errno name of iptc_init/iptc_commit otherwise.
ApplyResult Apply(Family family, std::vector<Op> ops, const ApplyOptions& options);

// A transaction in two steps, for a caller that plans between reading and writing: Begin takes
// the xtables lock and reads the table once (returning the named chains); CommitSession applies
// the ops to that same read and commits (EAGAIN: re-read and re-apply, as Apply), or
// AbortSession lets go. Either one ends the session and releases the lock.
struct BeginResult {
  uint64_t session = 0;
  Snapshot snapshot;
};
BeginResult Begin(Family family, const std::vector<std::string>& chains, const ApplyOptions& options);
ApplyResult CommitSession(uint64_t session, std::vector<Op> ops);
void AbortSession(uint64_t session);

}  // namespace iptc
}  // namespace edgemesh
