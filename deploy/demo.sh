#!/usr/bin/env bash
# make demo, in two parts.
#
# 1. Plain: one zring node on loopback addresses, an echo/sink service behind
#    a service VIP, and 1 GiB pushed through zring's SOCKS5 listener from a
#    local workload's address (protocol TCP: one plaintext hop).
# 2. HBONE: a throw-away CA and workload certificates (tests/certs/gen.sh),
#    two zring nodes; a client workload on node A pushes 1 GiB through A's
#    SOCKS5 listener to a service whose endpoint is an HBONE workload on node
#    B, so it crosses A -> mTLS HTTP/2 CONNECT -> B. Shows the metrics with
#    mutual_tls and both SPIFFE identities from both nodes, zring_hbone_*, and
#    `zring ctl certs`.
# Each part prints throughput, the metrics and what `zring ctl` shows, then
# stops its nodes (SIGTERM, expecting exit 0). Everything is removed on exit.
#
#   deploy/demo.sh [BUILD_DIR]        (default: build)
#   DEMO_BYTES=N                      bytes to push in each part (default 1 GiB)
#   DEMO_PARTS="plain hbone"          which parts to run
#
# Addresses (all on lo; Linux routes 127.0.0.0/8 there without set-up; none is
# used by the test suites, which use 127.0.0.2/.3/.42/.43, 127.0.1.x, 127.0.2.x):
#   plain: node-a listeners 127.0.0.51 (socks5 :15080, admin :15000, metrics :15020, readiness :15021)
#          client workload  127.0.5.2 (node-a, local)
#          echo service     VIP 127.10.5.1:80 -> workload 127.0.5.3:8080 (node-b, protocol TCP)
#   hbone: node A 127.0.0.52 (socks5 :15080, hbone :15008, admin, metrics, readiness)
#          node B 127.0.0.53 (hbone :15008, admin, metrics, readiness)
#          client workload 127.0.6.2 (node A, sa client), server workload 127.0.7.2 (node B,
#          sa server, protocol HBONE; B also listens on 127.0.7.2:15008)
#          echo-mtls service VIP 127.10.6.1:80 -> 127.0.7.2:8080
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
builddir=${1:-build}
case "$builddir" in /*) ;; *) builddir="$top/$builddir" ;; esac
bytes=${DEMO_BYTES:-1073741824}
parts=${DEMO_PARTS:-plain hbone}
py=/usr/bin/python3
tools="$here/demo_tools.py"

zring=""
for cand in "$builddir/zring" "$builddir/core/zring"; do
	if [ -x "$cand" ]; then
		zring=$cand
		break
	fi
done
if [ -z "$zring" ]; then
	echo "demo: no zring binary in $builddir (build it with 'make build')" >&2
	exit 1
fi

tmp=$(mktemp -d /tmp/zring-demo.XXXXXX)
pids=()      # helpers (echo servers)
zpids=()     # zring nodes still running

# stop_zring PID: SIGTERM, up to 5 s, then SIGKILL.
stop_zring() {
	local pid=$1
	kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null || true
	for _ in $(seq 50); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
	kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	for pid in "${zpids[@]}"; do
		stop_zring "$pid"
	done
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 130 ]; then
		for log in "$tmp"/*.log "$tmp"/hbone/*.log; do
			[ -s "$log" ] || continue
			echo "--- last lines of $log ($tmp kept):" >&2
			tail -n 20 "$log" >&2
		done
	else
		rm -rf "$tmp"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# drain PID NAME: SIGTERM and expect exit 0.
drain() {
	local pid=$1 name=$2 rc=0
	kill -TERM "$pid"
	wait "$pid" || rc=$?
	local keep=()
	for p in "${zpids[@]}"; do
		[ "$p" = "$pid" ] || keep+=("$p")
	done
	zpids=("${keep[@]}")
	if [ "$rc" -ne 0 ]; then
		echo "demo: $name exited with status $rc after SIGTERM (expected 0)" >&2
		exit 1
	fi
	echo "$name stopped cleanly (exit 0)"
}

# ---- part 1: plain, one hop ------------------------------------------------
plain_part() {
node_ip=127.0.0.51
admin=$node_ip:15000
metrics_url=http://$node_ip:15020/metrics
ready_url=http://$node_ip:15021/healthz/ready

cat >"$tmp/zring.yaml" <<EOF
node: node-a
workers: 2
ioBackend: auto
drainTimeout: 3s
logLevel: info
listeners:
  outbound: $node_ip:15001
  inboundPlaintext: $node_ip:15006
  hbone: null
  socks5: $node_ip:15080
  admin: $admin
  metrics: $node_ip:15020
  readiness: $node_ip:15021
localXds:
  workloads:
  - uid: cluster1//v1/Pod/default/client
    name: client
    namespace: default
    serviceAccount: client
    workloadIps: ["127.0.5.2"]
    protocol: TCP
    node: node-a
    canonicalName: client
    canonicalRevision: v1
  - uid: cluster1//v1/Pod/default/echo
    name: echo
    namespace: default
    serviceAccount: echo
    workloadIps: ["127.0.5.3"]
    protocol: TCP
    node: node-b
    canonicalName: echo
    canonicalRevision: v1
    services: {"default/echo.default.svc.cluster.local": {80: 8080}}
  services:
  - name: echo
    namespace: default
    hostname: echo.default.svc.cluster.local
    vips: ["/127.10.5.1"]
    ports: {80: 8080}
EOF

"$py" "$tools" free $node_ip:15001 $node_ip:15006 $node_ip:15080 $admin $node_ip:15020 $node_ip:15021 \
	127.0.5.3:8080

echo "===== part 1: plain (one zring hop, protocol TCP)"
echo "== config: $tmp/zring.yaml"
"$zring" check-config "$tmp/zring.yaml"

echo "== echo/sink server on 127.0.5.3:8080"
"$py" "$tools" serve 127.0.5.3 8080 &
pids+=($!)
"$py" "$tools" wait-listen 127.0.5.3:8080 10 "${pids[-1]}"

echo "== starting $zring --config $tmp/zring.yaml"
"$zring" --config "$tmp/zring.yaml" 2>"$tmp/zring.log" &
zring_pid=$!
zpids+=("$zring_pid")
"$py" "$tools" wait-ready "$ready_url" 20 "$zring_pid"
echo "ready: $ready_url"

"$py" "$tools" scrape "$metrics_url" "$tmp/metrics.before"

echo "== pushing $bytes bytes: 127.0.5.2 -> socks5 $node_ip:15080 -> echo.default VIP 127.10.5.1:80"
"$py" "$tools" push --socks "$node_ip:15080" --src 127.0.5.2 --dst 127.10.5.1:80 --bytes "$bytes"

sleep 0.2 # connection close is accounted on the worker right after the relay ends
"$py" "$tools" scrape "$metrics_url" "$tmp/metrics.after"
echo "== metrics that moved ($metrics_url)"
"$py" "$tools" moved "$tmp/metrics.before" "$tmp/metrics.after"

echo "== zring ctl workloads --admin $admin"
"$zring" ctl workloads --admin "$admin"
echo "== zring ctl services --admin $admin"
"$zring" ctl services --admin "$admin"

echo "== stopping zring (SIGTERM)"
drain "$zring_pid" zring
}

# ---- part 2: HBONE, two nodes, mutual TLS ------------------------------------
hbone_part() {
local a_ip=127.0.0.52 b_ip=127.0.0.53 client_ip=127.0.6.2 server_ip=127.0.7.2 vip=127.10.6.1
local d="$tmp/hbone"
mkdir -p "$d"

echo
echo "===== part 2: HBONE (node A -> mTLS HTTP/2 CONNECT -> node B)"
"$py" "$tools" free $a_ip:15080 $a_ip:15008 $a_ip:15000 $a_ip:15020 $a_ip:15021 $client_ip:15008 \
	$b_ip:15008 $b_ip:15000 $b_ip:15020 $b_ip:15021 $server_ip:15008 $server_ip:8080

echo "== throw-away CA and workload certificates: tests/certs/gen.sh $d/certs"
bash "$top/tests/certs/gen.sh" "$d/certs" >/dev/null 2>"$d/gen.log"
for sa in client server; do
	printf '  %s.pem: ' "$sa"
	openssl x509 -in "$d/certs/$sa.pem" -noout -ext subjectAltName 2>/dev/null | tail -n +2 | sed 's/^ *//'
done

cat >"$d/state.yaml" <<STATE
workloads:
- uid: cluster1//v1/Pod/default/client
  name: client
  namespace: default
  serviceAccount: client
  workloadIps: ["$client_ip"]
  protocol: HBONE
  node: node-a
  canonicalName: client
  canonicalRevision: v1
- uid: cluster1//v1/Pod/default/server
  name: server
  namespace: default
  serviceAccount: server
  workloadIps: ["$server_ip"]
  protocol: HBONE
  node: node-b
  canonicalName: server
  canonicalRevision: v1
  services: {"default/echo-mtls.default.svc.cluster.local": {80: 8080}}
services:
- name: echo-mtls
  namespace: default
  hostname: echo-mtls.default.svc.cluster.local
  vips: ["/$vip"]
  ports: {80: 8080}
  subjectAltNames: ["spiffe://cluster.local/ns/default/sa/server"]
policies:
- name: allow-client
  namespace: default
  scope: Namespace
  action: Allow
  rules: [[[{principals: ["cluster.local/ns/default/sa/client"]}]]]
STATE

# node NAME IP SA SOCKS5
node_cfg() {
	cat >"$d/$1.yaml" <<NODE
node: $1
workers: 1
drainTimeout: 3s
logLevel: info
listeners:
  outbound: null
  inboundPlaintext: null
  hbone: $2:15008
  socks5: $4
  admin: $2:15000
  metrics: $2:15020
  readiness: $2:15021
identity:
  caCertificates: certs/root-cert.pem
  certificates:
  - identity: spiffe://cluster.local/ns/default/sa/$3
    cert: certs/$3.pem
    key: certs/$3.key
localXdsPath: state.yaml
NODE
	"$zring" check-config "$d/$1.yaml"
}
echo "== configs: $d/node-a.yaml, $d/node-b.yaml, shared local state $d/state.yaml"
node_cfg node-a $a_ip client $a_ip:15080
node_cfg node-b $b_ip server null

echo "== echo/sink server (workload 'server') on $server_ip:8080"
"$py" "$tools" serve $server_ip 8080 &
pids+=($!)
"$py" "$tools" wait-listen $server_ip:8080 10 "${pids[-1]}"

echo "== starting node A ($a_ip) and node B ($b_ip)"
"$zring" --config "$d/node-a.yaml" 2>"$d/node-a.log" &
local a_pid=$!
zpids+=("$a_pid")
"$zring" --config "$d/node-b.yaml" 2>"$d/node-b.log" &
local b_pid=$!
zpids+=("$b_pid")
"$py" "$tools" wait-ready "http://$a_ip:15021/healthz/ready" 20 "$a_pid"
"$py" "$tools" wait-ready "http://$b_ip:15021/healthz/ready" 20 "$b_pid"
echo "ready: both nodes"

echo "== pushing $bytes bytes: $client_ip -> socks5 $a_ip:15080 -> node A -> HBONE mTLS $server_ip:15008 -> node B -> echo-mtls VIP $vip:80"
"$py" "$tools" push --socks "$a_ip:15080" --src $client_ip --dst $vip:80 --bytes "$bytes"

sleep 0.3 # connection close is accounted on the worker right after the relay ends
"$py" "$tools" scrape "http://$a_ip:15020/metrics" "$d/metrics.a"
"$py" "$tools" scrape "http://$b_ip:15020/metrics" "$d/metrics.b"
echo "== node A (source side) http://$a_ip:15020/metrics: mutual TLS connections and HBONE"
"$py" "$tools" mtls "$d/metrics.a"
echo "== node B (destination side) http://$b_ip:15020/metrics: mutual TLS connections and HBONE"
"$py" "$tools" mtls "$d/metrics.b"

echo "== zring ctl certs --admin $a_ip:15000 (node A)"
"$zring" ctl certs --admin $a_ip:15000
echo "== zring ctl certs --admin $b_ip:15000 (node B)"
"$zring" ctl certs --admin $b_ip:15000

echo "== stopping both nodes (SIGTERM)"
drain "$a_pid" "node A"
drain "$b_pid" "node B"
}

for part in $parts; do
	case "$part" in
	plain) plain_part ;;
	hbone) hbone_part ;;
	*)
		echo "demo: unknown part '$part' in DEMO_PARTS (plain, hbone)" >&2
		exit 1
		;;
	esac
done
