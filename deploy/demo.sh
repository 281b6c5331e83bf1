#!/usr/bin/env bash
# make demo: one zring node on loopback addresses, an echo/sink service behind
# a service VIP, and 1 GiB pushed through zring's SOCKS5 listener from a local
# workload's address. Prints throughput, the metrics that moved and what
# `zring ctl` shows, then stops everything.
#
#   deploy/demo.sh [BUILD_DIR]        (default: build)
#   DEMO_BYTES=N                      bytes to push (default 1 GiB)
#
# Addresses (all on lo; Linux routes 127.0.0.0/8 there without set-up):
#   node-a listeners 127.0.0.2 (socks5 :15080, admin :15000, metrics :15020, readiness :15021)
#   client workload  127.0.1.2 (node-a, local)
#   echo service     VIP 127.10.0.1:80 -> workload 127.0.1.3:8080 (node-b, protocol TCP)
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/.." && pwd)
builddir=${1:-build}
case "$builddir" in /*) ;; *) builddir="$top/$builddir" ;; esac
bytes=${DEMO_BYTES:-1073741824}
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

node_ip=127.0.0.2
admin=$node_ip:15000
metrics_url=http://$node_ip:15020/metrics
ready_url=http://$node_ip:15021/healthz/ready

tmp=$(mktemp -d /tmp/zring-demo.XXXXXX)
pids=()
zring_pid=""

cleanup() {
	local rc=$?
	trap - EXIT INT TERM
	if [ -n "$zring_pid" ] && kill -0 "$zring_pid" 2>/dev/null; then
		kill -TERM "$zring_pid" 2>/dev/null || true
		for _ in $(seq 50); do
			kill -0 "$zring_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL "$zring_pid" 2>/dev/null || true
	fi
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	wait 2>/dev/null || true
	if [ "$rc" -ne 0 ] && [ -s "$tmp/zring.log" ]; then
		echo "--- last lines of zring's log ($tmp/zring.log kept):" >&2
		tail -n 20 "$tmp/zring.log" >&2
	else
		rm -rf "$tmp"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

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
    workloadIps: ["127.0.1.2"]
    protocol: TCP
    node: node-a
    canonicalName: client
    canonicalRevision: v1
  - uid: cluster1//v1/Pod/default/echo
    name: echo
    namespace: default
    serviceAccount: echo
    workloadIps: ["127.0.1.3"]
    protocol: TCP
    node: node-b
    canonicalName: echo
    canonicalRevision: v1
    services: {"default/echo.default.svc.cluster.local": {80: 8080}}
  services:
  - name: echo
    namespace: default
    hostname: echo.default.svc.cluster.local
    vips: ["/127.10.0.1"]
    ports: {80: 8080}
EOF

"$py" "$tools" free $node_ip:15001 $node_ip:15006 $node_ip:15080 $admin $node_ip:15020 $node_ip:15021 \
	127.0.1.3:8080

echo "== config: $tmp/zring.yaml"
"$zring" check-config "$tmp/zring.yaml"

echo "== echo/sink server on 127.0.1.3:8080"
"$py" "$tools" serve 127.0.1.3 8080 &
pids+=($!)
"$py" "$tools" wait-listen 127.0.1.3:8080 10 "${pids[-1]}"

echo "== starting $zring --config $tmp/zring.yaml"
"$zring" --config "$tmp/zring.yaml" 2>"$tmp/zring.log" &
zring_pid=$!
"$py" "$tools" wait-ready "$ready_url" 20 "$zring_pid"
echo "ready: $ready_url"

"$py" "$tools" scrape "$metrics_url" "$tmp/metrics.before"

echo "== pushing $bytes bytes: 127.0.1.2 -> socks5 $node_ip:15080 -> echo.default VIP 127.10.0.1:80"
"$py" "$tools" push --socks "$node_ip:15080" --src 127.0.1.2 --dst 127.10.0.1:80 --bytes "$bytes"

sleep 0.2 # connection close is accounted on the worker right after the relay ends
"$py" "$tools" scrape "$metrics_url" "$tmp/metrics.after"
echo "== metrics that moved ($metrics_url)"
"$py" "$tools" moved "$tmp/metrics.before" "$tmp/metrics.after"

echo "== zring ctl workloads --admin $admin"
"$zring" ctl workloads --admin "$admin"
echo "== zring ctl services --admin $admin"
"$zring" ctl services --admin "$admin"

echo "== stopping zring (SIGTERM)"
kill -TERM "$zring_pid"
rc=0
wait "$zring_pid" || rc=$?
zring_pid=""
if [ "$rc" -ne 0 ]; then
	echo "demo: zring exited with status $rc after SIGTERM (expected 0)" >&2
	exit 1
fi
echo "zring stopped cleanly (exit 0)"
