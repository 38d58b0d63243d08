#!/usr/bin/env bash
# hitbench.sh: a quick, bounded cache-hit benchmark for profiling work (not the
# `make bench` harness). One throwaway network namespace; each server in turn
# (A B A B ...) pinned to CPU 0 serves the same Corefile, dnsperf pinned to CPU 1
# asks it cache hits. Prints per run: qps, server CPU µs per answered query,
# RSS idle and after the load, time to the first answer.
#
#   build/perf/hitbench.sh [-r ROUNDS] [-l SECONDS] [-q OUTSTANDING] NAME=BINARY[:COREFILE] ...
#
# GLIBC=SECONDS replaces dnsperf with the users' experiment: 200 glibc
# lookups at once (bin/testdns -resolver system) for SECONDS, and counts the
# server's UDP receive-buffer drops (UdpRcvbufErrors).
# COREFILE defaults to Corefile.example with nodelocal's lines dropped when the
# binary is not ours (its -plugins lacks nodelocal); a BINARY named unbound
# gets `-d -c COREFILE` (an unbound.conf). STOCK=BINARY sets the stock CoreDNS
# that serves the upstream zone; SERVER_CPUS and SERVER_GOMAXPROCS the server's
# CPUs (default 0) and GOMAXPROCS (default 1). Root only.
set -euo pipefail
ROUNDS=3 LEN=10 OUT=100 NAMES=${NAMES:-500} PPROF=${PPROF:-}
while getopts r:l:q: o; do case $o in r) ROUNDS=$OPTARG;; l) LEN=$OPTARG;; q) OUT=$OPTARG;; *) exit 2;; esac; done
shift $((OPTIND-1))
[ $# -ge 1 ] || { sed -n 2,17p "$0"; exit 2; }
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
STOCK=${STOCK:-/root/.cache/nodelocaldns/stock-coredns-v1.15.0/coredns}
NS=perf$$ W=$(mktemp -d /tmp/hitbench.XXXX)
UP=""
cleanup() {
	[ -n "$UP" ] && kill "$UP" 2>/dev/null && wait "$UP" 2>/dev/null || true
	ip netns del "$NS" 2>/dev/null || true
	rm -rf "/etc/netns/$NS"
	[ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
ip netns add "$NS"
nsx() { ip netns exec "$NS" "$@"; }
nsx ip link set lo up
nsx ip addr add 198.18.0.11/32 dev lo   # upstream
# Every packet skips conntrack, so no server pays for it and the servers are alike.
nsx iptables -t raw -A PREROUTING -j NOTRACK
nsx iptables -t raw -A OUTPUT -j NOTRACK
mkdir -p "/etc/netns/$NS"
printf 'nameserver 169.254.20.10\nsearch default.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n' >"/etc/netns/$NS/resolv.conf"

cat > "$W/upstream" <<'UPC'
.:53 {
    bind 198.18.0.11
    template IN A {
        answer "{{ .Name }} 3600 IN A 198.18.5.5"
    }
    template IN AAAA {
        answer "{{ .Name }} 3600 IN AAAA 2001:2::5"
    }
}
UPC
ip netns exec "$NS" taskset -c 1 "$STOCK" -conf "$W/upstream" >"$W/upstream.log" 2>&1 &
UP=$!
for i in $(seq "$NAMES"); do
	echo "svc$i.ns$((i % 7)).svc.cluster.local A"
	echo "svc$i.ns$((i % 7)).svc.cluster.local AAAA"
done >"$W/queries"

ticks() { awk '{print $14+$15, $14}' "/proc/$1/stat"; }
rcvbuferrs() { nsx awk '/^Udp:/{n++; if (n==1) for (i=1;i<=NF;i++) h[i]=$i; else for (i=1;i<=NF;i++) if (h[i]=="RcvbufErrors") print $i}' /proc/net/snmp; }
rss() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
HZ=$(getconf CLK_TCK)

run() { # name binary corefile
	local name=$1 bin=$2 conf=$3 p1 p2 pid t0 t1 c0 c1 u0 u1 first rss0 rss1 out q qps
	t0=$(date +%s.%N)
	local args=(-conf "$conf")
	case $bin in *unbound) args=(-d -c "$conf");; esac
	ip netns exec "$NS" env KUBE_DNS_UPSTREAM_SERVICE_HOST=198.18.0.11 GOMAXPROCS=${SERVER_GOMAXPROCS:-1} taskset -c "${SERVER_CPUS:-0}" "$bin" "${args[@]}" >"$W/$name.log" 2>&1 &
	pid=$!
	for _ in $(seq 500); do
		if nsx dig +tries=1 +time=1 @169.254.20.10 first.cluster.local A >"$W/$name.dig" 2>&1 && grep -q 198.18.5.5 "$W/$name.dig"; then break; fi
		echo "$(date +%T.%N) $(grep -o 'status: [A-Z]*\|timed out\|refused' "$W/$name.dig" | head -1)" >>"$W/$name.firsttries"
		sleep 0.01
	done
	t1=$(date +%s.%N)
	first=$(echo "$t1 - $t0" | bc)
	if [ "$(echo "$first > 1" | bc)" = 1 ]; then
		echo "$name: slow first answer; tries:" >&2; { sort "$W/$name.firsttries" 2>/dev/null || true; } | uniq -c -f1 | head -5 >&2
	fi
	rm -f "$W/$name.firsttries"
	sleep 2
	rss0=$(rss "$pid")
	# warm the cache
	nsx taskset -c 1 dnsperf -s 169.254.20.10 -d "$W/queries" -n 1 -q 20 >/dev/null 2>&1
	if [ -n "${GLIBC:-}" ]; then
		local d0 d1
		d0=$(rcvbuferrs)
		out=$(nsx taskset -c 1 "$ROOT/bin/testdns" -resolver system -c 200 -d "$GLIBC" -q -host kubernetes.default 2>&1)
		d1=$(rcvbuferrs)
		printf "%-10s glibc 200 workers: %s | %s | %s | rcvbuf drops %d\n" "$name" \
			"$(echo "$out" | grep '^requests')" "$(echo "$out" | grep '^latency' | sed 's/.*max/max/')" "$(echo "$out" | grep '^>=')" "$((d1 - d0))"
		kill -INT "$pid"; wait "$pid" 2>/dev/null || true
		return
	fi
	read -r c0 u0 < <(ticks "$pid")
	if [ -n "$PPROF" ]; then
		# CPU profile (Go) and perf samples (kernel and Go) of the middle of the run
		(sleep 1; nsx curl -s -o "$PPROF.$name.cpu" "http://127.0.0.1:6053/debug/pprof/profile?seconds=$((LEN-3))") &
		p1=$!
		(sleep 1; perf record -q -g -o "$PPROF.$name.perf" -p "$pid" -- sleep $((LEN-3)) >/dev/null 2>&1) &
		p2=$!
	fi
	out=$(nsx taskset -c 1 dnsperf -s 169.254.20.10 -d "$W/queries" -l "$LEN" -q "$OUT" 2>&1)
	read -r c1 u1 < <(ticks "$pid")
	rss1=$(rss "$pid")
	if [ -n "$PPROF" ]; then wait "$p1" "$p2"; nsx curl -s -o "$PPROF.$name.heap" "http://127.0.0.1:6053/debug/pprof/heap" || true; fi
	q=$(echo "$out" | awk '/Queries completed:/{print $3}')
	qps=$(echo "$out" | awk '/Queries per second:/{printf "%.0f", $4}')
	lost=$(echo "$out" | awk '/Queries lost:/{print $3}')
	printf "%-10s qps %7s  cpu %5.1f us/q (user %4.1f)  lost %6s  rss idle %6.1f MB  rss load %6.1f MB  first %.2fs\n" \
		"$name" "$qps" "$(echo "($c1 - $c0) * 1000000 / $HZ / $q" | bc -l)" "$(echo "($u1 - $u0) * 1000000 / $HZ / $q" | bc -l)" "$lost" \
		"$(echo "$rss0/1024" | bc -l)" "$(echo "$rss1/1024" | bc -l)" "$first"
	kill -INT "$pid"; wait "$pid" 2>/dev/null || true
}

declare -a N B C
for spec in "$@"; do
	name=${spec%%=*} rest=${spec#*=}
	bin=${rest%%:*} conf=""
	[ "$rest" != "$bin" ] && conf=${rest#*:}
	if [ -z "$conf" ]; then
		conf=$W/$name.Corefile
		if "$bin" -plugins | grep -qx '  nodelocal\|nodelocal'; then
			cp "$ROOT/Corefile.example" "$conf"
		else
			# stock CoreDNS: the same Corefile without nodelocal; the addresses on lo
			awk '/^ *nodelocal *\{/{skip=1; next} skip && /^ *\}/{skip=0; next} skip{next} /^ *nodelocal/{next} {print}' "$ROOT/Corefile.example" >"$conf"
		fi
		# the node's own resolvers: the namespace's resolv.conf is the pods' one
		sed -i 's|forward \. /etc/resolv.conf|forward . 198.18.0.11|' "$conf"
	fi
	if [ -n "$PPROF" ]; then sed -i '0,/^ *errors/s//    pprof 127.0.0.1:6053\n&/' "$conf"; fi
	N+=("$name") B+=("$bin") C+=("$conf")
done
for r in $(seq "$ROUNDS"); do
	echo "round $r"
	for i in "${!N[@]}"; do
		if ! "${B[$i]}" -plugins | grep -q nodelocal; then
			nsx ip addr add 169.254.20.10/32 dev lo; nsx ip addr add 198.18.0.10/32 dev lo
		fi
		run "${N[$i]}" "${B[$i]}" "${C[$i]}"
		nsx ip addr del 169.254.20.10/32 dev lo 2>/dev/null || true
		nsx ip addr del 198.18.0.10/32 dev lo 2>/dev/null || true
	done
done
