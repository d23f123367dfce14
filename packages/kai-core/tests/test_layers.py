"""kai-core's layers import only downward, and the other packages use only its public modules.

Every ``import`` in the source counts, function-level ones included (a function-level import hides
a cycle, it does not remove it). See docs/writing-a-device-plugin.md, "Where things are".
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGES = Path(__file__).resolve().parents[2]
CORE = PACKAGES / "kai-core" / "src" / "kai_core"

#: layer -> the layers it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "api": set(),
    "dra": {"api"},
    "framework": {"api", "dra"},
    "plugins": {"api", "dra", "framework"},
    "scheduler": {"api", "dra", "framework"},
    # the embedded API server compiles CEL selectors on create, as the real one does
    "apiserver": {"api", "dra"},
    "client": {"api"},
    # process-wide helpers: metrics, probes, logging (message hygiene comes from api)
    "observability": {"api"},
    "runtime": set(),
}
#: modules that put the layers together or keep an old public name: they may import any layer,
#: and no layer may import them
TOP = {"cluster", "testing", "hookspecs", "snapshot", "gang", "cycle", "features", "manifests"}


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """``(line, imported module)`` for every import in ``path``, relative ones resolved."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")[: -node.level] if path.name != "__init__.py" else module.split(".")
                if path.name == "__init__.py" and node.level > 1:
                    base = base[: -(node.level - 1)]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            out.append((node.lineno, name))
            # ``from kai_core import validation`` imports the module kai_core.validation
            if name == "kai_core":
                out += [(node.lineno, f"kai_core.{a.name}") for a in node.names]
    return out


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unit(module: str) -> str | None:
    """The layer (or top-level module) of a ``kai_core`` module; None for ``kai_core`` itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def _core_modules() -> list[tuple[Path, str]]:
    return [(p, _module_name(p, CORE)) for p in sorted(CORE.rglob("*.py"))]


def test_every_kai_core_module_belongs_to_a_known_layer():
    unknown = {_unit(m) for _, m in _core_modules()} - set(ALLOWED) - TOP - {None}
    assert not unknown, f"modules outside the layers: {sorted(unknown)} (add them to a layer)"


def test_layers_import_only_downward():
    problems = []
    for path, module in _core_modules():
        unit = _unit(module)
        if unit in TOP or unit is None:
            continue
        for line, imported in _imports(path, module):
            if not imported.startswith("kai_core"):
                continue
            target = _unit(imported)
            if target is None or target == unit:
                continue
            if target in TOP:
                problems.append(f"{module}:{line} imports {imported}, a top-level module no layer may import")
            elif target not in ALLOWED[unit]:
                allowed = ", ".join(sorted(ALLOWED[unit]))
                problems.append(f"{module}:{line} imports {imported}: {unit} may import "
                                + (f"only {allowed}" if allowed else "nothing of kai_core"))
    assert not problems, "\n".join(problems)


def _no_cycle(graph: dict[str, set[str]]) -> list[str]:
    """A cycle of ``graph`` as a list of names, or []."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str]:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m):] + [m]
            if m not in state:
                found = visit(m)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return []

    for n in sorted(graph):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return []


def test_no_import_cycle_between_modules():
    modules = dict((m, p) for p, m in _core_modules())
    graph: dict[str, set[str]] = {}
    for module, path in modules.items():
        deps = set()
        for _, imported in _imports(path, module):
            # ``from kai_core.api import objects`` reaches kai_core.api.objects, not the package
            while imported and imported not in modules:
                imported = imported.rpartition(".")[0]
            if imported and imported != module and not module.startswith(imported + "."):
                deps.add(imported)
        graph[module] = deps
    cycle = _no_cycle(graph)
    assert not cycle, "import cycle: " + " -> ".join(cycle)


@pytest.mark.parametrize("package", ["kai-binder", "kai-dra-nvidia"])
def test_other_packages_use_only_public_kai_core_modules(package):
    """No private name (``kai_core.x._y`` or ``from kai_core.x import _y``) and no built-in plugin."""
    src = PACKAGES / package / "src"
    problems = []
    for path in sorted(src.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("kai_core"):
                mod = node.module or ""
                names = [a.name for a in node.names]
                if any(part.startswith("_") for part in mod.split(".")) or any(n.startswith("_") for n in names):
                    problems.append(f"{path.name}:{node.lineno} imports a private name from {mod}")
                if mod.startswith("kai_core.plugins.") or mod == "kai_core.plugins" and set(names) - {
                        "build_plugin_manager"}:
                    problems.append(f"{path.name}:{node.lineno} imports the built-in plugin {mod}")
    assert not problems, "\n".join(problems)
