#!/bin/sh
# hash-key.sh — print the policy form of a gateway API key, sha256:<hex>,
# for key-auth's `consumers.<id>.keys[].hash`. The key is read from stdin
# (asked for without echo on a terminal), never from the command line, so
# it stays out of shell history and the process list.
#
#   scripts/hash-key.sh                       # type or paste the key
#   scripts/hash-key.sh < key.txt             # or pipe it in
#   openssl rand -hex 32 | tee key.txt | scripts/hash-key.sh   # a new key
#
# Trailing newlines are not part of the key. Needs sha256sum, shasum or
# openssl; not sluice.
set -eu

if [ -t 0 ]; then
    printf 'API key: ' >&2
    old=$(stty -g)
    trap 'stty "$old"' EXIT INT TERM
    stty -echo
    IFS= read -r key || true
    stty "$old"
    trap - EXIT INT TERM
    printf '\n' >&2
else
    key=$(cat)
fi
# A key pasted on Windows may end in CR.
key=${key%"$(printf '\r')"}

if [ -z "$key" ]; then
    echo "hash-key.sh: no key on stdin" >&2
    exit 1
fi

# printf is a shell builtin: the key is never an argument of another process.
if command -v sha256sum >/dev/null 2>&1; then
    hex=$(printf %s "$key" | sha256sum)
elif command -v shasum >/dev/null 2>&1; then
    hex=$(printf %s "$key" | shasum -a 256)
elif command -v openssl >/dev/null 2>&1; then
    hex=$(printf %s "$key" | openssl dgst -sha256 -r)
else
    echo "hash-key.sh: needs sha256sum, shasum or openssl" >&2
    exit 1
fi
printf 'sha256:%s\n' "${hex%% *}"
