#!/usr/bin/env bash
# A quick look at where the proxy stands (not the project bench): iperf3 through our proxy
# (splice and copy) vs HAProxy (tcp mode, option splice-auto) vs direct (routed), in three
# namespaces client -> proxy -> server over veth, 1 and 4 streams; proxy CPU ms per GB moved.
# Everything runs in namespaces made here and deleted on exit; only processes started here are
# ended, by PID.
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-5}
EVENTS=${EVENTS:-all}   # the proxy's per-connection events: all | failures | none
IPERF=${IPERF:-1}       # 0: short connections only
ROUNDS=${ROUNDS:-2}
id=$$
C=em-bc-$id P=em-bp-$id S=em-bs-$id
pids=()
tmp=$(mktemp -d)
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.2
  for n in $C $P $S; do ip netns del $n 2>/dev/null || true; done
  rm -rf "$tmp"
}
trap cleanup EXIT
for n in $C $P $S; do ip netns add $n; ip netns exec $n ip link set lo up; done
ip -n $C link add vc$id type veth peer name vp$id netns $P
ip -n $S link add vs$id type veth peer name vq$id netns $P
ip -n $C addr add 10.0.1.2/24 dev vc$id; ip -n $C link set vc$id up; ip -n $C route add default via 10.0.1.1
ip -n $P addr add 10.0.1.1/24 dev vp$id; ip -n $P link set vp$id up
ip -n $P addr add 10.0.2.1/24 dev vq$id; ip -n $P link set vq$id up
ip -n $S addr add 10.0.2.2/24 dev vs$id; ip -n $S link set vs$id up; ip -n $S route add default via 10.0.2.1
ip netns exec $P sysctl -qw net.ipv4.ip_forward=1
# Many short connections to one endpoint: let TIME_WAIT ports be reused (for every proxy alike).
for n in $C $P; do ip netns exec $n sysctl -qw net.ipv4.tcp_tw_reuse=1; done
ip -n $P link add edgemesh0 type bridge; ip -n $P addr add 169.254.96.16/32 dev edgemesh0; ip -n $P link set edgemesh0 up
ip netns exec $P iptables-legacy-restore --noflush -w <<'R'
*nat
:EDGE-MESH - [0:0]
:EDGE-MESH-TCP - [0:0]
-A EDGE-MESH -d 10.10.0.0/16 -p tcp -m comment --comment "tcp service proxy" -j EDGE-MESH-TCP
-A EDGE-MESH-TCP -d 10.10.0.20/32 -p tcp -j DNAT --to-destination 169.254.96.16:40002
-A EDGE-MESH-TCP -p tcp -m comment --comment "edgemesh tcp proxy" -j DNAT --to-destination 169.254.96.16:40001
-I PREROUTING 1 -m comment --comment "edgemesh root chain" -j EDGE-MESH
-I OUTPUT 1 -m comment --comment "edgemesh root chain" -j EDGE-MESH
COMMIT
R
ip netns exec $S iperf3 -s -p 5201 >/dev/null 2>&1 & pids+=($!)
ip netns exec $S node test/netns/drivers/servers.mjs '[{"kind":"echo","host":"10.0.2.2","port":8080}]' >/dev/null 2>&1 & pids+=($!)
routes='[{"ip":"10.10.0.10","port":5201,"endpoints":[{"ip":"10.0.2.2","port":5201}]},{"ip":"10.10.0.20","port":5201,"endpoints":[{"ip":"10.0.2.2","port":5201}]},{"ip":"10.10.0.10","port":8080,"endpoints":[{"ip":"10.0.2.2","port":8080}]},{"ip":"10.10.0.20","port":8080,"endpoints":[{"ip":"10.0.2.2","port":8080}]}]'
ip netns exec $P node bench/proxy-run.mjs "{\"address\":\"169.254.96.16\",\"port\":40001,\"events\":\"$EVENTS\",\"routes\":$routes}" >"$tmp/ours.out" 2>"$tmp/ours.err" & ours=$!; pids+=($ours)
ip netns exec $P node bench/proxy-run.mjs "{\"address\":\"169.254.96.16\",\"port\":40002,\"mode\":\"copy\",\"events\":\"$EVENTS\",\"routes\":$routes}" >"$tmp/copy.out" 2>"$tmp/copy.err" & copy=$!; pids+=($copy)
cat >"$tmp/haproxy.cfg" <<H
global
  maxconn 4000
  nbthread 2
defaults
  mode tcp
  timeout connect 1s
  timeout client 1h
  timeout server 1h
  option splice-auto
listen l
  bind 10.0.1.1:5202
  server s 10.0.2.2:5201
listen e
  bind 10.0.1.1:8082
  server s 10.0.2.2:8080
H
ip netns exec $P haproxy -db -f "$tmp/haproxy.cfg" >/dev/null 2>&1 & hap=$!; pids+=($hap)
sleep 1.5
cpu_ms() { awk '{print ($14+$15)*10}' /proc/$1/stat; }
run() { # name target port streams pid
  local name=$1 host=$2 port=$3 par=$4 pid=${5:-}
  local c0=0 c1=0
  [ -n "$pid" ] && c0=$(cpu_ms "$pid")
  ip netns exec $C iperf3 -c "$host" -p "$port" -P "$par" -t "$SECS" -J >"$tmp/r.json" 2>/dev/null || { echo "$name P$par failed"; return; }
  [ -n "$pid" ] && c1=$(cpu_ms "$pid")
  node -e '
    const r = JSON.parse(require("fs").readFileSync(process.argv[1]));
    const bytes = r.end.sum_received.bytes, gbps = r.end.sum_received.bits_per_second / 1e9;
    const cpu = Number(process.argv[5]) - Number(process.argv[4]);
    console.log([process.argv[2], "P" + process.argv[3], gbps.toFixed(2) + " Gbit/s", process.argv[6] ? (cpu / (bytes / 1e9)).toFixed(0) + " ms CPU/GB" : "-"].join("\t"));
  ' "$tmp/r.json" "$name" "$par" "$c0" "$c1" "$pid"
}
for round in $(seq 1 "$ROUNDS"); do
  [ "$IPERF" = 1 ] || break
  for par in 1 4; do
    run direct 10.0.2.2 5201 $par
    run edgemesh-splice 10.10.0.10 5201 $par $ours
    run haproxy-splice 10.0.1.1 5202 $par $hap
    run edgemesh-copy 10.10.0.20 5201 $par $copy
  done
done
# Short connections (connect, 100 B echo, close), concurrency 16, with a Node client (which is
# itself the bottleneck here: compare the proxies' CPU per connection more than the rates).
short() { # name host port pid
  local name=$1 host=$2 port=$3 pid=${4:-} c0=0 c1=0
  [ -n "$pid" ] && c0=$(cpu_ms "$pid")
  local out; out=$(ip netns exec $C node test/netns/drivers/client.mjs echo "{\"host\":\"$host\",\"port\":$port,\"count\":${SHORT:-5000},\"concurrency\":16,\"size\":100,\"timeoutMs\":60000}")
  [ -n "$pid" ] && c1=$(cpu_ms "$pid")
  node -e '
    const r = JSON.parse(process.argv[1]); const n = Number(process.argv[5]);
    const cpu = Number(process.argv[4]) - Number(process.argv[3]);
    console.log([process.argv[2], "c16", r.perSec + " conn/s", "p99 " + r.p99ms.toFixed(2) + " ms", r.failed + " failed", process.argv[6] ? (cpu * 1000 / n).toFixed(0) + " us CPU/conn" : "-"].join("\t"));
  ' "$out" "$name" "$c0" "$c1" "${SHORT:-5000}" "$pid"
}
for round in $(seq 1 "$ROUNDS"); do
  short direct 10.0.2.2 8080
  short edgemesh-splice 10.10.0.10 8080 $ours
  short haproxy 10.0.1.1 8082 $hap
  short edgemesh-copy 10.10.0.20 8080 $copy
done
kill -TERM $ours $copy; wait $ours $copy 2>/dev/null || true
echo "edgemesh splice stats: $(cat "$tmp/ours.err")"
