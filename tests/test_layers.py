"""The import graph of src/cifarlab (every import, function-level ones included, parsed with ``ast``): layers
only import downwards, modules form no cycle, and ``cifarlab --help`` imports no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
# bottom to top; a module may import its own layer, lower layers and the bottom modules
LAYERS = ["data", "models", "engine", "experiments", "analysis", "report", "commands", "api"]
BOTTOM = {"cifarlab", "cifarlab.errors", "cifarlab.io", "cifarlab.config", "cifarlab.plotting", "cifarlab.manifest",
          "cifarlab.registry", "cifarlab.stats", "cifarlab.version"}
# No exception: the config schema declares the engine's component names and keys (config.LOSS_KEYS, ...), so it
# checks them without importing the engine. A new exception must be listed here, with its reason.
# One exception: the package's lazy facade, ``cifarlab.__getattr__`` loading the public API (``cifarlab.api``, the
# top layer) on first use, so ``from cifarlab import train`` works and ``import cifarlab`` stays torch-free.
KNOWN_VIOLATIONS: set[tuple[str, str]] = {("cifarlab", "cifarlab.api")}
KNOWN_CYCLES: set[frozenset[str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    """Module -> the cifarlab modules it imports (``from a import b`` counts as ``a.b`` when that is a module)."""
    files = {module_name(p): p for p in (SRC / "cifarlab").rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    pkg = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
                subs = {f"{base}.{a.name}" for a in node.names} & files.keys()
                found |= subs or {base}
        graph[mod] = {m for m in found if m == "cifarlab" or m.startswith("cifarlab.")}
    return graph


def layer(mod: str) -> int | None:
    """Index in LAYERS; None for the bottom modules; cifarlab.cli is the command layer."""
    if mod in BOTTOM:
        return None
    if mod == "cifarlab.cli":
        return LAYERS.index("commands")
    return LAYERS.index(mod.split(".")[1])


def test_every_module_has_a_layer():
    for mod in imports():
        assert mod in BOTTOM or mod == "cifarlab.cli" or mod.split(".")[1] in LAYERS, f"{mod}: add it to a layer"


def test_imports_only_go_down():
    upward = set()
    for mod, targets in imports().items():
        for target in targets:
            if mod in BOTTOM:
                if target not in BOTTOM:
                    upward.add((mod, target))
            elif layer(target) is not None and layer(target) > layer(mod):
                upward.add((mod, target))
    assert upward - KNOWN_VIOLATIONS == set(), "upward imports"
    assert KNOWN_VIOLATIONS - upward == set(), "fixed: remove from KNOWN_VIOLATIONS"
    assert imports()["cifarlab.io"] <= {"cifarlab.errors"}  # io is the floor


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected components of more than one module (Tarjan): each holds an import cycle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found = set()

    def visit(mod: str) -> None:
        index[mod] = low[mod] = len(index)
        stack.append(mod)
        for nxt in graph.get(mod, ()):
            if nxt not in index:
                visit(nxt)
                low[mod] = min(low[mod], low[nxt])
            elif nxt in stack:
                low[mod] = min(low[mod], index[nxt])
        if low[mod] == index[mod]:
            component = {stack.pop()}
            while mod not in component:
                component.add(stack.pop())
            if len(component) > 1:
                found.add(frozenset(component))

    for mod in sorted(graph):
        if mod not in index:
            visit(mod)
    return found


def test_no_import_cycle():
    found = cycles(imports())
    assert found - KNOWN_CYCLES == set(), "import cycles"
    assert KNOWN_CYCLES - found == set(), "fixed: remove from KNOWN_CYCLES"


def test_help_imports_no_heavy_module():
    code = ("import sys, contextlib, io\n"
            "from cifarlab.cli import build_parser, main\n"
            "for argv in (['--help'], ['train', '--help'], ['sweep', '--help'], ['explain', '--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "        main(argv)\n"
            "heavy = sorted(m for m in ('torch', 'numpy', 'matplotlib') if m in sys.modules)\n"
            "assert not heavy, heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(SRC), "PATH": ""})
    assert result.returncode == 0, result.stderr
