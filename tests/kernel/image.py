"""The guest's boot files: Debian's kernel as an uncompressed vmlinux, and a small initramfs.

`scripts/setup.sh` downloads (never installs) Debian's `linux-image-6.1.0-N-amd64` and
`busybox-static` and unpacks them under `.cache/kernel/`; this module turns them into

* `.cache/kernel/build/vmlinux` — the ELF kernel inside the bzImage's XZ payload, which QEMU
  boots through the PVH entry point in about 3 s instead of the bzImage's 7–11 s under TCG;
* `.cache/kernel/build/initramfs.cpio` — busybox, `guest_init.sh` as `/init`, the host's own
  `wg`, `ip` (iproute2; busybox's cannot make a WireGuard link), `ping` (iputils: `-M do`),
  `ncat` (Debian's busybox nc has no UDP) and `dash` (as `/bin/sh`) with the libraries `ldd`
  names, and the modules WireGuard, virtio and 9p need with a `modules.dep` made by busybox's
  `depmod`.

Builds are skipped when nothing they depend on changed (a fingerprint of the inputs).
`python -m tests.kernel.image` builds and prints the paths; the test fixtures call `build()`
too, so an edited init script takes effect without re-running setup.
"""

from __future__ import annotations

import hashlib
import io
import lzma
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from tests.kernel import cpio

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
CACHE_DIR: Final = REPO_ROOT / ".cache" / "kernel"
BUILD_DIR: Final = CACHE_DIR / "build"
INIT_SCRIPT: Final = Path(__file__).with_name("guest_init.sh")

GUEST_MODULES: Final = (
    "virtio_pci",
    "virtio_console",
    "virtio_net",
    "wireguard",
    "9pnet_virtio",
    "9p",
)
"""Loaded by /init in this order (modprobe brings their dependencies)."""

HOST_PROGRAMS: Final = (
    "/usr/bin/dash",
    "/usr/bin/wg",
    "/usr/sbin/ip",
    "/usr/bin/ping",
    "/usr/bin/ncat",
)
"""The host's programs copied into the guest at the same paths, with their libraries."""

SHADOWED_APPLETS: Final = frozenset({"busybox", "sh", "ip", "ping", "ping6"})
"""Not linked to busybox: busybox itself, and the applets whose real programs (or dash as
/bin/sh) the guest has."""

XZ_MAGIC: Final = b"\xfd7zXZ\x00"
ELF_MAGIC: Final = b"\x7fELF"
SETUP_HINT: Final = "run `sudo bash scripts/setup.sh` to fetch Debian's kernel and busybox"


class MissingParts(RuntimeError):
    """The downloaded packages or host programs the guest is built from are not there."""


@dataclass(frozen=True)
class BootFiles:
    """What QEMU boots: `-kernel vmlinux -initrd initramfs`."""

    vmlinux: Path
    initramfs: Path
    release: str
    """`uname -r` of the guest kernel, e.g. 6.1.0-57-amd64."""


# ---------------------------------------------------------------------------------------------
# the unpacked packages


def kernel_package_dir() -> Path:
    """The unpacked linux-image package named in `.cache/kernel/kernel-package`."""
    name_file = CACHE_DIR / "kernel-package"
    try:
        name = name_file.read_text().strip()
    except FileNotFoundError:
        raise MissingParts(f"{name_file} does not exist; {SETUP_HINT}") from None
    tree = CACHE_DIR / name
    if not (tree / ".unpacked").exists():
        raise MissingParts(f"{tree} is not unpacked; {SETUP_HINT}")
    return tree


def kernel_release(tree: Path) -> str:
    """The release (module directory name) of the unpacked kernel package."""
    releases = sorted(p.name for p in (tree / "lib" / "modules").iterdir() if p.is_dir())
    if len(releases) != 1:
        raise MissingParts(f"expected one module directory in {tree}, found {releases}")
    return releases[0]


def busybox_binary() -> Path:
    path = CACHE_DIR / "busybox-static" / "bin" / "busybox"
    if not path.exists():
        raise MissingParts(f"{path} does not exist; {SETUP_HINT}")
    return path


# ---------------------------------------------------------------------------------------------
# vmlinux


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel compressed inside a bzImage (Debian's kernels use XZ).

    The payload starts at the first XZ stream header; what follows the stream is ignored.
    """
    start = bzimage.find(XZ_MAGIC)
    while start >= 0:
        decompressor = lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
        try:
            elf = decompressor.decompress(bzimage[start:])
        except lzma.LZMAError:
            elf = b""
        if decompressor.eof and elf.startswith(ELF_MAGIC):
            return elf
        start = bzimage.find(XZ_MAGIC, start + 1)
    raise MissingParts("no XZ-compressed ELF kernel found in the bzImage")


# ---------------------------------------------------------------------------------------------
# modules


def run_depmod(busybox: Path, base: Path, release: str) -> None:
    """Write `base/lib/modules/RELEASE/modules.dep` with busybox's depmod."""
    subprocess.run(
        [str(busybox), "depmod", "-b", str(base), release],
        check=True,
        capture_output=True,
    )


def parse_modules_dep(text: str) -> dict[str, list[str]]:
    """`modules.dep` as {module path: [paths of the modules it needs, all of them]}."""
    deps: dict[str, list[str]] = {}
    for line in text.splitlines():
        path, sep, needs = line.partition(":")
        if sep:
            deps[path.strip()] = needs.split()
    return deps


def module_name(path: str) -> str:
    """`kernel/net/9p/9pnet_virtio.ko` -> `9pnet_virtio` (modprobe treats - and _ alike)."""
    return Path(path).name.removesuffix(".ko").replace("-", "_")


def module_closure(deps: dict[str, list[str]], names: tuple[str, ...]) -> list[str]:
    """Paths of the modules `names` and everything they need (modules.dep lists it all)."""
    by_name = {module_name(path): path for path in deps}
    missing = [name for name in names if name not in by_name]
    if missing:
        raise MissingParts(f"modules not in the kernel package: {', '.join(missing)}")
    wanted: set[str] = set()
    for name in names:
        path = by_name[name]
        wanted.add(path)
        wanted.update(deps[path])
    return sorted(wanted)


# ---------------------------------------------------------------------------------------------
# host programs


LDD_PATH: Final = re.compile(r"(?:=>\s*)?(/\S+)\s+\(0x[0-9a-f]+\)")


def shared_libraries(program: str) -> list[str]:
    """The absolute paths `ldd` gives for the libraries of `program` (and the loader)."""
    out = subprocess.run(["ldd", program], check=True, capture_output=True, text=True).stdout
    return [m.group(1) for m in map(LDD_PATH.search, out.splitlines()) if m]


def host_files() -> list[str]:
    """HOST_PROGRAMS and their libraries, each once."""
    missing = [p for p in HOST_PROGRAMS if not os.access(p, os.X_OK)]
    if missing:
        raise MissingParts(f"host programs missing: {', '.join(missing)}; {SETUP_HINT}")
    files: dict[str, None] = {}
    for program in HOST_PROGRAMS:
        files[program] = None
        files.update(dict.fromkeys(shared_libraries(program)))
    return list(files)


def busybox_applets(busybox: Path) -> list[str]:
    """Where busybox's applets go ("usr/bin/nc", ...), minus the shadowed ones."""
    out = subprocess.run(
        [str(busybox), "--list-full"], check=True, capture_output=True, text=True
    ).stdout
    return [p for p in out.split() if Path(p).name not in SHADOWED_APPLETS]


# ---------------------------------------------------------------------------------------------
# the initramfs


class _Tree:
    """Archive entries, with every parent directory added once before its contents."""

    def __init__(self) -> None:
        self.entries: list[cpio.Entry] = []
        self._dirs: set[str] = set()

    def _parents(self, path: str) -> None:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            directory = "/".join(parts[:i])
            if directory not in self._dirs:
                self._dirs.add(directory)
                self.entries.append(cpio.Entry.directory(directory))

    def add(self, entry: cpio.Entry) -> None:
        self._parents(entry.path)
        if stat.S_ISDIR(entry.mode):
            if entry.path in self._dirs:
                return
            self._dirs.add(entry.path)
        self.entries.append(entry)

    def copy(self, host_path: str, perm: int = 0o755) -> None:
        """The host file (symbolic links followed) at the same path in the archive."""
        self.add(cpio.Entry.file(host_path.lstrip("/"), Path(host_path).read_bytes(), perm))


def initramfs_entries(
    busybox: Path, module_root: Path, release: str, modules: list[str]
) -> list[cpio.Entry]:
    """Everything in the guest's root file system, parents first."""
    tree = _Tree()
    for directory in ("dev", "proc", "sys", "tmp", "run", "root", "host", "etc"):
        tree.add(cpio.Entry.directory(directory))
    tree.add(cpio.Entry.char_device("dev/console", 5, 1))
    tree.add(cpio.Entry.file("init", INIT_SCRIPT.read_bytes(), 0o755))
    tree.add(cpio.Entry.file("etc/wgpy-modules", "\n".join(GUEST_MODULES).encode() + b"\n"))
    tree.add(cpio.Entry.file("bin/busybox", busybox.read_bytes(), 0o755))
    for applet in busybox_applets(busybox):
        tree.add(cpio.Entry.symlink(applet, "/bin/busybox"))
    for path in host_files():
        tree.copy(path)
    tree.add(cpio.Entry.symlink("bin/sh", "/usr/bin/dash"))
    modules_dir = f"lib/modules/{release}"
    for name in ("modules.dep", "modules.builtin", "modules.order"):
        source = module_root / modules_dir / name
        if source.exists():
            tree.add(cpio.Entry.file(f"{modules_dir}/{name}", source.read_bytes()))
    for module in modules:
        data = (module_root / modules_dir / module).read_bytes()
        tree.add(cpio.Entry.file(f"{modules_dir}/{module}", data))
    return tree.entries


def staged_modules(busybox: Path, kernel_tree: Path, release: str, stage: Path) -> list[str]:
    """Copy the modules the guest needs under `stage` and write their own modules.dep there."""
    full_dep = kernel_tree / "lib" / "modules" / release / "modules.dep"
    if not full_dep.exists():
        run_depmod(busybox, kernel_tree, release)
    modules = module_closure(parse_modules_dep(full_dep.read_text()), GUEST_MODULES)
    source_dir = kernel_tree / "lib" / "modules" / release
    target_dir = stage / "lib" / "modules" / release
    for module in modules:
        (target_dir / module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source_dir / module, target_dir / module)
    for name in ("modules.builtin", "modules.order"):
        shutil.copyfile(source_dir / name, target_dir / name)
    run_depmod(busybox, stage, release)
    return modules


# ---------------------------------------------------------------------------------------------
# build


def fingerprint(kernel_tree: Path, busybox: Path) -> str:
    """A hash of every input of the build: package names, host programs, the init script and
    the builder itself."""
    digest = hashlib.sha256()
    digest.update(kernel_tree.name.encode())
    digest.update(str(busybox.stat().st_size).encode())
    for path in (*HOST_PROGRAMS, str(INIT_SCRIPT), __file__, cpio.__file__):
        digest.update(path.encode() + b"\0" + Path(path).read_bytes())
    return digest.hexdigest()


def _write_atomically(path: Path, data: bytes) -> None:
    """Readers (another test run) see the old file or the new one, never a part."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def build() -> BootFiles:
    """Build (or find up to date) the vmlinux and the initramfs; raise MissingParts if the
    downloaded packages are not there."""
    kernel_tree = kernel_package_dir()
    busybox = busybox_binary()
    release = kernel_release(kernel_tree)
    files = BootFiles(BUILD_DIR / "vmlinux", BUILD_DIR / "initramfs.cpio", release)
    stamp = BUILD_DIR / "fingerprint"
    want = fingerprint(kernel_tree, busybox)
    have = stamp.read_text().strip() if stamp.exists() else None
    if want == have and files.vmlinux.exists() and files.initramfs.exists():
        return files
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    bzimage = (kernel_tree / "boot" / f"vmlinuz-{release}").read_bytes()
    _write_atomically(files.vmlinux, extract_vmlinux(bzimage))
    with tempfile.TemporaryDirectory(prefix="wgpy-initramfs-") as stage_name:
        stage = Path(stage_name)
        modules = staged_modules(busybox, kernel_tree, release, stage)
        archive = io.BytesIO()
        cpio.write(archive, initramfs_entries(busybox, stage, release, modules))
    _write_atomically(files.initramfs, archive.getvalue())
    stamp.write_text(want + "\n")
    return files


def main() -> int:
    try:
        files = build()
    except MissingParts as exc:
        print(f"tests.kernel.image: {exc}", file=sys.stderr)
        return 1
    print(f"kernel {files.release}\nvmlinux {files.vmlinux}\ninitramfs {files.initramfs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
