#!/usr/bin/env bash
# Put this checkout's `wgpy` and `wgpyd` on PATH: symbolic links in BINDIR (default
# /usr/local/bin, on the PATH of root's shells, of sudo and so of wg-quick) to .venv/bin/.
#
#   bash scripts/link-commands.sh [BINDIR]      (scripts/setup.sh runs it, as root)
#
# Why links and not PATH=.venv/bin:$PATH: wg-quick runs `$WG_QUICK_USERSPACE_IMPLEMENTATION
# IFNAME` (`wgpyd wg0`) with the caller's PATH, and sudo replaces PATH with its secure_path;
# /usr/local/bin is on both, and on root's login PATH, with nothing to remember.
#
# A link already there to this checkout is left alone (silently); a link elsewhere (another
# checkout, a removed one) is replaced, saying so; anything else (a file of a pip install, a
# directory) is never touched: the script says what is in the way and exits 1. Not root and
# BINDIR not writable: it says how to get them and exits 0 (.venv/bin/wgpy still works).
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
BINDIR="${1:-/usr/local/bin}"
COMMANDS=(wgpy wgpyd)

log() { printf 'setup: %s\n' "$*" >&2; }

for name in "${COMMANDS[@]}"; do
    if [[ ! -x "$ROOT/.venv/bin/$name" ]]; then
        log "$ROOT/.venv/bin/$name is missing: install wgpy into .venv first (scripts/setup.sh)"
        exit 1
    fi
done

if [[ ! -d "$BINDIR" || ! -w "$BINDIR" ]]; then
    log "cannot write to $BINDIR, so wgpy and wgpyd are not on PATH;" \
        "run as root (sudo bash scripts/setup.sh), or call .venv/bin/wgpy and .venv/bin/wgpyd"
    exit 0
fi

linked=()
replaced=()
for name in "${COMMANDS[@]}"; do
    target="$ROOT/.venv/bin/$name"
    link="$BINDIR/$name"
    if [[ -L "$link" ]]; then
        old="$(readlink -- "$link")"
        [[ "$old" == "$target" ]] && continue
        replaced+=("$name (was -> $old)")
    elif [[ -e "$link" ]]; then
        log "$link exists and is not a link: not replacing it, so the wgpy of this checkout" \
            "is not on PATH; remove it (pip uninstall wgpy?) and run scripts/setup.sh again"
        exit 1
    fi
    # a new link beside the old, renamed over it: never a moment without the command
    ln -sfn -- "$target" "$link.wgpy-new"
    mv -fT -- "$link.wgpy-new" "$link"
    linked+=("$name")
done

if ((${#linked[@]} > 0)); then
    log "linked ${linked[*]} into $BINDIR (-> $ROOT/.venv/bin)${replaced:+, replacing ${replaced[*]}}"
fi
