#!/bin/sh
# TAP: tests/uml/run.sh must fail loudly, naming the module and insmod's
# error, when a module the kernel TLS tests need does not load inside UML,
# and must not run the command then.
set -u
run=$(dirname "$0")/run.sh
command -v linux.uml >/dev/null 2>&1 || { echo "1..0 # SKIP linux.uml not installed"; exit 0; }
echo "1..4"
dir=$(mktemp -d /tmp/zring-modfail.XXXXXX)
trap 'rm -rf "$dir"' EXIT
# An insmod that refuses every module the way a missing dependency does.
cat > "$dir/insmod" <<'FAKE'
#!/bin/sh
echo "insmod: ERROR: could not insert module $1: Unknown symbol in module" >&2
exit 1
FAKE
chmod +x "$dir/insmod"
rc=0
UML_INSMOD="$dir/insmod" ZRTEST_MESON= sh "$run" -m 256M touch "$dir/ran" >"$dir/out" 2>"$dir/err" || rc=$?
[ "$rc" -eq 1 ] && echo "ok 1 - run.sh exits 1 when a module does not load" || echo "not ok 1 - run.sh exits 1 when a module does not load (got $rc)"
grep -q 'net/tls/tls.ko: insmod: ERROR: could not insert module' "$dir/err" &&
	echo "ok 2 - the failure names the tls module and insmod's error" ||
	{ echo "not ok 2 - the failure names the tls module and insmod's error"; sed 's/^/# /' "$dir/err"; }
[ ! -e "$dir/ran" ] && echo "ok 3 - the command is not run" || echo "not ok 3 - the command is not run"
# With the real insmod the same command runs and the module is there.
rc=0
sh "$run" -m 256M sh -c "grep -q '^tls ' /proc/modules && touch $dir/ran" >"$dir/out" 2>"$dir/err" || rc=$?
[ "$rc" -eq 0 ] && [ -e "$dir/ran" ] && echo "ok 4 - with the host's insmod the tls module loads and the command runs" ||
	{ echo "not ok 4 - with the host's insmod the tls module loads and the command runs (rc $rc)"; sed 's/^/# /' "$dir/err"; }
