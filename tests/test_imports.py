"""Who may import whom: the roles meet only in mgs_core, and no module imports itself round a cycle.

The rules (docs/architecture.md explains them):
- mgs_core imports no role;
- device, server and models import mgs_core and not each other;
- export (the toolchain) imports models (what it trains) and the device's scoring modules, because it
  evaluates exactly what the device runs;
- server imports export only through export.synth.demo, the demo's rack video.

The imports are read from the source with `ast`, nothing is imported, so a broken or heavy module
cannot hide an edge. Imports inside functions and under TYPE_CHECKING count like any other, and so
does the module a CLI names for a subcommand (`Command("run", "device.commands.run", ...)`).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("mgs_core", "device", "server", "export", "models")
DEVICE_SCORING = {
    "device.pipeline",
    "device.eyes",
    "device.inference",
    "device.rois",
    "device.results",
    "device.model_store",  # the model-set self-test, computed by the same code when packaged and on the device
}
DEMO_ENTRY = "export.synth.demo"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def product_modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imported_names(path: Path, module: str) -> set[str]:
    """Every dotted name the file imports, relative imports resolved; `from a import b` yields a.b and a."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "Command"
            and len(node.args) > 1
            and isinstance(node.args[1], ast.Constant)
        ):
            names.add(node.args[1].value)  # a CLI subcommand, imported by name when it runs
    return names


def graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Edges between product modules: an imported name counts as its longest prefix that is a module."""
    edges: dict[str, set[str]] = {}
    for module, path in modules.items():
        targets = set()
        for name in imported_names(path, module):
            parts = name.split(".")
            for n in range(len(parts), 0, -1):
                candidate = ".".join(parts[:n])
                if candidate in modules:
                    if candidate != module:
                        targets.add(candidate)
                    break
        edges[module] = targets
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def allowed(source: str, target: str) -> bool:
    src, dst = source.split(".")[0], target.split(".")[0]
    if src == dst or dst == "mgs_core":
        return True
    if src == "export":
        return dst == "models" or target in DEVICE_SCORING
    if src == "server":
        return target == DEMO_ENTRY
    return False


def forbidden(edges: dict[str, set[str]]) -> list[str]:
    return sorted(f"{s} -> {t}" for s, targets in edges.items() for t in targets if not allowed(s, t))


@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    return graph(product_modules())


def test_every_package_is_walked(edges: dict[str, set[str]]) -> None:
    assert {"mgs_core.messages", "device.runner", "server.app", "export.cli", "models.unet"} <= set(edges)
    assert "mgs_core.errors" in edges["device.runner"]
    assert "device.commands.run" in edges["device.cli"]


def test_no_import_cycle(edges: dict[str, set[str]]) -> None:
    assert cycles(edges) == []


def test_roles_meet_only_in_mgs_core(edges: dict[str, set[str]]) -> None:
    assert forbidden(edges) == []


def test_the_device_and_the_core_never_need_torch(edges: dict[str, set[str]]) -> None:
    modules = product_modules()
    heavy = [
        m
        for m in modules
        if m.split(".")[0] in ("device", "mgs_core")
        and any(n.split(".")[0] == "torch" for n in imported_names(modules[m], m))
    ]
    assert heavy == []


def test_the_wire_contract_is_standard_library_only() -> None:
    path = ROOT / "mgs_core" / "messages.py"
    outside = {n.split(".")[0] for n in imported_names(path, "mgs_core.messages")}
    outside -= set(sys.stdlib_module_names) | {"__future__", "mgs_core"}
    assert outside == set()


def test_the_checks_catch_a_cycle_and_a_forbidden_import() -> None:
    """The walker itself: a made-up graph with one cycle and two imports across roles."""
    made_up = {
        "device.a": {"device.b", "mgs_core.errors"},
        "device.b": {"device.a", "server.app"},
        "server.app": {"export.synth.video"},
        "mgs_core.errors": set(),
        "export.synth.video": set(),
    }
    assert cycles(made_up) == [["device.a", "device.b"]]
    assert forbidden(made_up) == ["device.b -> server.app", "server.app -> export.synth.video"]


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("from . import sub\n")
    (pkg / "mod.py").write_text("from .sub import thing\n")
    assert imported_names(pkg / "__init__.py", "pkg") == {"pkg", "pkg.sub"}
    assert imported_names(pkg / "mod.py", "pkg.mod") == {"pkg.sub", "pkg.sub.thing"}
