#!/bin/sh
# Test material for the compose example (NOT for production):
#   ca-key.pem  the throw-away CA's key (mode 0600, mounted nowhere)
#   tls/      the CA certificate, Redis's server certificate (names: redis, localhost,
#             127.0.0.1) and cachecloak's client certificate (Redis checks it:
#             tls-auth-clients yes), EC P-256, valid 30 days
#   secrets/  cachecloak's encryption and hashing keys (32 random bytes as 64 hex
#             characters, as `cachecloak keygen` prints them), the Redis password of the
#             ACL user "cachecloak", and Redis's ACL file (the password's SHA-256 only)
#
#   ./gen-certs.sh [DIR]      (default: the directory of this script)
#
# Existing keys and the password are kept: a new encryption or hashing key would make
# every value already cached unreadable.  Certificates are made again when missing.
# Files are world-readable so that the containers' users (cachecloak: 10001, redis: 999)
# can read the bind mounts; that is acceptable for a demo on your machine only.
set -eu

out=${1:-$(dirname "$0")}
command -v openssl >/dev/null || { echo "gen-certs.sh: openssl is required" >&2; exit 1; }
mkdir -p "$out/tls" "$out/secrets"
tls=$out/tls
secrets=$out/secrets
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

newkey() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

if [ ! -s "$tls/ca.pem" ] || [ ! -s "$out/ca-key.pem" ]; then
  (umask 077; newkey "$out/ca-key.pem")
  openssl req -x509 -new -key "$out/ca-key.pem" -sha256 -days 30 \
    -subj "/CN=cachecloak demo CA" -out "$tls/ca.pem"
fi

# $1 name, $2 subject CN, $3 extensions
issue() {
  [ -s "$tls/$1.pem" ] && [ -s "$tls/$1-key.pem" ] && return 0
  newkey "$tls/$1-key.pem"
  openssl req -new -key "$tls/$1-key.pem" -subj "/CN=$2" -out "$tmp/$1.csr"
  printf '%s\n' "$3" > "$tmp/$1.ext"
  openssl x509 -req -in "$tmp/$1.csr" -CA "$tls/ca.pem" -CAkey "$out/ca-key.pem" \
    -CAcreateserial -CAserial "$tmp/ca.srl" -days 30 -sha256 -extfile "$tmp/$1.ext" \
    -out "$tls/$1.pem" 2>/dev/null
}
issue redis redis "subjectAltName=DNS:redis,DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth"
issue client cachecloak "extendedKeyUsage=clientAuth"

secret() {  # $1 file, $2 command printing the value
  [ -s "$secrets/$1" ] || sh -c "$2" > "$secrets/$1"
}
secret encryption-key "openssl rand -hex 32"
secret hashing-key "openssl rand -hex 32"
secret redis-password "openssl rand -hex 24"
password_sha=$(tr -d '\n' < "$secrets/redis-password" | openssl dgst -sha256 -r | cut -d' ' -f1)
# cachecloak's own keys only (~cachecloak:*, its default prefix); no KEYS, FLUSHALL,
# CONFIG, DEBUG... (-@dangerous) but INFO and ROLE, which it uses to find the primary.
cat > "$secrets/users.acl" <<ACL
user default off
user cachecloak on #$password_sha ~cachecloak:* resetchannels +@all -@dangerous +info +role
ACL

chmod 0644 "$tls"/*.pem "$secrets"/*
echo "gen-certs.sh: test CA, certificates and secrets are in $tls and $secrets"
