#!/usr/bin/env bash
# Deletes the network namespaces our tests made (em-<label>-<pid>-<random>) whose creating
# process is gone: a test run killed by a timeout or SIGKILL cannot run its own teardown. Only
# names of that shape with a dead PID are touched; processes still in such a namespace (started
# by the dead run) are ended by PID first.
set -u
for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
  [[ $ns =~ ^em-[A-Za-z0-9]*-([0-9]+)-[0-9a-f]{6}$ ]] || continue
  pid=${BASH_REMATCH[1]}
  kill -0 "$pid" 2>/dev/null && continue
  for p in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$p" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null && echo "sweep-netns: removed $ns (its test process $pid is gone)"
done
exit 0
