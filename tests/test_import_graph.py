"""No import cycle among msa_hf's modules, counting imports inside functions too.

A function-level import hides a cycle from Python (it runs later) but not from a reader or a
refactoring: the package is layered (sources below hub, model_card and retrieval), and this
check keeps it so. Names that a package resolves lazily (``_LAZY`` tables, see
:mod:`msa_hf.lazy_imports`) count as imports of the module that defines them.
"""

from __future__ import annotations

import ast
from pathlib import Path

import msa_hf

PACKAGE_ROOT = Path(msa_hf.__file__).resolve().parent


def module_files(root: Path) -> dict[str, tuple[Path, bool]]:
    """``{dotted module name: (file, is_package)}`` for every ``.py`` file under ``root``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        modules[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return modules


def absolute(module: str, package: str) -> str:
    """``module`` as written in an import or a ``_LAZY`` table, made absolute from ``package``."""
    level = len(module) - len(module.lstrip("."))
    if not level:
        return module
    base = package.split(".")[: len(package.split(".")) - level + 1]
    return ".".join([*base, module[level:]] if module[level:] else base)


def lazy_table(tree: ast.Module, package: str) -> dict[str, str]:
    """A package's ``_LAZY = {name: module}`` table, modules made absolute."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "_LAZY" for t in node.targets):
            return {name: absolute(module, package) for name, module in ast.literal_eval(node.value).items()}
    return {}


def import_graph(root: Path) -> dict[str, set[str]]:
    """``{module: modules it imports}`` among the modules under ``root``, wherever the import statement is."""
    modules = module_files(root)
    trees = {name: ast.parse(path.read_text(encoding="utf-8")) for name, (path, _) in modules.items()}
    lazy = {name: lazy_table(trees[name], name) for name, (_, is_package) in modules.items() if is_package}
    graph: dict[str, set[str]] = {}
    for name, (_, is_package) in modules.items():
        package = name if is_package else name.rsplit(".", 1)[0]
        targets: set[str] = set()
        for node in ast.walk(trees[name]):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                source = absolute("." * node.level + (node.module or ""), package)
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    if submodule in modules:
                        targets.add(submodule)
                    else:
                        targets.add(lazy.get(source, {}).get(alias.name, source))
        graph[name] = {target for target in targets if target in modules and target != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or ``None``."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_msa_hf_has_no_import_cycle():
    graph = import_graph(PACKAGE_ROOT)
    assert "msa_hf.sources" in graph["msa_hf.hub"]  # the graph sees imports (function-level ones too)
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_check_finds_a_cycle_hidden_in_a_function(tmp_path):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text('_LAZY = {"Thing": ".b"}\n')
    (package / "a.py").write_text("def load():\n    from pkg import Thing\n    return Thing\n")
    (package / "b.py").write_text("from .a import load\n\nThing = load\n")
    assert find_cycle(import_graph(package)) == ["pkg.a", "pkg.b", "pkg.a"]


def test_sources_imports_none_of_the_modules_above_it():
    graph = import_graph(PACKAGE_ROOT)
    reachable, queue = set(), ["msa_hf.sources"]
    while queue:
        for target in graph[queue.pop()] - reachable:
            reachable.add(target)
            queue.append(target)
    assert not reachable & {"msa_hf.hub", "msa_hf.model_card", "msa_hf.retrieval.encoding"}, sorted(reachable)
