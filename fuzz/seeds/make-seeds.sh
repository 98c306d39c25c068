#!/usr/bin/env bash
# Regenerates the seed corpora in fuzz/seeds/ from the repository's test vectors and example config
# (see PROVENANCE.md). The chain_policy seeds are certificates made here with openssl.
set -euo pipefail
cd "$(dirname "$0")"
root=../..
rm -rf proxy_protocol authority forwarded chain_policy config
mkdir -p proxy_protocol authority forwarded chain_policy config

python3 - "$root" <<'PY'
import hashlib, json, sys, os
root = sys.argv[1]

def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    name = hashlib.sha1(data).hexdigest()
    with open(os.path.join(target, name), "wb") as f:
        f.write(data)

pp = json.load(open(f"{root}/crates/portcullis-proxy-protocol/tests/vectors/proxy_protocol_vectors.json"))
for v in pp["v1"]:
    put("proxy_protocol", v["input"])
for v in pp["v2"]:
    if "hex" in v:
        put("proxy_protocol", bytes.fromhex(v["hex"]))
    else:
        put("proxy_protocol", bytes.fromhex(v["hex_prefix"]) + bytes(v["payload_zero_bytes"]))

fw = json.load(open(f"{root}/crates/portcullis-core/tests/vectors/forwarded-parse_cases.json"))
for v in fw["valid"] + fw["invalid"]:
    put("forwarded", v["input"])

ip = json.load(open(f"{root}/crates/portcullis-core/tests/vectors/ip_cidr_vectors.json"))
addrs = [v["in"] for v in ip["parse_addr_valid"] + ip["parse_addr_invalid"] + ip["v4_mapped_unmap"]]
for a in addrs:
    put("forwarded", a)
    put("forwarded", f"for={a}")
    put("forwarded", f'for="[{a}]:4711"')
    put("authority", a)
    put("authority", f"[{a}]:443")

for h in ["api.contoso.com", "API.Contoso.COM.:8443", "*.contoso.com", "bücher.example", "xn--bcher-kva.example",
          "10.0.0.1:80", "[::1]", "[2001:db8::1]:8443", "_internal.corp", "a..b", "[::1]é", "user@host",
          "a" * 63 + "." + "b" * 63 + ".example", "127.1", "0x7f.0.0.1", "host:65536", "host:"]:
    put("authority", h)
for x in ["192.0.2.1, 10.0.0.1", "2001:db8::1,unknown, 198.51.100.7", " 203.0.113.9 ", "_hidden, 10.1.2.3"]:
    put("forwarded", x)
PY

# Certificates: a CA and a leaf of each key kind, and a leaf-then-CA bundle (DER concatenated).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
days=3650
subj() { echo "/CN=$1/O=portcullis fuzz seed"; }
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/ca.key" -out "$tmp/ca.pem" -days $days \
  -subj "$(subj ca)" -addext basicConstraints=critical,CA:TRUE -addext keyUsage=keyCertSign,cRLSign 2>/dev/null
for kind in ec ed25519 rsa1024; do
  case $kind in
    ec) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$tmp/$kind.key" 2>/dev/null ;;
    ed25519) openssl genpkey -algorithm ED25519 -out "$tmp/$kind.key" 2>/dev/null ;;
    rsa1024) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out "$tmp/$kind.key" 2>/dev/null ;;
  esac
  openssl req -new -key "$tmp/$kind.key" -subj "$(subj "leaf-$kind")" -out "$tmp/$kind.csr"
  printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\nsubjectAltName=DNS:client.example\n' >"$tmp/ext"
  openssl x509 -req -in "$tmp/$kind.csr" -CA "$tmp/ca.pem" -CAkey "$tmp/ca.key" -CAcreateserial \
    -days $days -extfile "$tmp/ext" -out "$tmp/$kind.pem" 2>/dev/null
  openssl x509 -in "$tmp/$kind.pem" -outform DER -out "$tmp/$kind.der"
done
openssl x509 -in "$tmp/ca.pem" -outform DER -out "$tmp/ca.der"
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$tmp/sha1.key" -out "$tmp/sha1.pem" -days $days -sha1 \
  -subj "$(subj sha1)" 2>/dev/null
openssl x509 -in "$tmp/sha1.pem" -outform DER -out "$tmp/sha1.der"
for f in ca ec ed25519 rsa1024 sha1; do cp "$tmp/$f.der" "chain_policy/$f.der"; done
cat "$tmp/ec.der" "$tmp/ca.der" >chain_policy/ec-then-ca.der
cat "$tmp/ed25519.der" "$tmp/ca.der" >chain_policy/ed25519-then-ca.der

for f in "$root"/examples/*.toml; do cp "$f" "config/$(basename "$f")"; done
