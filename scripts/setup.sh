#!/usr/bin/env bash
# Install everything wgpy's development and tests need, on a Debian machine, as root.
#
#   bash scripts/setup.sh          (as root, or: sudo bash scripts/setup.sh)
#
# Idempotent: installs only the Debian packages that are missing, creates .venv only if it is
# missing, and re-runs `pip install -e '.[dev,fuzz,bench,web,offload]'` only when pyproject.toml changed since the last
# successful run. Links .venv/bin/wgpy and .venv/bin/wgpyd into /usr/local/bin, so that a root
# shell, sudo and wg-quick (WG_QUICK_USERSPACE_IMPLEMENTATION=wgpyd) find them by name (see
# scripts/link-commands.sh). Also fetches, without installing them, Debian's kernel and busybox
# for the kernel tests (tests/kernel/) into .cache/kernel/ and builds the guest's boot files there.
# Quiet on success; on failure the captured output of the failing step is shown.
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd -- "$ROOT"

DEB_PACKAGES=(
    wireguard-go wireguard-tools iproute2 iputils-ping iperf3 tcpdump tshark ncat procps nftables
    # `wgpy collect` reads FORWARD and NAT rules as iptables-save prints them (test_collect.py);
    # the network scenarios' PostUp lines run it (tests/netns/test_net_scenarios.py)
    iptables
    qemu-system-x86
    # `python3 -m venv` needs ensurepip, which Debian ships apart; pytricia (the bench extra, an
    # anchor of `python -m bench` and of tests/test_bench_smoke.py) has no wheel: it is compiled
    python3-venv build-essential python3-dev
    # the C batch accelerator (wgpy/_batch.c) compiles against OpenSSL's libcrypto
    libssl-dev
    # the browser test of `wgpy web` (tests/netns/test_web.py): Playwright drives this chromium
    chromium
)

# Unpacked with dpkg-deb -x into .cache/kernel/ for tests/kernel/, never installed: the kernel
# (its version is found at run time, see kernel_package) and a static busybox for the initramfs.
KERNEL_CACHE=.cache/kernel

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

# The versioned kernel package linux-image-amd64 depends on, e.g. linux-image-6.1.0-57-amd64.
kernel_package() {
    apt-cache depends linux-image-amd64 2>/dev/null \
        | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*-amd64\)$/\1/p' | head -n 1
}

# Download a Debian package (not installing it) and unpack it into $KERNEL_CACHE/NAME, once.
fetch_unpacked() {
    local pkg="$1" dest="$KERNEL_CACHE/$1" tmp
    [[ -f "$dest/.unpacked" ]] && return 0
    log "downloading and unpacking $pkg into $dest (not installing it)"
    tmp="$(mktemp -d)"
    # apt-get download runs as the _apt user when it can: let that user write into the temp dir.
    if [[ $(id -u) -eq 0 ]] && id -u _apt >/dev/null 2>&1; then
        chown _apt -- "$tmp"
    fi
    if ! (cd -- "$tmp" && apt-get download "$pkg" >/dev/null 2>&1); then
        # stale package lists name a version the mirror no longer has
        log "apt-get download $pkg failed; updating the package lists and retrying"
        quietly apt-get update
        if ! (cd -- "$tmp" && quietly apt-get download "$pkg"); then
            rm -rf -- "$tmp"
            return 1
        fi
    fi
    rm -rf -- "$dest"
    mkdir -p -- "$dest"
    quietly dpkg-deb -x "$tmp"/"$pkg"_*.deb "$dest"
    rm -rf -- "$tmp"
    touch -- "$dest/.unpacked"
}

kernel_pkg="$(kernel_package)"
if [[ -z "$kernel_pkg" ]]; then
    quietly apt-get update
    kernel_pkg="$(kernel_package)"
fi
if [[ -z "$kernel_pkg" ]]; then
    log "apt-cache knows no linux-image-6.1.0-*-amd64 behind linux-image-amd64"
    exit 1
fi
mkdir -p -- "$KERNEL_CACHE"
fetch_unpacked "$kernel_pkg"
fetch_unpacked busybox-static
printf '%s\n' "$kernel_pkg" >"$KERNEL_CACHE/kernel-package"
# a kernel package replaced by a newer one is 400 MB of nothing
for old in "$KERNEL_CACHE"/linux-image-*; do
    if [[ -d "$old" && "$old" != "$KERNEL_CACHE/$kernel_pkg" ]]; then
        rm -rf -- "$old"
    fi
done

PYTHON="${PYTHON:-python3}"
if [[ ! -x .venv/bin/python ]]; then
    # Debian's python3 has no ensurepip without python3-venv (installed above); another
    # interpreter (PYTHON=...) must bring its own
    if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
        log "$PYTHON has no venv/ensurepip module (Debian: apt-get install python3-venv)"
        exit 1
    fi
    log "creating .venv with $PYTHON"
    quietly "$PYTHON" -m venv .venv
fi

STAMP=.venv/.wgpy-setup-stamp
# setup.py and wgpy/_batch.c too: the editable install builds the C batch accelerator, which
# must be built here (WGPY_REQUIRE_EXTENSION: a failed build fails setup instead of falling back)
want="$(cat pyproject.toml setup.py wgpy/_batch*.c wgpy/_batch.h | sha256sum | cut -d' ' -f1)"
have="$(cat -- "$STAMP" 2>/dev/null || true)"
if [[ "$want" != "$have" ]] || ! .venv/bin/python -I -c 'import wgpy' >/dev/null 2>&1 \
    || [[ ! -x .venv/bin/ruff || ! -x .venv/bin/mypy || ! -x .venv/bin/pytest ]]; then
    log "installing wgpy in editable mode with its dev dependencies"
    rm -f -- "$STAMP"
    WGPY_REQUIRE_EXTENSION=1 quietly .venv/bin/python -m pip install --disable-pip-version-check \
        -q -e '.[dev,fuzz,bench,web,offload]'
    printf '%s\n' "$want" >"$STAMP"
fi

# `wgpy` and `wgpyd` on PATH, as the README's commands and wg-quick call them
bash scripts/link-commands.sh /usr/local/bin

log "building the kernel tests' guest files in $KERNEL_CACHE"
quietly .venv/bin/python -m tests.kernel.image

log "ok"
