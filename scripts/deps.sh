#!/bin/sh
# deps.sh — install what sluice needs to build, run and test, from Debian
# packages only. Safe to run repeatedly: it asks apt only for what is missing.
set -eu

PKGS="cmake make gcc pkg-config libluajit2-5.1-dev libuv1-dev libmbedtls-dev
libcjson-dev libyaml-dev libpcre2-dev zlib1g-dev node-llhttp lua-busted lua-socket curl
openssl ca-certificates libhiredis-dev redis-server"

# Extras: the SDK specs drive sluice with the npm client SDKs (node and npm
# are on the project's machines; Debian's are installed only when missing),
# valgrind for the leak check, wrk and nginx for bench/.
case "${1:-}" in
--test) command -v node >/dev/null && command -v npm >/dev/null ||
            PKGS="$PKGS nodejs npm" ;;
--valgrind) PKGS="$PKGS valgrind" ;;
--bench) PKGS="$PKGS wrk nginx-light util-linux" ;;
esac

missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
        missing="$missing $p"
done
[ -z "$missing" ] && exit 0

SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "deps: installing$missing"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
