"""Run a fuzz target: atheris/libFuzzer when available, else a seeded random mutator."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import os
import random
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Final

TARGETS: Final = {
    "device": "fuzz.target_device",
    "inner": "fuzz.target_inner",
    "uapi": "fuzz.target_uapi",
    "config": "fuzz.target_config",
    "explain": "fuzz.target_explain",
    "offload": "fuzz.target_offload",
}
"""Target name -> module. ``config`` exists only when wgpy/config.py does."""

CORPUS: Final = Path(__file__).parent / "corpus"
MAX_LEN: Final = 4096


def available_targets() -> list[str]:
    names = list(TARGETS)
    # not importlib.util.find_spec("wgpy.config"): that imports wgpy before atheris can
    # instrument it
    if not (Path(__file__).parent.parent / "wgpy" / "config.py").exists():
        names.remove("config")
    return names


def have_atheris() -> bool:
    return importlib.util.find_spec("atheris") is not None


def write_seeds(name: str, module: ModuleType) -> int:
    """(Re)write ``fuzz/corpus/NAME/seed-XX`` from the target's ``seeds()``."""
    folder = CORPUS / name
    folder.mkdir(parents=True, exist_ok=True)
    seeds: list[bytes] = module.seeds()
    for i, seed in enumerate(seeds):
        (folder / f"seed-{i:02d}").write_bytes(seed)
    return len(seeds)


def _load_corpus(name: str) -> list[bytes]:
    folder = CORPUS / name
    return [p.read_bytes() for p in sorted(folder.iterdir())] if folder.is_dir() else []


def _mutate(rng: random.Random, data: bytes, corpus: list[bytes]) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        choice = rng.randrange(7)
        if choice == 0 or not buf:
            buf[rng.randint(0, len(buf)) : rng.randint(0, len(buf))] = rng.randbytes(
                rng.randint(1, 16)
            )
        elif choice == 1:
            buf[rng.randrange(len(buf))] ^= 1 << rng.randrange(8)
        elif choice == 2:
            buf[rng.randrange(len(buf))] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, 0x0A, 0x3D))
        elif choice == 3:
            start = rng.randrange(len(buf))
            del buf[start : start + rng.randint(1, 32)]
        elif choice == 4 and corpus:
            other = rng.choice(corpus)
            cut = rng.randint(0, len(buf))
            buf[cut:] = other[rng.randint(0, len(other)) :]
        elif choice == 5:
            start = rng.randrange(len(buf))
            buf[start:start] = buf[start : start + rng.randint(1, 64)]
        else:
            buf = bytearray(rng.randbytes(rng.randint(0, 256)))
    return bytes(buf[:MAX_LEN])


def run_random(
    test_one_input: Callable[[bytes], None],
    corpus: list[bytes],
    runs: int,
    seconds: float,
    seed: int,
) -> int:
    """The fallback driver: the corpus, then mutations of it. Returns the inputs run."""
    rng = random.Random(seed)
    start = time.monotonic()
    done = 0
    pool = list(corpus) or [b""]
    while (runs < 0 or done < runs) and (seconds <= 0 or time.monotonic() - start < seconds):
        data = corpus[done] if done < len(corpus) else _mutate(rng, rng.choice(pool), pool)
        try:
            test_one_input(data)
        except Exception:
            traceback.print_exc()
            print(f"CRASH on input {data.hex()}", file=sys.stderr)
            raise
        done += 1
        if done % 1000 == 0 and len(pool) < 4096 and rng.random() < 0.05:
            pool.append(data)
    elapsed = time.monotonic() - start
    print(f"Done {done} runs in {elapsed:.0f} second(s) (random mutator, seed {seed})")
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m fuzz", description=__doc__)
    parser.add_argument("target", nargs="?", help="one of: " + ", ".join(TARGETS))
    parser.add_argument("-n", "--runs", type=int, default=-1, help="inputs to run (-1: forever)")
    parser.add_argument("-t", "--seconds", type=float, default=0, help="stop after this long")
    parser.add_argument(
        "--no-atheris", action="store_true", help="use the random mutator even if atheris exists"
    )
    parser.add_argument("--seed", type=int, default=1, help="random mutator seed")
    parser.add_argument("--write-seeds", action="store_true", help="rewrite fuzz/corpus/*")
    parser.add_argument("--list", action="store_true", help="list the targets")
    parser.add_argument("libfuzzer_args", nargs="*", help="extra libFuzzer flags (-flag=value)")
    args, unknown = parser.parse_known_args(argv)
    extra = list(args.libfuzzer_args) + unknown
    if args.list:
        print("\n".join(available_targets()))
        return 0
    if args.write_seeds:
        for name in available_targets():
            count = write_seeds(name, importlib.import_module(TARGETS[name]))
            print(f"{name}: {count} seeds")
        return 0
    if args.target not in available_targets():
        parser.error(f"target must be one of {', '.join(available_targets())}")
    module_name = TARGETS[args.target]
    logging.disable(logging.CRITICAL)  # wgpy logs every bad request; millions of them here
    if args.no_atheris or not have_atheris():
        if not args.no_atheris:
            print("atheris is not installed: using the random mutator", file=sys.stderr)
        module = importlib.import_module(module_name)
        run_random(
            module.test_one_input, _load_corpus(args.target), args.runs, args.seconds, args.seed
        )
        return 0
    import atheris  # type: ignore[import-not-found,import-untyped,unused-ignore]

    with atheris.instrument_imports(include=["wgpy"]):
        module = importlib.import_module(module_name)
    # New inputs go to a scratch directory: the committed corpus stays the small seed set.
    # libFuzzer exits the process without returning here, so nothing cleans up after a run:
    # each run gets its own directory (runs may overlap) and removes those of dead runs.
    scratch = Path(tempfile.gettempdir())
    for old in scratch.glob(f"wgpy-fuzz-{args.target}-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(old, ignore_errors=True)
    work = scratch / f"wgpy-fuzz-{args.target}-{os.getpid()}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    artifacts = Path(__file__).parent / "artifacts"
    artifacts.mkdir(exist_ok=True)
    flags = [
        sys.argv[0],
        f"-runs={args.runs}",
        f"-max_len={MAX_LEN}",
        "-timeout=10",  # a single input taking 10 s is a hang
        "-rss_limit_mb=2048",
        f"-artifact_prefix={artifacts}/{args.target}-",
        "-print_final_stats=1",
    ]
    if args.seconds > 0:
        flags.append(f"-max_total_time={int(max(1, args.seconds))}")
    flags += [*extra, str(work), str(CORPUS / args.target)]
    atheris.Setup(flags, module.test_one_input)
    atheris.Fuzz()  # libFuzzer exits the process when done
    return 0
