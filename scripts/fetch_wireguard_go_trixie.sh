#!/usr/bin/env bash
# Fetch Debian trixie's wireguard-go (0.0.20231211, with the 2023 TUN and UDP offloads) for
# `python -m bench`'s second anchor, without installing it and without touching the system's
# apt configuration: a private sources list, package lists and cache under
# .cache/wireguard-go-trixie/, the same Debian mirror as the system's sources, suite trixie.
#
#   bash scripts/fetch_wireguard_go_trixie.sh     (prints the binary's path)
#
# Idempotent: once unpacked, only prints the path.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
DEST="$ROOT/.cache/wireguard-go-trixie"
BINARY="$DEST/root/usr/bin/wireguard-go"

if [[ -x "$BINARY" && -f "$DEST/.unpacked" ]]; then
    printf '%s\n' "$BINARY"
    exit 0
fi

# The Debian mirror of the system's own sources (deb822 `URIs:` or one-line `deb` entries).
mirror() {
    local file uri
    for file in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [[ -f "$file" ]] || continue
        uri="$(sed -n -e 's/^URIs: *\([^ ]*\/debian\)\/\?$/\1/p' \
                      -e 's/^deb \(\[[^]]*\] \)\?\([^ ]*\/debian\)\/\? .*/\2/p' "$file" | head -n 1)"
        if [[ -n "$uri" ]]; then
            printf '%s\n' "$uri"
            return 0
        fi
    done
    printf '%s\n' http://deb.debian.org/debian
}

MIRROR="$(mirror)"
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg
mkdir -p -- "$DEST/lists/partial" "$DEST/cache/archives/partial" "$DEST/download"
printf 'deb [signed-by=%s] %s trixie main\n' "$KEYRING" "$MIRROR" >"$DEST/sources.list"
APT_OPTIONS=(
    -o "Dir::Etc::sourcelist=$DEST/sources.list"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$DEST/lists"
    -o "Dir::Cache=$DEST/cache"
    -o "Debug::NoLocking=1"
)
out="$(mktemp)"
trap 'rm -f -- "$out"' EXIT
if ! apt-get "${APT_OPTIONS[@]}" update >"$out" 2>&1; then
    sed 's/^/    /' -- "$out" >&2
    exit 1
fi
rm -f -- "$DEST"/download/*.deb
# run as root, apt-get download would hand the work to _apt, which cannot write here
if ! (cd -- "$DEST/download" && apt-get "${APT_OPTIONS[@]}" \
        -o APT::Sandbox::User=root download wireguard-go >"$out" 2>&1); then
    sed 's/^/    /' -- "$out" >&2
    exit 1
fi
rm -rf -- "$DEST/root"
dpkg-deb -x "$DEST"/download/wireguard-go_*.deb "$DEST/root"
dpkg-deb -f "$DEST"/download/wireguard-go_*.deb Version >"$DEST/version"
touch -- "$DEST/.unpacked"
printf '%s\n' "$BINARY"
