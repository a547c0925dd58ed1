"""Static import closure of an entry point, to check that a DVC stage's ``deps`` cover its code.

Everything here reads source with :mod:`ast`; nothing is imported or executed. The closure of an
entry-point file is every project file it reaches through ``import`` / ``from ... import``
statements anywhere in a module (module level and inside functions, so lazy imports count), plus the
``__init__.py`` of every package on the way. Imports under ``if TYPE_CHECKING:`` are skipped (they
never run). Only modules of the project packages (by default ``confkd``, ``stages``, ``flows``) are
followed.

Dispatch modules such as ``confkd/pipeline.py`` import every stage's code inside its own ``run_*``
function. For those, ``focus`` names the functions to follow: the module-level imports are followed,
plus the imports inside the named functions and inside every module-level function they reference
(transitively), so a stage's closure holds only that stage's code.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path

PROJECT_PACKAGES = ("confkd", "stages", "flows")
_FUNCS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _parse(root: Path, rel: str) -> ast.Module:
    return ast.parse((root / rel).read_text(encoding="utf-8"), filename=rel)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    """Descendants of ``node`` like ``ast.walk``, minus the bodies of ``if TYPE_CHECKING:`` blocks."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child):
            for stmt in child.orelse:  # only the ``else:`` branch runs
                yield stmt
                yield from _walk(stmt)
            continue
        yield child
        yield from _walk(child)


def _imports(nodes: Iterable[ast.AST]) -> list[tuple[str, int, list[str]]]:
    """``(module, level, names)`` of every import among ``nodes``; ``import a.b`` gives ``("a.b", 0, [])``."""
    found: list[tuple[str, int, list[str]]] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, 0, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append((node.module or "", node.level, [alias.name for alias in node.names]))
    return found


def _focused_nodes(tree: ast.Module, roots: Collection[str], prune: Collection[str]) -> list[ast.AST]:
    """Module-level statements outside functions, plus the bodies of ``roots`` and what they reference."""
    funcs = {n.name: n for n in tree.body if isinstance(n, _FUNCS)}
    nodes = list(_walk(ast.Module(body=[s for s in tree.body if not isinstance(s, _FUNCS)], type_ignores=[])))
    todo, seen = [r for r in roots if r in funcs], set()
    while todo:
        name = todo.pop()
        if name in seen or name in prune:
            continue
        seen.add(name)
        body = list(_walk(funcs[name]))
        nodes += body
        todo += [n.id for n in body if isinstance(n, ast.Name) and n.id in funcs]
    return nodes


def _module_file(root: Path, parts: list[str]) -> str | None:
    """Relative path of module ``parts`` under ``root`` (``pkg/__init__.py`` or ``mod.py``), if it exists."""
    if not parts:
        return None
    base = "/".join(parts)
    for rel in (f"{base}/__init__.py", f"{base}.py"):
        if (root / rel).is_file():
            return rel
    return None


def _resolve(root: Path, importer: str, module: str, level: int, names: list[str],
             packages: Collection[str]) -> set[str]:
    """Project files that one import statement of ``importer`` loads."""
    if level:
        package = Path(importer).parent.parts
        package = package[: len(package) - (level - 1)]
        bases = [[*package, *(module.split(".") if module else [])]]
    else:
        bases = [module.split(".")]
        script_dir = Path(importer).parent
        if not (root / script_dir / "__init__.py").is_file():  # a script: its own folder is on sys.path
            bases.append([*script_dir.parts, *module.split(".")])
    files: set[str] = set()
    for parts in bases:
        if not parts or parts[0] not in packages or _module_file(root, parts) is None:
            continue
        files.update(f for i in range(1, len(parts) + 1) if (f := _module_file(root, parts[:i])))
        files.update(f for name in names if (f := _module_file(root, [*parts, name])))
    return files


def closure(root: Path | str, entry: str, focus: Mapping[str, Collection[str]] | None = None,
            prune: Mapping[str, Collection[str]] | None = None,
            packages: Collection[str] = PROJECT_PACKAGES) -> set[str]:
    """Project files (relative POSIX paths, ``entry`` included) reached from ``entry`` through imports.

    ``focus`` maps a module's relative path to the functions to follow in it (see the module doc);
    ``prune`` maps a focused module's path to functions never followed there, even when referenced.
    """
    root, focus, prune = Path(root), focus or {}, prune or {}
    seen: set[str] = set()
    todo = [Path(entry).as_posix()]
    while todo:
        rel = todo.pop()
        if rel in seen:
            continue
        seen.add(rel)
        tree = _parse(root, rel)
        nodes = _focused_nodes(tree, focus[rel], prune.get(rel, ())) if rel in focus else _walk(tree)
        for module, level, names in _imports(nodes):
            todo += _resolve(root, rel, module, level, names, packages) - seen
    return seen


def import_edges(root: Path | str, rel: str, lazy: bool = True,
                 packages: Collection[str] = PROJECT_PACKAGES) -> set[str]:
    """Project files that module ``rel`` imports directly: anywhere in it (``lazy``), or at module level only."""
    root = Path(root)
    tree = _parse(root, rel)
    nodes = _walk(tree) if lazy else [n for n in _walk(tree) if not _inside_function(tree, n)]
    found: set[str] = set()
    for module, level, names in _imports(nodes):
        found |= _resolve(root, rel, module, level, names, packages)
    return found - {rel}


def _inside_function(tree: ast.Module, node: ast.AST) -> bool:
    spans = getattr(tree, "_function_spans", None)
    if spans is None:
        spans = [(f.lineno, f.end_lineno) for f in ast.walk(tree) if isinstance(f, _FUNCS)]
        tree._function_spans = spans  # type: ignore[attr-defined]
    line = getattr(node, "lineno", None)
    return line is not None and any(a <= line <= b for a, b in spans)


def import_cycles(root: Path | str, files: Iterable[str], lazy: bool = True) -> list[list[str]]:
    """Groups of modules among ``files`` that import each other, directly or through others (the strongly
    connected components of more than one module, Tarjan's algorithm); empty when the graph has no cycle.
    Package ``__init__.py`` files that only mark a folder as a package are edges' ends, never their start."""
    files = sorted(files)
    graph = {f: sorted(import_edges(root, f, lazy) & set(files)) for f in files}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for f in files:
        if f not in index:
            visit(f)
    return sorted(groups)


def stage_function(root: Path | str, stage: str, pipeline: str = "confkd/pipeline.py") -> str | None:
    """Name of the function that runs ``stage``: from the ``STAGES`` dict of ``pipeline``, else ``run_<stage>``."""
    tree = _parse(Path(root), pipeline)
    for node in tree.body:
        if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "STAGES" for t in node.targets)
                and isinstance(node.value, ast.Dict)):
            for key, value in zip(node.value.keys, node.value.values):
                if isinstance(key, ast.Constant) and key.value == stage and isinstance(value, ast.Name):
                    return value.id
    defined = {n.name for n in tree.body if isinstance(n, _FUNCS)}
    return f"run_{stage}" if f"run_{stage}" in defined else None


def entry_stage(root: Path | str, entry: str, caller: str = "stage_main") -> str | None:
    """The stage an entry script runs: the string literal passed to ``caller(...)`` in it, if any."""
    for node in ast.walk(_parse(Path(root), entry)):
        if (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and getattr(node.func, "id", getattr(node.func, "attr", None)) == caller):
            return node.args[0].value
    return None


def stage_closure(root: Path | str, entry: str, stage: str | None = None, pipeline: str = "confkd/pipeline.py",
                  cli: str = "confkd/cli.py", cli_roots: Collection[str] = ("stage_main",),
                  cli_prune: Collection[str] = ("predict_main",),
                  packages: Collection[str] = PROJECT_PACKAGES) -> set[str]:
    """Closure of a stage's entry script, following in ``pipeline`` only the function that runs ``stage``.

    In ``cli`` the functions in ``cli_roots`` (and what they reference) are followed, except ``cli_prune``:
    a stage command never takes ``confkd predict``'s branch. Without ``stage``, nothing is focused.
    """
    if stage is None:
        return closure(root, entry, packages=packages)
    function = stage_function(root, stage, pipeline)
    if function is None:
        raise ValueError(f"{pipeline} has no function for stage {stage!r}")
    return closure(root, entry, focus={pipeline: [function], cli: cli_roots}, prune={cli: cli_prune},
                   packages=packages)


def uncovered(files: Iterable[str], deps: Iterable[str]) -> list[str]:
    """Sorted ``files`` that no dep covers; a dep covers a file equal to it or under it (a folder)."""
    norm = [d.strip().removeprefix("./").rstrip("/") for d in deps]
    return sorted(f for f in set(files) if not any(f == d or f.startswith(d + "/") for d in norm))
