#!/usr/bin/env bash
# CI checks of the C batch accelerator (wgpy/_batch*.c and _batch.h), from the repository root:
#
#   bash scripts/check_batch_c.sh warnings     compiled with -Wall -Wextra -Werror (Python's
#                                              own CFLAGS too): any warning fails
#   bash scripts/check_batch_c.sh sanitizers   built with AddressSanitizer and UBSan into a
#                                              copy of the tree, then the batch unit tests and a
#                                              short fuzz smoke of the device and offload
#                                              targets run on it (about a minute)
set -euo pipefail

ROOT="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
cd -- "$ROOT"
PYTHON="$ROOT/.venv/bin/python"
mode="${1:-}"

cflags() { "$PYTHON" -c 'import sysconfig as s; print(s.get_config_var("CFLAGS") or "")'; }
include() { "$PYTHON" -c 'import sysconfig as s; print(s.get_paths()["include"])'; }

case "$mode" in
warnings)
    # shellcheck disable=SC2046
    for source in wgpy/_batch*.c; do
        # shellcheck disable=SC2046
        gcc $(cflags) -fPIC -I"$(include)" -Wall -Wextra -Werror -c "$source" -o /dev/null
    done
    echo "wgpy/_batch*.c: no warnings with -Wall -Wextra -Werror"
    ;;
sanitizers)
    work="$(mktemp -d)"
    trap 'rm -rf -- "$work"' EXIT
    git ls-files -z -co --exclude-standard -- wgpy tests fuzz pyproject.toml setup.py \
        | tar --null -T - -cf - | tar -xf - -C "$work"
    # the copy's wgpy, not the editable install's: its import hook is taken out at start-up
    printf '%s\n' 'import sys' \
        'sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]' \
        >"$work/sitecustomize.py"
    export PYTHONPATH="$work"
    flags="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O1 -g"
    # shellcheck disable=SC2046
    for source in wgpy/_batch*.c; do
        name="$(basename -- "$source" .c)"
        # shellcheck disable=SC2046
        gcc $(cflags) -fPIC -I"$(include)" $flags -c "$source" -o "$work/$name.o"
    done
    suffix="$("$PYTHON" -c 'import sysconfig as s; print(s.get_config_var("EXT_SUFFIX"))')"
    # shellcheck disable=SC2086
    gcc -shared $flags "$work"/_batch*.o -lcrypto -o "$work/wgpy/_batch$suffix"
    cd -- "$work"
    # the sanitizer runtime must be loaded first; Python's own allocator hides overflows of
    # small objects from ASan, so plain malloc; Python's leaks at exit are not ours
    export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
    export PYTHONMALLOC=malloc ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    "$PYTHON" -c 'import wgpy._batch as c, wgpy.batch as b, sys; print(b.ACTIVE, c.__file__); sys.exit(not b.ACCELERATED or not c.__file__.startswith(sys.argv[1]))' "$work"
    "$PYTHON" -m pytest -q -p no:cacheprovider --capture=sys \
        tests/unit/test_batch_twins.py tests/unit/test_batch_equivalence.py \
        tests/unit/test_open_run_twins.py tests/unit/test_cutseal_twins.py \
        tests/unit/test_coalesce_twins.py tests/unit/test_parse_prefixes_twins.py
    for target in device offload; do
        "$PYTHON" -m fuzz "$target" --no-atheris -t 12
    done
    ;;
*)
    echo "usage: bash scripts/check_batch_c.sh warnings|sanitizers" >&2
    exit 2
    ;;
esac
