#!/usr/bin/env bash
# Builds a libFuzzer target with clang (-fsanitize=fuzzer,address,undefined)
# straight from the sources it needs, then runs it for a bounded time.
#   run.sh TARGET OUTDIR [SECONDS]
# Exits 77 (skipped) when clang or libFuzzer is missing, 1 on a finding (the
# crashing input is left in OUTDIR), 0 otherwise. A corpus grows in
# OUTDIR/corpus-TARGET between runs.
set -euo pipefail

if [ $# -lt 2 ]; then
	echo "usage: $0 TARGET OUTDIR [SECONDS]" >&2
	exit 2
fi
target=$1
out=$2
seconds=${3:-${FUZZ_SECONDS:-20}}
src=$(cd "$(dirname "$0")/../.." && pwd)
cc=${CLANG:-$(command -v clang || command -v clang-14 || true)}
if [ -z "$cc" ]; then
	echo "1..0 # SKIP clang not installed"
	exit 77
fi
mkdir -p "$out"
printf 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { return 0; }\n' >"$out/probe.c"
if ! "$cc" -fsanitize=fuzzer "$out/probe.c" -o "$out/probe" 2>/dev/null; then
	echo "1..0 # SKIP libFuzzer not available (libclang-rt-dev)"
	exit 77
fi

case $target in
fuzz_record)
	sources="crypto/record.c crypto/tls.c crypto/identity.c crypto/aead.c crypto/aead_openssl.c crypto/ktls.c io/log.c"
	libs="-lssl -lcrypto -lpthread"
	;;
fuzz_config)
	sources="ctl/config.c ctl/state.c ctl/state-fields.c ctl/state-index.c ctl/policy.c ctl/yamlwalk.c
		io/addr.c io/log.c io/strbuf.c"
	libs="-lyaml -lpthread"
	;;
fuzz_http)
	sources="ctl/http.c io/log.c"
	libs="-lpthread"
	;;
*)
	echo "unknown target $target" >&2
	exit 2
	;;
esac

srcs=()
for s in $sources; do
	srcs+=("$src/$s")
done
"$cc" -g -O1 -std=gnu11 -D_GNU_SOURCE -DZR_VERSION='"fuzz"' -I"$src" \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	"$src/tests/fuzz/$target.c" "${srcs[@]}" $libs -o "$out/$target"

corpus=$out/corpus-$target
mkdir -p "$corpus"
# The seeds kept in the repo (tests/fuzz/seeds/TARGET) start every corpus.
if [ -d "$src/tests/fuzz/seeds/$target" ]; then
	cp -n "$src/tests/fuzz/seeds/$target"/* "$corpus"/ 2>/dev/null || true
fi
cd "$out"
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1
export UBSAN_OPTIONS=print_stacktrace=1
# libFuzzer's own exit code for a finding is 77, which meson reads as a
# skip: a crash, leak or timeout must fail the test.
"./$target" -max_total_time="$seconds" -max_len=70000 -timeout=10 -rss_limit_mb=1024 \
	-error_exitcode=1 -timeout_exitcode=1 \
	-print_final_stats=1 "$corpus"
