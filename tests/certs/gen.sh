#!/usr/bin/env bash
# Test PKI for zring: gen.sh OUTDIR
#
# Creates OUTDIR (if needed) and writes, all EC P-256, PEM:
#   root-cert.pem  root-key.pem        main CA (trust domain cluster.local)
#   other-root-cert.pem other-root-key.pem   a second, unrelated CA
#   NAME.pem + NAME.key, for NAME in:
#     client     spiffe://cluster.local/ns/default/sa/client   (main CA)
#     server     spiffe://cluster.local/ns/default/sa/server   (main CA)
#     other      spiffe://cluster.local/ns/default/sa/other    (main CA)
#     other-td   spiffe://other.local/ns/default/sa/client     (main CA: trusted chain, foreign trust domain)
#     other-ca   spiffe://other.local/ns/default/sa/client     (second CA: untrusted chain)
#     expired    spiffe://cluster.local/ns/default/sa/server   (main CA, valid 2020-01-01..2020-01-02 only)
#     nospiffe   no URI SAN, only DNS:nospiffe.local           (main CA)
#     chained    spiffe://cluster.local/ns/default/sa/chained  (via an intermediate CA; NAME.pem = leaf then
#                intermediate, as identity.certificates[].cert expects)
# Leaves are valid from now for 10 years (except `expired`). Takes well under a second. Needs the
# openssl CLI (1.1.1 or 3.x). Keys are unencrypted: test material only, never deploy it.
set -euo pipefail

if [ $# -ne 1 ]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi
out=$1
mkdir -p "$out"
cd "$out"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/zring-gen.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# ca NAME SUBJECT: self-signed root
ca() {
	key "$1-key.pem"
	openssl req -x509 -new -key "$1-key.pem" -sha256 -days 3650 -subj "$2" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-addext "subjectKeyIdentifier=hash" -out "$1-cert.pem"
}

# leaf NAME SAN CA_PREFIX [EXTRA_EXT]: NAME.pem/NAME.key signed by CA_PREFIX-{cert,key}.pem
leaf() {
	local name=$1 san=$2 ca=$3 ext=${4:-}
	key "$name.key"
	cat >"$tmp/$name.ext" <<-EOF
		basicConstraints=critical,CA:FALSE
		keyUsage=critical,digitalSignature,keyEncipherment
		extendedKeyUsage=serverAuth,clientAuth
		subjectAltName=critical,$san
		authorityKeyIdentifier=keyid
		$ext
	EOF
	openssl req -new -key "$name.key" -subj "/O=zring-test/CN=$name" -out "$tmp/$name.csr"
	openssl x509 -req -in "$tmp/$name.csr" -CA "$ca-cert.pem" -CAkey "$ca-key.pem" -set_serial "0x$(openssl rand -hex 8)" \
		-sha256 -days 3650 -extfile "$tmp/$name.ext" -out "$name.pem" 2>/dev/null
}

ca root "/O=cluster.local/CN=zring test root"
ca other-root "/O=other.local/CN=zring other root"

sa=spiffe://cluster.local/ns/default/sa
leaf client "URI:$sa/client" root
leaf server "URI:$sa/server" root
leaf other "URI:$sa/other" root
leaf other-td "URI:spiffe://other.local/ns/default/sa/client" root
leaf other-ca "URI:spiffe://other.local/ns/default/sa/client" other-root
leaf nospiffe "DNS:nospiffe.local" root

# An intermediate CA between the root and a leaf; the leaf file carries the chain.
key "$tmp/inter-key.pem"
openssl req -new -key "$tmp/inter-key.pem" -subj "/O=cluster.local/CN=zring test intermediate" -out "$tmp/inter.csr"
printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\nsubjectKeyIdentifier=hash\n' \
	>"$tmp/inter.ext"
openssl x509 -req -in "$tmp/inter.csr" -CA root-cert.pem -CAkey root-key.pem -set_serial 0x1001 -sha256 -days 3650 \
	-extfile "$tmp/inter.ext" -out "$tmp/inter-cert.pem" 2>/dev/null
leaf chained "URI:$sa/chained" "$tmp/inter"
cat "$tmp/inter-cert.pem" >>chained.pem

# `x509 -req` cannot back-date, so the expired leaf goes through `openssl ca`, which takes explicit dates.
key expired.key
openssl req -new -key expired.key -subj "/O=zring-test/CN=expired" -out "$tmp/expired.csr"
touch "$tmp/index.txt"
cat >"$tmp/ca.cnf" <<EOF
[ca]
default_ca = test_ca
[test_ca]
dir = $tmp
database = $tmp/index.txt
new_certs_dir = $tmp
serial = $tmp/serial
default_md = sha256
policy = any
unique_subject = no
[any]
organizationName = optional
commonName = supplied
[leaf]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = critical,URI:$sa/server
authorityKeyIdentifier = keyid
EOF
echo 2001 >"$tmp/serial"
openssl ca -batch -notext -config "$tmp/ca.cnf" -cert root-cert.pem -keyfile root-key.pem -extensions leaf \
	-startdate 20200101000000Z -enddate 20200102000000Z -in "$tmp/expired.csr" -out expired.pem 2>/dev/null
