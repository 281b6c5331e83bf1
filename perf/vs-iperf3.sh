#!/usr/bin/env bash
# Is zring-bench's generator at least as fast as iperf3? One connection on
# loopback, alternating runs (so both see the same machine), N rounds:
#   zring-bench stream -> zring-bench sink   versus   iperf3 -c -> iperf3 -s
# Prints each round's Gbit/s and the ratio of the medians.
#   perf/vs-iperf3.sh [BUILD_DIR] [ROUNDS] [SECONDS] [SEND_SIZE]
set -euo pipefail
build=${1:-build}
rounds=${2:-3}
secs=${3:-5}
size=${4:-128K} # bytes per send, the same for both (iperf3's default)
bench="$build/zring-bench"
addr=127.0.61.1
command -v iperf3 >/dev/null || { echo "vs-iperf3: iperf3 is not installed" >&2; exit 2; }
[ -x "$bench" ] || { echo "vs-iperf3: $bench not built" >&2; exit 2; }

tmp=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
"$bench" sink --listen "$addr:9100" >"$tmp/sink.log" 2>&1 & pids+=($!)
iperf3 -s -B "$addr" -p 9101 >"$tmp/iperf3-s.log" 2>&1 & pids+=($!)
sleep 0.5

z=() i=()
for r in $(seq "$rounds"); do
	"$bench" stream --target "$addr:9100" --duration "${secs}s" --warmup 1s --size "$size" --quiet --json "$tmp/z.json" >/dev/null
	z+=("$(python3 -c 'import json,sys; print("%.2f" % json.load(open(sys.argv[1]))["gbps"])' "$tmp/z.json")")
	iperf3 -c "$addr" -p 9101 -t "$secs" -O 1 -l "$size" -J >"$tmp/i.json"
	i+=("$(python3 -c 'import json,sys; print("%.2f" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))' "$tmp/i.json")")
	echo "round $r: zring-bench stream ${z[-1]} Gbit/s, iperf3 ${i[-1]} Gbit/s"
done
python3 - "${z[*]}" "${i[*]}" <<'PY'
import statistics, sys
z = [float(x) for x in sys.argv[1].split()]
i = [float(x) for x in sys.argv[2].split()]
mz, mi = statistics.median(z), statistics.median(i)
print(f"median: zring-bench {mz:.2f} Gbit/s, iperf3 {mi:.2f} Gbit/s, ratio {mz / mi:.2f}")
PY
