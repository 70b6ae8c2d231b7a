#!/bin/sh
# Writes the demo overlay's secrets into ./secrets (ignored by git), each random and only if
# missing: a rerun keeps them, so Redis's password and the key of the stored Upstox token stay
# the same across deploys. Needs openssl. Then: kubectl apply -k deploy/k8s/overlays/demo
set -eu
cd "$(dirname "$0")"
umask 077
mkdir -p secrets

write_once() {
    # $1: file; stdin: its content
    if [ -s "secrets/$1" ]; then
        cat >/dev/null
    else
        cat >"secrets/$1"
    fi
}

# Hex: safe inside a URL and a redis.conf line without quoting.
openssl rand -hex 24 | tr -d '\n' | write_once redis-password
password=$(cat secrets/redis-password)
printf 'requirepass %s\n' "$password" | write_once redis.conf
printf 'redis://:%s@redis:6379/0' "$password" | write_once redis_url
# A Fernet key: urlsafe base64 of 32 random bytes.
openssl rand 32 | openssl base64 -A | tr '+/' '-_' | write_once token_encryption_key
echo "secrets in $(pwd)/secrets"
