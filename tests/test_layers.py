"""The layer order of the packages, read from the source with `ast` (every import, also those inside
functions, which are how an upward dependency usually sneaks in):

    lite  <  export  <  eval  <  compress  <  the CLI (lite.cli, lite.__main__)

A module may import its own layer or lower ones, never a higher one, and no set of modules imports
itself in a circle. The CLI is the top layer although it lives in lite/: it is the only module that
sees every stage, and it imports them inside its handlers so `lite translate --model` runs without
torch.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lite", "export", "eval", "compress")
# lowest first; the command line (`lite`, `python -m lite`) is the top layer
LAYERS = (("lite",), ("export",), ("eval",), ("compress",), ("lite.cli", "lite.__main__"))
NAMES = ("lite", "export", "eval", "compress", "cli")


def layer_of(module: str) -> int:
    """Index in LAYERS of the layer whose most specific prefix matches `module`."""
    prefixes = [
        (len(p), i) for i, layer in enumerate(LAYERS) for p in layer if module == p or module.startswith(p + ".")
    ]
    return max(prefixes)[1]


def modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted name -> file for every module of the four packages."""
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(name: str, path: Path, known: dict[str, Path]) -> list[tuple[str, int]]:
    """(imported project module, line) for every import statement in the file, at any depth."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            # `from pkg import module` imports the module; `from module import name` the module itself
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import lite.metrics.macs` names the module itself
                target = target.rpartition(".")[0]
            if target and target.split(".")[0] in PACKAGES:
                found.append((target, node.lineno))
    return found


def graph(root: Path = ROOT) -> dict[str, list[tuple[str, int]]]:
    known = modules(root)
    return {name: imports(name, path, known) for name, path in known.items()}


def upward_imports(edges: dict[str, list[tuple[str, int]]]) -> list[str]:
    return [
        f"{src} (line {line}) imports {dst}: {NAMES[layer_of(src)]} is below {NAMES[layer_of(dst)]}"
        for src, targets in edges.items()
        for dst, line in targets
        if layer_of(dst) > layer_of(src)
    ]


def cycles(edges: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan's algorithm, iterative).

    A package's __init__ importing its own submodules is not a cycle for this purpose: importing
    `pkg.mod` runs `pkg/__init__.py` first by Python's rules, so those edges are left out."""
    succ = {
        src: sorted({dst for dst, _ in targets if not (src.startswith(dst + ".") or dst == src)})
        for src, targets in edges.items()
    }
    index, low, on_stack, stack, found, counter = {}, {}, set(), [], [], [0]

    def visit(start: str) -> None:
        work = [(start, iter(succ[start]))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter[0]
                    counter[0] += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(succ[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for name in succ:
        if name not in index:
            visit(name)
    return found


def test_no_module_imports_a_higher_layer():
    assert upward_imports(graph()) == []


def test_no_import_cycles():
    assert cycles(graph()) == []


def test_the_checks_see_function_local_imports(tmp_path):
    """The checker itself: an upward import inside a function and a two-module cycle are both found."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / "lite" / "cli").mkdir()
    (tmp_path / "lite" / "cli" / "__init__.py").write_text("")
    (tmp_path / "lite" / "a.py").write_text("def f():\n    from export import b\n    return b\n")
    (tmp_path / "export" / "b.py").write_text("from export.c import x\n")
    (tmp_path / "export" / "c.py").write_text("def g():\n    from .b import y\n")
    (tmp_path / "lite" / "cli" / "main.py").write_text("import compress\nfrom eval import report\n")
    edges = graph(tmp_path)
    assert upward_imports(edges) == ["lite.a (line 2) imports export.b: lite is below export"]
    assert cycles(edges) == [["export.b", "export.c"]]


@pytest.mark.parametrize(
    "module, layer",
    [
        ("lite.models.seq2seq", "lite"),
        ("lite.cli.train", "cli"),
        ("lite.__main__", "cli"),
        ("eval.targets.qemu", "eval"),
    ],
)
def test_layer_of(module, layer):
    assert NAMES[layer_of(module)] == layer
