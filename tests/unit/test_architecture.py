"""The layers stay layers: what each package may import, and no import cycle between modules.

Rules (docs/architecture.md draws them):
- the settings loader imports no other project package;
- the encoding core (embedder), the index and storage import no Ray, no web framework, no torch;
- the engine (scheduler, backend protocol, in-process backend) imports no Ray, no web framework,
  no torch, and not the service above it: HTTP is one front end of it, Serve another;
- service (the HTTP contract, limits, admission, error map) imports no Ray: it runs as `python -m service`;
- nothing the runtime ships imports bench/, tests/, testkit/ or export/ (export is the torch-only
  tool; testkit holds the helpers tests, bench and the GPU check share);
- the GPU check (scripts/gpu_check.py and its helpers scripts/gpu_*.py) imports no bench module:
  what it shares with the benchmarks (corpus, load driver, machine record) lives in testkit;
- jobs and deployments are adapters: the core, index, storage, engine and service never import them;
- inside jobs/, one package per job: a job imports jobs.common and itself, never another job,
  and jobs.common imports no job;
- no cycle between project modules, counting imports inside functions too (a lazy import
  that hides a cycle is still a cycle);
- no runtime module reads os.environ but settings.loader, so every setting from the environment
  goes through from_mapping and its named errors.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = (
    "settings",
    "embedder",
    "index",
    "storage",
    "engine",
    "service",
    "jobs",
    "deployments",
    "export",
    "bench",
    "testkit",
)
RAY_WEB_TORCH = ("ray", "fastapi", "starlette", "uvicorn", "torch", "transformers", "sentence_transformers")
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "settings": (*RAY_WEB_TORCH, "embedder", "index", "storage", "engine", "service", "jobs", "deployments", "export", "bench", "testkit", "tests"),
    "embedder": (*RAY_WEB_TORCH, "index", "engine", "service", "jobs", "deployments", "export", "bench", "testkit", "tests"),
    "storage": (*RAY_WEB_TORCH, "index", "engine", "service", "jobs", "deployments", "export", "bench", "testkit", "tests"),
    "index": (*RAY_WEB_TORCH, "engine", "service", "jobs", "deployments", "export", "bench", "testkit", "tests"),
    "engine": (*RAY_WEB_TORCH, "service", "jobs", "deployments", "export", "bench", "testkit", "tests"),
    "service": ("ray", "torch", "transformers", "sentence_transformers", "jobs", "deployments", "export", "bench", "testkit", "tests"),
    "jobs": ("fastapi", "starlette", "uvicorn", "torch", "deployments", "export", "bench", "testkit", "tests"),
    "deployments": ("torch", "transformers", "jobs", "export", "bench", "testkit", "tests"),
    "testkit": ("bench", "tests"),  # shared by tests and bench, so it may import neither
}  # fmt: skip


def modules() -> dict[str, Path]:
    """Dotted name -> file for every module of the project's packages."""
    if MODULES:
        return MODULES
    found = MODULES
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


MODULES: dict[str, Path] = {}


def imports_of(path: Path, name: str) -> set[str]:
    """Every module a file imports, at any depth (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            # `from pkg import sub` imports the submodule; `from mod import name` the module.
            subs = {f"{base}.{alias.name}" for alias in node.names}
            known = subs & set(MODULES)
            out.update(known or {base})
            out.update(subs - known)
    return out


def project_edges() -> dict[str, set[str]]:
    """module -> the project modules it imports."""
    mods = modules()
    return {
        name: {m for m in imports_of(path, name) if m in mods and m != name} for name, path in mods.items()
    }


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_each_layer_imports_only_what_it_may(package: str) -> None:
    bad = []
    for name, path in modules().items():
        if name.split(".")[0] != package:
            continue
        for imported in imports_of(path, name):
            top = imported.split(".")[0]
            if top in FORBIDDEN[package]:
                bad.append(f"{name} imports {imported}")
    assert not bad, "\n".join(sorted(bad))


def test_the_gpu_check_imports_no_benchmark() -> None:
    scripts = sorted((REPO / "scripts").glob("gpu_*.py"))
    assert len(scripts) >= 3  # gpu_check, gpu_goals, gpu_smi: the rule would pass vacuously otherwise
    bad = [
        f"{path.name} imports {imported}"
        for path in scripts
        for imported in imports_of(path, f"scripts.{path.stem}")
        if imported.split(".")[0] in ("bench", "tests")
    ]
    assert not bad, "\n".join(bad)


def test_no_import_cycles_between_project_modules() -> None:
    edges = project_edges()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert not cycles, "\n".join(" -> ".join(c) for c in cycles)


def test_a_job_imports_no_other_job() -> None:
    bad = []
    for name, path in modules().items():
        parts = name.split(".")
        if parts[0] != "jobs" or len(parts) < 2:
            continue
        for imported in imports_of(path, name):
            other = imported.split(".")
            if other[0] == "jobs" and len(other) > 1 and other[1] not in ("common", parts[1]):
                bad.append(f"{name} imports {imported}")
    assert not bad, "\n".join(sorted(bad))


RUNTIME = ("settings", "embedder", "index", "storage", "engine", "service", "jobs", "deployments")
# The one reader of the environment: from_mapping, whose errors name the variable that was wrong.
ENVIRONMENT_READER = "settings.loader"


def reads_environment(path: Path) -> list[int]:
    """Lines that read os.environ / os.getenv (a write such as `os.environ[k] = v` counts too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return sorted(
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and node.attr in ("environ", "getenv")
        and isinstance(node.value, ast.Name)
        and node.value.id == "os"
    )


def test_no_test_module_imports_another_test_module() -> None:
    """Shared test helpers live in testkit/ (fixtures in a folder's conftest.py), so a test module
    is never imported for its helpers and run twice or half-collected."""
    bad = []
    for path in sorted((REPO / "tests").rglob("test_*.py")):
        name = ".".join(path.relative_to(REPO).with_suffix("").parts)
        for imported in imports_of(path, name):
            if imported.startswith("tests.") and imported.rsplit(".", 1)[-1].startswith("test_"):
                bad.append(f"{name} imports {imported}")
    assert not bad, "move the helper to testkit/:\n" + "\n".join(sorted(bad))


def test_settings_come_from_the_environment_only_through_the_config_system() -> None:
    bad = [
        f"{name}:{line}"
        for name, path in modules().items()
        if name.split(".")[0] in RUNTIME and name != ENVIRONMENT_READER
        for line in reads_environment(path)
    ]
    assert not bad, "read os.environ through settings.loader.from_mapping instead: " + ", ".join(bad)
    assert reads_environment(modules()[ENVIRONMENT_READER])  # the rule would pass vacuously otherwise
