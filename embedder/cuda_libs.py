"""Do the CUDA provider's shared libraries resolve? A build-time check, run as

    python -m embedder.cuda_libs [--require-driver] [--json]

It exits 0 when onnxruntime's CUDA provider library loads (or would, once the host's NVIDIA
driver is mounted), and non-zero with one line per library that does not resolve.

Why not `onnxruntime.get_available_providers()`: it lists CUDAExecutionProvider for every
onnxruntime-gpu wheel, whether or not CUDA and cuDNN are installed; the failure then shows at
the first session (or worse, the session silently runs on the CPU). The only proof is to load
`libonnxruntime_providers_cuda.so` the way onnxruntime will: after `onnxruntime.preload_dlls()`
(which loads the pip-installed CUDA/cuDNN libraries of the `onnxruntime-gpu[cuda,cudnn]`
extras), dlopen it and every library it names (ELF DT_NEEDED), plus cuDNN, which the provider
dlopens itself at run time.

libcuda.so.1 is the NVIDIA driver's user-space library. It is not in any pip package or image:
the NVIDIA container toolkit (Docker `--gpus`, the Kubernetes device plugin) mounts the host's
copy when a container starts, and a VM image has it from the driver install. So at image build
time it is the one library allowed to be missing (reported, not fatal). `--require-driver`
(used in a GPU node's setup, where the driver is installed) makes it required and also checks
that the driver supports the CUDA major version onnxruntime was built against.

Ray-free, and standard library only (the `embedder` package it sits in imports more).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import functools
import importlib.util
import io
import json
import re
import struct
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

PROVIDER_LIB = "libonnxruntime_providers_cuda.so"
DRIVER_LIB = "libcuda.so.1"
# Loaded by the provider with dlopen at run time (not in its DT_NEEDED), so DT_NEEDED alone would
# miss it: onnxruntime-gpu 1.19+ needs cuDNN 9.
RUNTIME_DLOPENED = ("libcudnn.so.9",)
NO_CUDA_PROVIDER = "this onnxruntime build has no CUDA provider (install onnxruntime-gpu)"

# dlerror() texts from glibc (the OSError message ctypes raises), most specific first.
_DLERROR_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"^(?P<lib>[^:\s]+): cannot open shared object file: (?P<why>.+)$"),
        "not found on the library search path ({why})",
    ),
    (
        re.compile(r"^(?P<lib>[^:]+): version [`'](?P<ver>[^']+)' not found \(required by (?P<by>[^)]+)\)"),
        "lacks symbol version {ver}, which {by_name} needs (too old for it)",
    ),
    (
        re.compile(r"^(?P<lib>[^:]+): undefined symbol: (?P<sym>\S+)"),
        "undefined symbol {sym}: a library it links against has the wrong version",
    ),
    (
        re.compile(r"^(?P<lib>[^:]+): (?P<why>wrong ELF class: \S+)"),
        "{why} (32/64-bit mismatch)",
    ),
    (
        re.compile(r"^(?P<lib>[^:]+): (?P<why>invalid ELF header|file too short)"),
        "{why} (not a shared library: a Git LFS pointer or a truncated download?)",
    ),
)


@dataclass(frozen=True)
class Unresolved:
    """One library that did not load, and why (one line)."""

    library: str
    reason: str
    allowed: bool = False  # libcuda.so.1 at build time: the host mounts it at run time

    def line(self) -> str:
        """One human-readable line."""
        prefix = "allowed: " if self.allowed else "missing: "
        return f"{prefix}{self.library}: {self.reason}"


@dataclass(frozen=True)
class LibReport:
    """What the check found; `ok` decides the exit code."""

    onnxruntime: str
    package: str  # onnxruntime or onnxruntime-gpu (the two overwrite each other's files)
    cuda_build: str | None  # the CUDA version onnxruntime was built against, e.g. "13.0"
    provider_path: str | None
    needed: tuple[str, ...] = ()
    unresolved: tuple[Unresolved, ...] = ()
    preload: str = ""  # what onnxruntime.preload_dlls() printed (its own failure messages)
    driver_cuda: str | None = None  # CUDA version the installed driver supports, e.g. "13.0"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """True when the provider is there and every library it needs resolves (or is allowed)."""
        return self.provider_path is not None and not any(not u.allowed for u in self.unresolved)

    def lines(self) -> list[str]:
        """The report as printed: a verdict, then one line per unresolved library, then notes."""
        if self.provider_path is None:
            return [f"FAIL: {NO_CUDA_PROVIDER}; installed: {self.package} {self.onnxruntime}"]
        verdict = "OK" if self.ok else "FAIL"
        build = f"CUDA {self.cuda_build}" if self.cuda_build else "CUDA (version unknown)"
        head = f"{verdict}: {self.package} {self.onnxruntime} ({build}) CUDA provider libraries"
        head += " resolve" if self.ok else " do not resolve"
        return [head, *(f"  {u.line()}" for u in self.unresolved), *(f"  note: {n}" for n in self.notes)]


def parse_dlopen_error(message: str, tried: str) -> tuple[str, str]:
    """(library, one-line reason) from a ctypes OSError text; `tried` is what was being loaded."""
    text = message.strip().splitlines()[0] if message.strip() else ""
    for pattern, template in _DLERROR_PATTERNS:
        m = pattern.search(text)
        if m:
            parts = m.groupdict()
            lib = Path(parts.get("lib") or tried).name
            by_name = Path(parts["by"]).name if parts.get("by") else ""
            return lib, template.format(**parts, by_name=by_name)
    return Path(tried).name, text or "dlopen failed without a message"


def elf_needed(path: str | Path) -> list[str]:
    """DT_NEEDED entries of a 64-bit little-endian ELF shared library (what `readelf -d` lists)."""
    with open(path, "rb") as fh:
        ident = fh.read(16)
        if ident[:4] != b"\x7fELF" or ident[4] != 2 or ident[5] != 1:
            raise ValueError(f"{path}: not a 64-bit little-endian ELF file")
        fh.seek(0x28)
        (shoff,) = struct.unpack("<Q", fh.read(8))
        fh.seek(0x3A)
        shentsize, shnum = struct.unpack("<HH", fh.read(4))
        sections = []
        for i in range(shnum):
            fh.seek(shoff + i * shentsize)
            _name, sh_type, _flags, _addr, offset, size, link = struct.unpack("<IIQQQQI", fh.read(44))
            sections.append((sh_type, offset, size, link))
        sht_dynamic = 6
        dynamic = [s for s in sections if s[0] == sht_dynamic]
        if not dynamic:
            return []
        _, dyn_off, dyn_size, strtab_index = dynamic[0]
        _, str_off, str_size, _ = sections[strtab_index]
        fh.seek(str_off)
        strtab = fh.read(str_size)
        fh.seek(dyn_off)
        raw = fh.read(dyn_size)
    names = []
    dt_needed, dt_null = 1, 0
    for i in range(0, len(raw) - 15, 16):
        tag, value = struct.unpack_from("<qQ", raw, i)
        if tag == dt_null:
            break
        if tag == dt_needed:
            names.append(strtab[value : strtab.index(b"\0", value)].decode())
    return names


def _try_load(name: str) -> str | None:
    """None when `name` (a path or soname) loads with every dependency bound, else dlerror text."""
    try:
        ctypes.CDLL(name)  # ctypes adds RTLD_NOW: undefined symbols fail here, not at first call
        return None
    except OSError as exc:
        return str(exc)


def driver_cuda_version() -> str | None:
    """The CUDA version the installed driver supports ("13.0"), or None without a driver."""
    try:
        lib = ctypes.CDLL(DRIVER_LIB)
    except OSError:
        return None
    version = ctypes.c_int(0)
    if lib.cuDriverGetVersion(ctypes.byref(version)) != 0:  # needs no cuInit and no GPU
        return None
    return f"{version.value // 1000}.{version.value % 1000 // 10}"


def _package_info(package_dir: Path) -> tuple[str, str, str | None]:
    """(version, package name, CUDA build version) from onnxruntime's build_and_package_info."""
    info_file = package_dir / "capi" / "build_and_package_info.py"
    values: dict[str, str] = {}
    if info_file.exists():
        for m in re.finditer(r"^(\w+)\s*=\s*['\"]([^'\"]*)['\"]", info_file.read_text(), re.M):
            values[m.group(1)] = m.group(2)
    return (
        values.get("__version__", "unknown"),
        values.get("package_name", "onnxruntime"),
        values.get("cuda_version") or None,
    )


@functools.cache
@functools.lru_cache(maxsize=1)
def preload_cuda_libraries() -> str:
    """Run onnxruntime.preload_dlls() once per process (where this onnxruntime has it); return
    what it printed. The session factory must call this before a CUDA session: the provider has
    no RUNPATH to the pip-installed nvidia/ folders, so without it they are not found."""
    out = io.StringIO()
    try:
        import onnxruntime
    except ImportError as exc:  # a broken wheel: report, the dlopen checks below still run
        return f"import onnxruntime failed: {exc}"
    preload = getattr(onnxruntime, "preload_dlls", None)
    if preload is None:
        return "onnxruntime has no preload_dlls() (older than 1.21): relying on the library search path"
    with contextlib.redirect_stdout(out):
        try:
            # directory="": the pip-installed nvidia packages first, then the default search path
            # (a CUDA toolkit in the image); never a torch install, which has other versions.
            preload(cuda=True, cudnn=True, directory="")
        except Exception as exc:  # it raises on a bad directory; report and go on checking
            print(f"preload_dlls() raised {type(exc).__name__}: {exc}")
    return out.getvalue().strip()


def check(
    package_dir: Path | None = None,
    require_driver: bool = False,
    preload: bool = True,
    runtime_libs: Sequence[str] = RUNTIME_DLOPENED,
) -> LibReport:
    """Load the CUDA provider library and everything it needs; report what does not resolve."""
    if package_dir is None:
        spec = importlib.util.find_spec("onnxruntime")
        if spec is None or not spec.submodule_search_locations:
            return LibReport("not installed", "onnxruntime", None, None)
        package_dir = Path(next(iter(spec.submodule_search_locations)))
    version, package, cuda_build = _package_info(package_dir)
    provider = package_dir / "capi" / PROVIDER_LIB
    if not provider.exists():
        return LibReport(version, package, cuda_build, None)
    printed = preload_cuda_libraries() if preload else ""
    needed = tuple(elf_needed(provider))
    problems: dict[str, Unresolved] = {}

    def record(name: str, error: str) -> None:
        lib, reason = parse_dlopen_error(error, name)
        allowed = lib == DRIVER_LIB and not require_driver
        if allowed:
            reason = "the NVIDIA driver's library; the container toolkit mounts it from the host at run time"
        problems.setdefault(lib, Unresolved(lib, reason, allowed))

    # Each dependency on its own first, so every missing one is named (dlopen stops at the first).
    for name in (*needed, *runtime_libs):
        error = _try_load(name)
        if error:
            record(name, error)
    error = _try_load(str(provider))
    if error:
        record(str(provider), error)
    notes: list[str] = []
    driver = driver_cuda_version()
    if driver is None and not require_driver:
        notes.append(f"no NVIDIA driver here ({DRIVER_LIB} not loadable): fine while building an image")
    elif driver is not None and cuda_build and int(driver.split(".")[0]) < int(cuda_build.split(".")[0]):
        problems[DRIVER_LIB] = Unresolved(
            DRIVER_LIB,
            f"the driver supports CUDA {driver}, onnxruntime needs CUDA {cuda_build} (update the driver)",
        )
    return LibReport(version, package, cuda_build, str(provider), needed, tuple(problems.values()),
                     printed, driver, tuple(notes))  # fmt: skip


def main(argv: Sequence[str] | None = None) -> int:
    """Print the report; exit 1 when a library the CUDA provider needs does not resolve."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--require-driver",
        action="store_true",
        help=f"{DRIVER_LIB} must load and support onnxruntime's CUDA major (on a GPU node, not at build)",
    )
    p.add_argument(
        "--no-preload",
        action="store_true",
        help="skip onnxruntime.preload_dlls(): check what the plain library search path provides",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    args = p.parse_args(argv)
    report = check(require_driver=args.require_driver, preload=not args.no_preload)
    if args.json:
        print(json.dumps({**asdict(report), "ok": report.ok}, indent=2))
    else:
        print("\n".join(report.lines()))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
