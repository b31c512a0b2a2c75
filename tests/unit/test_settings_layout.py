"""The settings modules measured from their source: small functions and classes, data flowing one
way (``auth`` -> ``config`` -> ``credential_config``), no private name taken across modules."""

from __future__ import annotations

import ast
import json
import pathlib
import subprocess
import sys

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[2] / "gcs_sync"
OURS = ("config", "auth", "credential_config")
MAX_FUNCTION, MAX_CLASS = 80, 250


def tree(module: str) -> ast.Module:
    return ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))


def imports(module: str) -> dict[str, set[str]]:
    """gcs_sync modules ``module`` imports anywhere (deferred imports too) -> the names it takes."""
    found: dict[str, set[str]] = {}
    for node in ast.walk(tree(module)):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.setdefault(node.module, set()).update(a.name for a in node.names)
            else:  # from . import x
                for alias in node.names:
                    found.setdefault(alias.name, set())
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gcs_sync"):
            name = (node.module or "").removeprefix("gcs_sync").lstrip(".")
            found.setdefault(name or node.names[0].name, set()).update(a.name for a in node.names)
    return found


def all_modules() -> list[str]:
    return sorted(p.stem for p in PACKAGE.glob("*.py"))


@pytest.mark.parametrize("module", OURS)
def test_functions_and_classes_are_small(module):
    too_long = [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree(module))
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                and node.end_lineno - node.lineno + 1 > MAX_FUNCTION]
    too_long += [(node.name, node.end_lineno - node.lineno + 1) for node in ast.walk(tree(module))
                 if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS]
    assert too_long == []


def test_from_environ_is_short():
    (settings,) = [n for n in tree("config").body if isinstance(n, ast.ClassDef) and n.name == "Settings"]
    (function,) = [n for n in settings.body if isinstance(n, ast.FunctionDef) and n.name == "from_environ"]
    assert function.end_lineno - function.lineno + 1 <= 50


@pytest.mark.parametrize("module", OURS)
def test_no_import_cycle_through_the_settings_modules(module):
    graph = {m: set(imports(m)) & set(all_modules()) for m in all_modules()}
    seen, stack = set(), list(graph[module])
    while stack:
        current = stack.pop()
        assert current != module, f"{module} imports itself back through {sorted(seen)}"
        if current not in seen:
            seen.add(current)
            stack.extend(graph[current])


def test_data_flows_one_way():
    assert "config" not in imports("credential_config") and "auth" not in imports("credential_config")
    assert "auth" not in imports("config")
    assert {"config", "credential_config"} <= set(imports("auth"))


def test_no_private_name_across_modules():
    taken = [(m, source, name) for m in all_modules() for source, names in imports(m).items()
             for name in names if name.startswith("_") and (m in OURS or source in OURS)]
    used = []
    for module in OURS:
        modules = {a.asname or a.name for n in ast.walk(tree(module)) if isinstance(n, ast.ImportFrom)
                   and n.level == 1 and not n.module for a in n.names}
        used += [(module, node.attr) for node in ast.walk(tree(module)) if isinstance(node, ast.Attribute)
                 and isinstance(node.value, ast.Name) and node.value.id in modules and node.attr.startswith("_")]
    assert taken == [] and used == []


def test_the_credential_file_is_checked_without_google_auth(tmp_path):
    """config lists the credential file's problems with the variables' own even where google-auth
    cannot be imported (it used to skip them there)."""
    (tmp_path / "key.json").write_text(json.dumps({"type": "service_account"}), encoding="utf-8")
    code = (
        "import sys, json\n"
        "sys.modules['google'] = None\n"  # any import of google.* fails
        "from gcs_sync.config import Settings\n"
        "from gcs_sync.errors import ConfigError\n"
        "try:\n"
        f"    Settings.from_environ({{'GOOGLE_APPLICATION_CREDENTIALS': {str(tmp_path / 'key.json')!r}, "
        "'OBJECT_CONCURRENCY': 'lots', 'GCS_DESTINATIONS': 'gs://my-bucket'})\n"
        "except ConfigError as exc:\n"
        "    print(json.dumps([p.variable for p in exc.issues]))\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('gcs_sync'))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=PACKAGE.parent, timeout=60)
    assert result.returncode == 0, result.stderr
    variables, modules = (json.loads(line) for line in result.stdout.splitlines())
    assert variables == ["OBJECT_CONCURRENCY", "GOOGLE_APPLICATION_CREDENTIALS"]
    assert "gcs_sync.auth" not in modules
