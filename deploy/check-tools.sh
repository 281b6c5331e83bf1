#!/usr/bin/env bash
# Checks that every external program and Python module the test suites use is
# installed, and names the Debian package that brings each missing one. Cheap
# (no network, no build): CI runs it before the tests so that a fresh machine
# on which deploy/install-deps.sh forgot something fails here, by name,
# instead of as a test failure far away (or a silent skip).
#
#   deploy/check-tools.sh          exit 0: all present; 1: the missing ones listed
#   deploy/check-tools.sh --list   print the table (program, package, who uses it)
#
# The table is kept honest by a scan of the test sources: a program a test
# starts (sh('x', ...), subprocess.*(['x', ...]), shutil.which('x'),
# command -v x) that is not in the table fails the check too.
set -euo pipefail

cd "$(dirname "$0")/.."

arch=$(dpkg --print-architecture 2>/dev/null || uname -m)

# program | Debian package | who uses it
tools=(
	"meson|meson|the build (make test)"
	"ninja|ninja-build|the build"
	"pkg-config|pkg-config|the build"
	"gcc|gcc|the build"
	"clang|clang|tests/fuzz/run.sh (libFuzzer), make test-asan"
	"/usr/bin/python3|python3|every integration, interop and perf test"
	"ip|iproute2|network namespaces and veths (zrtest.py), loopback inside UML"
	"iptables|iptables|capture tests (test_capture, test_hbone, test_hbone_authz)"
	"openssl|openssl|test certificates (tests/certs/gen.sh), openssl speed (crypto_bench)"
	"promtool|prometheus|promtool check metrics (test_metrics, test_hbone)"
	"haproxy|haproxy|zring-bench suite baseline (tests/perf/test_suite.py, make bench)"
	"iperf3|iperf3|perf/vs-iperf3.sh"
	"bash|bash|tests/certs/gen.sh"
	"ps|procps|process checks in tests"
)
# Kernel TLS runs inside User-Mode Linux (amd64 only), which loads the tls
# module with the host's insmod.
if [ "$arch" = amd64 ] || [ "$arch" = x86_64 ]; then
	tools+=("linux.uml|user-mode-linux|kernel TLS tests (tests/uml/run.sh)")
	tools+=("insmod|kmod|loading the tls module inside UML (tests/uml/run.sh)")
fi

# Python module | Debian package (for /usr/bin/python3, which the tests run)
pymods=(
	"h2|python3-h2"
	"hpack|python3-hpack"
	"yaml|python3-yaml"
	"grpc|python3-grpcio"
)

if [ "${1:-}" = "--list" ]; then
	printf '%-18s %-18s %s\n' program package "used by"
	for t in "${tools[@]}"; do
		IFS='|' read -r prog pkg why <<<"$t"
		printf '%-18s %-18s %s\n' "$prog" "$pkg" "$why"
	done
	for m in "${pymods[@]}"; do
		IFS='|' read -r mod pkg <<<"$m"
		printf '%-18s %-18s %s\n' "python: $mod" "$pkg" "/usr/bin/python3 tests"
	done
	exit 0
fi

have() {
	# insmod and friends live in /usr/sbin, which a non-root PATH may lack.
	command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ] || [ -x "/sbin/$1" ]
}

fail=0
for t in "${tools[@]}"; do
	IFS='|' read -r prog pkg why <<<"$t"
	if ! have "$prog"; then
		echo "check-tools: missing '$prog' (Debian package $pkg), needed by $why" >&2
		fail=1
	fi
done
if have /usr/bin/python3; then
	for m in "${pymods[@]}"; do
		IFS='|' read -r mod pkg <<<"$m"
		if ! /usr/bin/python3 -c "import $mod" 2>/dev/null; then
			echo "check-tools: /usr/bin/python3 cannot import '$mod' (Debian package $pkg)" >&2
			fail=1
		fi
	done
fi

# Libraries found by the build or loaded by tests rather than run.
if have clang; then
	for rt in fuzzer asan; do
		f=$(clang -print-file-name="libclang_rt.$rt-x86_64.a" 2>/dev/null || true)
		if [ "$arch" = amd64 ] && [ ! -f "$f" ]; then
			v=$(clang -dumpversion 2>/dev/null | cut -d. -f1)
			echo "check-tools: clang's $rt runtime is missing (Debian package libclang-rt-$v-dev), needed by fuzzing and make test-asan" >&2
			fail=1
		fi
	done
fi
if have pkg-config && ! pkg-config --exists libdpdk; then
	echo "check-tools: DPDK is missing (Debian package libdpdk-dev), needed by the dpdk record-crypto tests" >&2
	fail=1
fi
pmds=(librte_crypto_openssl)
[ "$arch" = amd64 ] && pmds+=(librte_crypto_ipsec_mb)
for pmd in "${pmds[@]}"; do
	if ! ls /usr/lib/*/dpdk/pmds-*/"$pmd".so* >/dev/null 2>&1; then
		pkg=${pmd//_/-}
		echo "check-tools: DPDK virtual crypto device $pmd is missing (Debian package ${pkg}23), needed by the dpdk tests" >&2
		fail=1
	fi
done

# Every program the tests start must be in the table above.
known=" "
for t in "${tools[@]}"; do
	IFS='|' read -r prog _ _ <<<"$t"
	known+="${prog##*/} "
done
# Programs zring's own build makes, shell built-ins, and the versioned name
# tests/fuzz/run.sh tries when plain clang is absent.
known+="zring zring-bench true false clang-14 "
while IFS=: read -r file line prog; do
	case "$known" in
	*" $prog "*) ;;
	*)
		echo "check-tools: $file:$line starts '$prog', which this script's table does not list" >&2
		fail=1
		;;
	esac
done < <(
	grep -rnoE "(\bsh\(|subprocess\.(run|Popen|call|check_call|check_output)\(\[|shutil\.which\()['\"][A-Za-z0-9_./-]+['\"]" \
		tests perf/*.sh deploy/demo.sh deploy/install-deps.sh 2>/dev/null |
		sed -E "s/^([^:]+):([0-9]+):.*['\"]([A-Za-z0-9_./-]+)['\"]$/\1:\2:\3/"
	grep -rnoE "command -v [A-Za-z0-9_.-]+" tests perf/*.sh 2>/dev/null |
		sed -E 's/^([^:]+):([0-9]+):command -v (.*)$/\1:\2:\3/'
)

if [ "$fail" -ne 0 ]; then
	echo "check-tools: run deploy/install-deps.sh (as root) to install what is missing" >&2
	exit 1
fi
echo "check-tools: all ${#tools[@]} programs and ${#pymods[@]} Python modules the tests use are present"
