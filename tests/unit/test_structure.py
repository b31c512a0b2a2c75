"""The package's structure, measured from its source by ``tools/structure.py``: no import cycle, no
private name taken across modules, no class over 250 lines, no function over 80. The tool itself
is proven on small packages that break each rule once."""

from __future__ import annotations

from pathlib import Path

from tools import structure

ROOT = Path(__file__).resolve().parents[2]


def test_the_package_meets_every_rule():
    assert structure.findings(ROOT) == []


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / structure.PACKAGE
    package.mkdir()
    for name, text in files.items():
        (package / f"{name}.py").write_text(text)
    return tmp_path


def test_a_cycle_is_found_even_through_a_deferred_import(tmp_path):
    root = _package(tmp_path, {"a": "from .b import x\n", "b": "def x():\n    from .a import y\n", "c": "x = 1\n"})
    assert structure.findings(root) == ["import cycle: a <-> b"]


def test_private_names_taken_across_modules_are_found(tmp_path):
    root = _package(tmp_path, {
        "a": "def _hidden():\n    pass\n\n\nclass Reader:\n    def _read(self):\n        pass\n",
        "b": "from .a import _hidden\n\n\ndef use(reader, client):\n    client._http\n    return reader._read()\n",
    })
    # ``client._http`` is no name of the package's own: a library's private member is not counted
    assert structure.findings(root) == ["b uses the private name a._hidden", "b uses the private name reader._read"]


def test_classes_and_functions_over_their_limits_are_found(tmp_path):
    long_function = "def long():\n" + "    x = 1\n" * structure.FUNCTION_MAX
    big_class = "class Big:\n" + "    x = 1\n" * structure.CLASS_MAX
    root = _package(tmp_path, {"a": long_function, "b": big_class})
    assert structure.findings(root) == [
        f"function a.long is {structure.FUNCTION_MAX + 1} lines (limit {structure.FUNCTION_MAX})",
        f"class b.Big is {structure.CLASS_MAX + 1} lines (limit {structure.CLASS_MAX})",
    ]
