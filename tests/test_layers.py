"""The layers' import rules, read from the source with ``ast`` (nothing is imported).

::

    runtime/  pixlm.runtime.*   imports nothing of pixlm outside itself but the root's __version__
       ^
    sdk/      pixlm.*           may import the runtime, never the export
       ^
    export/   pixlm.export.*    may import both

and no module reaches itself through its imports (no cycles). Every import statement counts:
module level, inside a function (lazy), under ``if TYPE_CHECKING``; so does
``importlib.import_module("literal")``. Folders map to import names as pyproject.toml's
``package-dir`` maps them.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[1]
RUNTIME, EXPORT = "pixlm.runtime", "pixlm.export"


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (the longest known module the statement names)
    names: tuple[str, ...]  # for ``from X import a, b``: a, b; else ()
    where: str  # file:line

    def __str__(self) -> str:
        names = f" ({', '.join(self.names)})" if self.names else ""
        return f"{self.where}: {self.source} -> {self.target}{names}"


def _in(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def modules() -> dict[str, Path]:
    """Import name -> file, for every .py file under the folders pyproject.toml maps."""
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found: dict[str, Path] = {}
    for package, folder in setuptools["package-dir"].items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            parts = path.relative_to(ROOT / folder).with_suffix("").parts
            if "__pycache__" in parts:
                continue
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
    return found


MODULES = modules()


def _package_of(module: str) -> str:
    return module if MODULES[module].name == "__init__.py" else module.rpartition(".")[0]


def _known(name: str) -> str | None:
    """The longest prefix of a dotted name that is one of our modules."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> list[Import]:
    """Every import of one of our modules by ``module``, wherever it stands in the file."""
    path = MODULES[module]
    where = lambda node: f"{path.relative_to(ROOT)}:{node.lineno}"  # noqa: E731
    out: list[Import] = []

    def add(name: str, names: tuple[str, ...], node: ast.AST) -> None:
        target = _known(name)
        if target is not None:
            out.append(Import(module, target, names, where(node)))

    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name, (), node)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the importing module's package, up level - 1
                package = _package_of(module).split(".")
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                # `from pixlm.runtime import manifest` imports the module pixlm.runtime.manifest
                sub = f"{base}.{alias.name}"
                add(sub if sub in MODULES else base, () if sub in MODULES else (alias.name,), node)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and (node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            add(node.args[0].value, (), node)
    return out


ALL = [imp for module in sorted(MODULES) for imp in imports_of(module)]


def test_the_parser_sees_every_kind_of_import():
    """Guards the rules below against passing because nothing was found."""
    assert {"pixlm", RUNTIME, EXPORT, "pixlm.studies", "pixlm.runtime.outputs"} <= set(MODULES)
    edges = {(i.source, i.target) for i in ALL}
    assert ("pixlm.export.pipeline", "pixlm.runtime.manifest") in edges  # from a package import a module
    assert ("pixlm.runtime.cli", "pixlm.runtime.stream") in edges  # lazy, inside a function
    assert ("pixlm", RUNTIME) in edges  # importlib.import_module("pixlm.runtime")
    assert ("pixlm.runtime.outputs.mqtt", "pixlm.runtime.outputs.delivery") in edges  # a subpackage


def test_the_runtime_imports_only_itself_and_the_version():
    """The camera box installs the runtime without torch: nothing of the sdk or the export may load
    with it. The package root (sdk/__init__.py) is the one exception, for ``__version__``."""
    bad = [
        i
        for i in ALL
        if _in(i.source, RUNTIME)
        and not _in(i.target, RUNTIME)
        and not (i.target == "pixlm" and set(i.names) <= {"__version__"} and i.names)
    ]
    assert not bad, "the runtime imports outside itself:\n" + "\n".join(map(str, bad))


def test_the_runtime_never_imports_torch():
    bad = []
    for module, path in MODULES.items():
        if not _in(module, RUNTIME):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and not node.level:
                names = [node.module or ""]
            torch = [n for n in names if n.split(".")[0] == "torch"]
            bad += [f"{path.relative_to(ROOT)}:{node.lineno}: {n}" for n in torch]
    assert not bad, "\n".join(bad)


def test_the_sdk_never_imports_the_export():
    sdk = [i for i in ALL if not _in(i.source, RUNTIME) and not _in(i.source, EXPORT)]
    bad = [i for i in sdk if _in(i.target, EXPORT)]
    assert not bad, "the sdk imports the export layer:\n" + "\n".join(map(str, bad))


def test_the_package_root_is_tiny_and_torch_free():
    """``import pixlm`` (sdk/__init__.py) runs before any runtime module: at module level it may
    import only the standard library; the runtime's classes load on first access."""
    tree = ast.parse(MODULES["pixlm"].read_text())
    top = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    names = {a.name.split(".")[0] for n in top if isinstance(n, ast.Import) for a in n.names}
    names |= {(n.module or "").split(".")[0] for n in top if isinstance(n, ast.ImportFrom)}
    assert names and names <= sys.stdlib_module_names, names - sys.stdlib_module_names
    assert {i.target for i in ALL if i.source == "pixlm"} <= {RUNTIME}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module, or of one that imports itself
    (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(edges):
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
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
                if len(component) > 1 or node in edges.get(node, ()):
                    found.append(sorted(component))
    return found


def test_cycles_finds_a_cycle_and_a_self_import():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}, "b": set()}) == [["a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    edges: dict[str, set[str]] = {m: set() for m in MODULES}
    for i in ALL:
        edges[i.source].add(i.target)
    found = cycles(edges)
    lines = []
    for component in found:
        lines.append(" <-> ".join(component))
        lines += [f"    {i}" for i in ALL if i.source in component and i.target in component]
    assert not found, "import cycles:\n" + "\n".join(lines)
