#!/usr/bin/env bash
# Install everything wgpy's development and tests need, on a Debian machine, as root.
#
#   sudo bash scripts/setup.sh
#
# Idempotent: installs only the Debian packages that are missing, creates .venv only if it is
# missing, and re-runs `pip install -e '.[dev,fuzz,bench]'` only when pyproject.toml changed since the last
# successful run. Quiet on success; on failure the captured output of the failing step is shown.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd -- "$ROOT"

DEB_PACKAGES=(
    wireguard-go wireguard-tools iproute2 iputils-ping iperf3 tcpdump tshark ncat procps nftables
)

log() { printf 'setup: %s\n' "$*" >&2; }

# Run a command with its output captured; print the output only if it fails.
quietly() {
    local out status
    out="$(mktemp)"
    if "$@" >"$out" 2>&1; then
        rm -f -- "$out"
        return 0
    else
        status=$?
    fi
    log "FAILED (exit $status): $*"
    sed 's/^/    /' -- "$out" >&2
    rm -f -- "$out"
    return "$status"
}

deb_missing() {
    local pkg
    for pkg in "${DEB_PACKAGES[@]}"; do
        if ! dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
            printf '%s\n' "$pkg"
        fi
    done
}

mapfile -t missing < <(deb_missing)
if ((${#missing[@]} > 0)); then
    if [[ $(id -u) -ne 0 ]]; then
        log "missing Debian packages: ${missing[*]}"
        log "run as root to install them: sudo bash scripts/setup.sh"
        exit 1
    fi
    log "installing Debian packages: ${missing[*]}"
    # tshark's wireshark-common asks whether non-root users may capture; answer "no" up front.
    echo 'wireshark-common wireshark-common/install-setuid boolean false' \
        | quietly debconf-set-selections
    export DEBIAN_FRONTEND=noninteractive
    quietly apt-get update
    quietly apt-get install -y --no-install-recommends \
        -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
        "${DEB_PACKAGES[@]}" </dev/null
    mapfile -t still_missing < <(deb_missing)
    if ((${#still_missing[@]} > 0)); then
        log "still missing after apt-get install: ${still_missing[*]}"
        exit 1
    fi
fi

PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
    log "creating .venv with $PYTHON"
    quietly "$PYTHON" -m venv .venv
fi

STAMP=.venv/.wgpy-setup-stamp
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
have="$(cat -- "$STAMP" 2>/dev/null || true)"
if [[ "$want" != "$have" ]] || ! .venv/bin/python -I -c 'import wgpy' >/dev/null 2>&1 \
    || [[ ! -x .venv/bin/ruff || ! -x .venv/bin/mypy || ! -x .venv/bin/pytest ]]; then
    log "installing wgpy in editable mode with its dev dependencies"
    rm -f -- "$STAMP"
    quietly .venv/bin/python -m pip install --disable-pip-version-check -q -e '.[dev,fuzz,bench]'
    printf '%s\n' "$want" >"$STAMP"
fi

log "ok"
