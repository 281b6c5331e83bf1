#!/usr/bin/env bash
# Installs what zring needs to build and test on Debian 12 / Ubuntu 24.04.
# Idempotent and silent when everything is already installed: packages are
# checked with dpkg-query first, and apt runs only for the missing ones.
#
#   deploy/install-deps.sh            build + test dependencies (tests run the
#                                     DPDK cryptodev backend, so DPDK is included)
#   deploy/install-deps.sh --build    build dependencies only
#   deploy/install-deps.sh --dpdk     with --build: also the optional DPDK packages
#   ZR_SKIP_DEPS=1                    do nothing (hosts managed some other way)
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

want_test=1
want_dpdk=0
for arg in "$@"; do
	case "$arg" in
	--build) want_test=0 ;;
	--dpdk) want_dpdk=1 ;;
	-h | --help)
		sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "install-deps: unknown argument '$arg'" >&2
		exit 1
		;;
	esac
done

[ "${ZR_SKIP_DEPS:-0}" = 1 ] && exit 0

if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
	echo "install-deps: not a Debian/Ubuntu host (no dpkg/apt); install the packages listed in $0 by hand" >&2
	exit 0
fi

arch=$(dpkg --print-architecture)

build_pkgs=(gcc meson ninja-build pkg-config liburing-dev libssl-dev libnghttp2-dev libprotobuf-c-dev
	protobuf-c-compiler libyaml-dev libnuma-dev libjemalloc-dev)
# intel-ipsec-mb is x86-64 only; elsewhere the openssl AEAD backend is used.
[ "$arch" = amd64 ] && build_pkgs+=(libipsec-mb-dev)

test_pkgs=(iptables iproute2 python3 python3-h2 python3-grpcio python3-yaml prometheus iperf3 haproxy
	clang openssl procps)
# User-Mode Linux (6.1, with the tls module): the kernel TLS tests run in it
# where the host kernel has no tls ULP (tests/uml/run.sh).
[ "$arch" = amd64 ] && test_pkgs+=(user-mode-linux kmod)

dpdk_pkgs=(libdpdk-dev)
[ "$arch" = amd64 ] && dpdk_pkgs+=(librte-crypto-ipsec-mb23)
dpdk_pkgs+=(librte-crypto-openssl23)

pkgs=("${build_pkgs[@]}")
[ "$want_test" = 1 ] && pkgs+=("${test_pkgs[@]}")
{ [ "$want_dpdk" = 1 ] || [ "$want_test" = 1 ]; } && pkgs+=("${dpdk_pkgs[@]}")

installed() {
	dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null | grep -qx installed
}

# Major version from a Debian version string: "1:14.0-55.7~deb12u1" -> 14.
major_of() {
	local v=${1#*:}
	echo "${v%%[.~+-]*}"
}

# The sanitizer/fuzzer runtime is versioned with clang (libclang-rt-14-dev on
# Debian 12, libclang-rt-18-dev on Ubuntu 24.04). Take the major of the clang
# installed, or of the one apt would install.
clang_rt_pkg() {
	local v=""
	if installed clang; then
		v=$(dpkg-query -W -f='${Version}' clang)
	else
		v=$(apt-cache policy clang 2>/dev/null | awk '/Candidate:/ { print $2; exit }')
		[ "$v" = "(none)" ] && v=""
	fi
	[ -n "$v" ] && echo "libclang-rt-$(major_of "$v")-dev"
	return 0
}

missing=()
for p in "${pkgs[@]}"; do
	installed "$p" || missing+=("$p")
done

rt=""
if [ "$want_test" = 1 ] && installed clang; then
	rt=$(clang_rt_pkg)
	[ -n "$rt" ] && ! installed "$rt" && missing+=("$rt")
fi

[ "${#missing[@]}" -eq 0 ] && exit 0

sudo=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		sudo=(sudo)
	else
		echo "install-deps: missing packages (${missing[*]}) and not root; run this script as root" >&2
		exit 1
	fi
fi

echo "install-deps: installing ${missing[*]}"
"${sudo[@]}" apt-get update -qq

# clang was missing: now that the lists are fresh, name its runtime too.
if [ "$want_test" = 1 ] && [ -z "$rt" ]; then
	rt=$(clang_rt_pkg)
	[ -n "$rt" ] && missing+=("$rt")
fi

# Keep only the packages this release has (a runtime split differently, an
# architecture without a package); say which were skipped.
available=()
for p in "${missing[@]}"; do
	if apt-cache show "$p" >/dev/null 2>&1; then
		available+=("$p")
	else
		echo "install-deps: package '$p' is not available here; skipping it" >&2
	fi
done
[ "${#available[@]}" -eq 0 ] && exit 0

"${sudo[@]}" apt-get install -y -qq --no-install-recommends -o Dpkg::Use-Pty=0 "${available[@]}" >/dev/null
echo "install-deps: done"
