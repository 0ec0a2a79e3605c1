// How every option naming a network namespace is read (backends, detection, test namespaces).
// Pure and import-free: the backends need it, and src/dev/netns.ts (which spawns) is not theirs.

/** A bare namespace name means /run/netns/NAME (where `ip netns add` puts it); a path (/proc/PID/ns/net) is used as is; empty or unset: the process's own namespace (''). */
export function netnsPath(netns: string | undefined): string {
  if (!netns) return '';
  return netns.includes('/') ? netns : `/run/netns/${netns}`;
}
