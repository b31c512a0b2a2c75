"""Measures the package's structure from its source: import cycles, private names used across
modules, and classes / functions over their size limits.

    python -m tools.structure            # prints every finding; exit 1 when there is one
    python -m tools.structure --report   # the figures, whatever they are

Every import counts, at module level or inside a function: an import deferred into a function
still ties the two modules together.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass, field
from pathlib import Path

PACKAGE = "gcs_sync"
CLASS_MAX = 250
FUNCTION_MAX = 80


@dataclass
class Module:
    name: str
    path: Path
    tree: ast.Module
    imports: set[str] = field(default_factory=set)  # other modules of the package this one imports
    private_uses: list[str] = field(default_factory=list)  # "other._name" taken from another module


def load(root: Path) -> dict[str, Module]:
    modules = {}
    base = root / PACKAGE
    for path in sorted(base.rglob("*.py")):
        parts = list(path.relative_to(base).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        if not parts:
            continue  # the package's own __init__
        name = ".".join(parts)
        modules[name] = Module(name, path, ast.parse(path.read_text(encoding="utf-8"), str(path)))
    ours = set().union(*(_defined_names(m.tree) for m in modules.values())) if modules else set()
    for module in modules.values():
        _read_imports(module, modules, ours)
    return modules


def _read_imports(module: Module, modules: dict[str, Module], ours: set[str]) -> None:
    """``ours``: every name the package defines; another object's private member counts only when
    it is one of ours (a third-party library's private members are that library's business)."""
    aliases: dict[str, str] = {}  # local name bound to a package module -> that module
    package = module.name.split(".")[:-1] if module.path.name != "__init__.py" else module.name.split(".")
    for node in ast.walk(module.tree):
        if not isinstance(node, ast.ImportFrom):
            continue
        if node.level:
            anchor = package[:len(package) - (node.level - 1)] if node.level > 1 else package
            target = ".".join(anchor + (node.module.split(".") if node.module else []))
        elif node.module and node.module.startswith(PACKAGE + "."):
            target = node.module[len(PACKAGE) + 1:]
        else:
            continue
        for alias in node.names:
            child = f"{target}.{alias.name}" if target else alias.name
            if child in modules:  # from . import other
                _link(module, child)
                aliases[alias.asname or alias.name] = child
            elif target in modules:  # from .other import a, b
                _link(module, target)
                if _private(alias.name):
                    module.private_uses.append(f"{target}.{alias.name}")
    own = _defined_names(module.tree)
    for node in ast.walk(module.tree):
        if not isinstance(node, ast.Attribute) or not _private(node.attr):
            continue
        if isinstance(node.value, ast.Name) and node.value.id in aliases:
            module.private_uses.append(f"{aliases[node.value.id]}.{node.attr}")
        elif (not (isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"))
              and node.attr not in own and node.attr in ours):
            # another object's private member (``self.source._read``), not defined in this module
            module.private_uses.append(f"{ast.unparse(node.value)}.{node.attr}")


def _link(module: Module, other: str) -> None:
    """``module`` imports ``other`` (a package importing its own submodules is not a cycle)."""
    if other != module.name and not other.startswith(module.name + "."):
        module.imports.add(other)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _defined_names(tree: ast.Module) -> set[str]:
    """Names this module defines anywhere: functions, classes, attributes it assigns."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def cycles(modules: dict[str, Module]) -> list[list[str]]:
    """Every strongly connected group of two or more modules (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(name: str) -> None:
        index[name] = low[name] = len(index)
        stack.append(name)
        on_stack.add(name)
        for other in sorted(modules[name].imports):
            if other not in index:
                visit(other)
                low[name] = min(low[name], low[other])
            elif other in on_stack:
                low[name] = min(low[name], index[other])
        if low[name] == index[name]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == name:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for name in sorted(modules):
        if name not in index:
            visit(name)
    return sorted(found)


def sizes(modules: dict[str, Module]) -> list[tuple[str, str, int]]:
    """(kind, qualified name, lines) of every class and function, nested ones included."""
    out = []

    def walk(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.ClassDef):
                out.append(("class", prefix + child.name, child.end_lineno - child.lineno + 1))
                walk(child, prefix + child.name + ".")
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append(("function", prefix + child.name, child.end_lineno - child.lineno + 1))
                walk(child, prefix + child.name + ".")
            else:
                walk(child, prefix)

    for module in modules.values():
        walk(module.tree, module.name + ".")
    return out


def findings(root: Path) -> list[str]:
    modules = load(root)
    problems = [f"import cycle: {' <-> '.join(group)}" for group in cycles(modules)]
    for module in modules.values():
        problems += [f"{module.name} uses the private name {use}" for use in sorted(set(module.private_uses))]
    for kind, name, lines in sizes(modules):
        limit = CLASS_MAX if kind == "class" else FUNCTION_MAX
        if lines > limit:
            problems.append(f"{kind} {name} is {lines} lines (limit {limit})")
    return problems


def report(root: Path) -> str:
    modules = load(root)
    measured = sizes(modules)
    classes = sorted((n for k, n, _ in measured if k == "class"), key=lambda n: -dict((x, y) for _, x, y in measured)[n])
    largest = {k: max((m for m in measured if m[0] == k), key=lambda m: m[2]) for k in ("class", "function")}
    return "\n".join([
        f"modules: {len(modules)}; classes: {len(classes)}; functions: {sum(1 for k, _, _ in measured if k == 'function')}",
        f"import cycles: {len(cycles(modules))}",
        f"private names used across modules: {sum(len(set(m.private_uses)) for m in modules.values())}",
        f"largest class: {largest['class'][1]} ({largest['class'][2]} lines; limit {CLASS_MAX})",
        f"largest function: {largest['function'][1]} ({largest['function'][2]} lines; limit {FUNCTION_MAX})",
    ])


def main(argv: list[str]) -> int:
    root = Path(__file__).resolve().parent.parent
    if "--report" in argv:
        print(report(root))
    problems = findings(root)
    for problem in problems:
        print(problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
