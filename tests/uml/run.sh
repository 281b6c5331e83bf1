#!/bin/sh
# Runs a command inside a User-Mode Linux kernel (Debian's user-mode-linux:
# Linux 6.1 with the `tls` module), the host's filesystem as its root
# (hostfs), its own network stack (loopback only), and passes back the
# command's output and exit status. This is how the kernel TLS tests run on
# machines whose kernel has no `tls` ULP.
#
# usage: tests/uml/run.sh [-m MEM] COMMAND [ARG...]    (run from anywhere)
# Exit: the command's status; 77 when linux.uml or its tls module is missing
# (ZRTEST_MESON=1: a TAP skip-all on stdout and 0 instead, for meson); 1, with
# the module and insmod's error on stderr, when a module the tests need does
# not load inside UML (the command is then not run).
set -eu

mem=1G
if [ "${1:-}" = "-m" ]; then
	mem=$2
	shift 2
fi
[ $# -ge 1 ] || { echo "usage: $0 [-m MEM] COMMAND [ARG...]" >&2; exit 2; }

skip() {
	if [ -n "${ZRTEST_MESON:-}" ]; then
		echo "1..0 # SKIP $1"
		exit 0
	fi
	echo "skip: $1" >&2
	exit 77
}

uml=$(command -v linux.uml || true)
[ -n "$uml" ] || skip "linux.uml not installed (apt-get install user-mode-linux)"
tlsko=$(ls /usr/lib/uml/modules/*/kernel/net/tls/tls.ko 2>/dev/null | head -n 1)
[ -n "$tlsko" ] || skip "user-mode-linux has no tls module"
mods=${tlsko%/net/tls/tls.ko}
# The guest runs the host's insmod (hostfs root): without it no module loads
# and every kernel TLS test would fail for a reason that has nothing to do
# with zring. That is a broken install, not a skip.
# UML_INSMOD replaces it (tests/uml/test_modfail.sh checks the failure report).
insmod=${UML_INSMOD:-}
for p in /usr/sbin/insmod /sbin/insmod; do
	[ -n "$insmod" ] && break
	[ -x "$p" ] && { insmod=$p; break; }
done
if [ -z "$insmod" ]; then
	echo "run.sh: insmod not found, so UML cannot load the tls module (apt-get install kmod)" >&2
	exit 1
fi
# The AEADs kernel TLS asks the crypto API for, then the ULP (insmod: the
# guest has no modules.dep of its own; built-in ones just fail to load).
modules=""
for m in crypto/gf128mul crypto/ghash-generic crypto/ctr crypto/gcm lib/crypto/libchacha crypto/chacha_generic \
	lib/crypto/libpoly1305 crypto/poly1305_generic crypto/chacha20poly1305 net/tls/tls; do
	[ -f "$mods/$m.ko" ] && modules="$modules $mods/$m.ko"
done

dir=$(mktemp -d /tmp/zring-uml.XXXXXX)
trap 'rm -rf "$dir"' EXIT INT TERM
# The command, with the caller's directory and environment.
{
	echo "cd '$(pwd)'"
	export -p | grep -v -e ' PWD=' -e ' OLDPWD=' -e ' SHLVL=' -e ' _='
	printf 'exec'
	for a in "$@"; do
		printf " '%s'" "$(printf '%s' "$a" | sed "s/'/'\\\\''/g")"
	done
	echo
} > "$dir/cmd"
cat > "$dir/init" <<INIT
#!/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t tmpfs tmpfs /dev/shm
ip link set lo up
# A module already there (EEXIST) is fine; any other refusal stops the run.
for m in $modules; do
	if ! $insmod \$m 2>$dir/insmod.err && ! grep -q 'File exists' $dir/insmod.err; then
		echo "\${m#$mods/}: \$(cat $dir/insmod.err)" >> $dir/modfail
	fi
done
grep -q '^tls ' /proc/modules || echo "tls: not in /proc/modules after loading" >> $dir/modfail
if [ -s $dir/modfail ]; then
	echo 1 > $dir/rc
else
	sh $dir/cmd > $dir/out 2>&1
	echo \$? > $dir/rc
fi
echo o > /proc/sysrq-trigger
INIT
chmod +x "$dir/init"
"$uml" mem="$mem" rootfstype=hostfs rootflags=/ rw init="$dir/init" con=null con0=null \
	>"$dir/console" 2>&1 </dev/null || true
if [ ! -f "$dir/rc" ]; then
	echo "run.sh: the UML kernel did not run the command; its console:" >&2
	tail -n 30 "$dir/console" >&2
	exit 1
fi
if [ -s "$dir/modfail" ]; then
	echo "run.sh: a kernel module the tests need did not load inside UML; the command was not run:" >&2
	sed 's/^/run.sh:   /' "$dir/modfail" >&2
	exit 1
fi
cat "$dir/out"
exit "$(cat "$dir/rc")"
