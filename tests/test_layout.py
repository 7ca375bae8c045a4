"""The package's layout (#11): every stage package and module imports on its own in a fresh interpreter,
the module import graph has no cycle, no module is over 450 lines, and ``xlmnist --help`` / bare ``xlmnist``
list the commands the README documents.

The import graph is read with ``ast`` from ``xlmnist/**/*.py``, imports inside functions included:
``import a.b`` is an edge to ``a.b``; ``from a import b`` an edge to ``a.b`` when that is a module, else to
``a``; relative imports are resolved against the importing module's package. Imports under
``if TYPE_CHECKING:`` are left out: they never run, so they cannot make an import cycle.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from testenv import ROOT

PACKAGE = ROOT / "xlmnist"
STAGES = ["xlsx", "formula", "compile", "train", "export", "lessons", "excel"]
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def runtime_nodes(tree: ast.AST):
    """Every node, except the bodies of ``if TYPE_CHECKING:`` (type-only imports never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING"):
            todo.extend(node.orelse)
            continue
        todo.extend(ast.iter_child_nodes(node))


def imports_of(name: str, path: Path) -> set[str]:
    """The xlmnist modules ``name`` imports (anywhere in the file), as module names."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found: set[str] = set()
    for node in runtime_nodes(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            for alias in node.names:
                found.add(f"{origin}.{alias.name}" if f"{origin}.{alias.name}" in MODULES else origin)
    return {m for m in found if m in MODULES and m != name}


def import_graph() -> dict[str, set[str]]:
    return {name: imports_of(name, path) for name, path in MODULES.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_reader_sees_edges_and_cycles():
    """The cycle finder finds a planted cycle and the reader resolves relative and ``from`` imports."""
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
    tree = ast.parse(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\nelse:\n    import y\n"
    )
    assert {n.names[0].name for n in runtime_nodes(tree) if isinstance(n, ast.Import)} == {"y"}
    graph = import_graph()
    assert "xlmnist.errors" in graph["xlmnist.cli"]
    assert all(stage in {m.split(".")[1] for m in MODULES if m.count(".")} for stage in STAGES)


def test_no_import_cycles():
    found = cycles(import_graph())
    assert found == [], "import cycles: " + "; ".join(" <-> ".join(c) for c in found)


def test_no_module_over_450_lines():
    long = {
        name: n
        for name, p in MODULES.items()
        if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert long == {}, f"modules over {MAX_LINES} lines: {long}"


def python(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=timeout)


@pytest.mark.parametrize("stage", STAGES)
def test_stage_package_imports_alone(stage):
    proc = python("-c", f"import xlmnist.{stage}")
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("module", sorted(m for m in MODULES if not m.endswith("__main__")))  # those run
def test_module_imports_alone(module):
    proc = python("-c", f"import {module}")
    assert proc.returncode == 0, proc.stderr


def readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return list(dict.fromkeys(re.findall(r"^\| `xlmnist (\w+)", text, re.M)))


@pytest.mark.parametrize("args", [["--help"], []], ids=["--help", "bare"])
def test_help_lists_the_commands(args):
    proc = python("-m", "xlmnist", *args)
    assert proc.returncode == (0 if args else 2), proc.stderr
    assert "Traceback" not in proc.stderr
    listed = re.findall(r"^    (\w+) ", proc.stdout, re.M)
    commands = readme_commands()
    assert len(commands) >= 10 and "train" in commands
    assert sorted(listed) == sorted(commands), proc.stdout


# ------------------------------------------------------------------ the tests themselves
TESTS = ROOT / "tests"
STARTS_LIBREOFFICE = {"recalc", "recalc_file", "soffice_binary"}  # oracle.<these> run soffice


def _starts_libreoffice(fn: ast.FunctionDef) -> bool:
    for n in ast.walk(fn):
        if isinstance(n, ast.Attribute) and n.attr in STARTS_LIBREOFFICE and ast.unparse(n.value) == "oracle":
            return True
        if isinstance(n, ast.Constant) and n.value in ("soffice", "check"):  # soffice itself, `xlmnist check`
            return True
    return False


def unmarked_libreoffice_tests(source: str) -> list[str]:
    """Test functions that start LibreOffice (directly, or through a helper or fixture of their module)
    without the ``libreoffice`` mark (on the function or the module's ``pytestmark``)."""
    tree = ast.parse(source)
    funcs = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    module_marked = any(
        isinstance(n, ast.Assign) and "pytestmark" in ast.unparse(n) and "libreoffice" in ast.unparse(n)
        for n in tree.body
    )
    uses = {
        name: ({n.id for n in ast.walk(fn) if isinstance(n, ast.Name)} | {a.arg for a in fn.args.args})
        & set(funcs)
        for name, fn in funcs.items()
    }
    lo = {name for name, fn in funcs.items() if _starts_libreoffice(fn)}
    while grown := {name for name in funcs if name not in lo and uses[name] & lo}:
        lo |= grown
    return [
        name
        for name in sorted(lo)
        if name.startswith("test_")
        and not module_marked
        and not any("libreoffice" in ast.unparse(d) for d in funcs[name].decorator_list)
    ]


def test_the_marker_audit_sees_helpers_and_fixtures():
    src = (
        "import pytest\nfrom xlmnist import oracle\n"
        "@pytest.fixture\ndef values(tmp_path):\n    return oracle.recalc(tmp_path)\n"
        "def helper(p):\n    return run('check', p)\n"
        "def test_a(values):\n    pass\n"
        "def test_b():\n    helper(1)\n"
        "@pytest.mark.libreoffice\ndef test_c(values):\n    pass\n"
        "def test_d():\n    oracle.read_values('x')\n"
    )
    assert unmarked_libreoffice_tests(src) == ["test_a", "test_b"]
    assert unmarked_libreoffice_tests("import pytest\npytestmark = pytest.mark.libreoffice\n" + src) == []


@pytest.mark.parametrize("path", sorted(p.relative_to(TESTS).as_posix() for p in TESTS.rglob("test_*.py")))
def test_libreoffice_tests_are_marked(path):
    if path == "test_layout.py":
        return  # names "soffice" and "check" as data, starts nothing
    assert unmarked_libreoffice_tests((TESTS / path).read_text(encoding="utf-8")) == []


@pytest.mark.parametrize("path", sorted(p.relative_to(TESTS).as_posix() for p in TESTS.rglob("*.py")))
def test_shared_is_reached_only_through_conftest(path):
    """``../shared`` may be missing (a clone, ``.ci/run``'s second pass): only conftest names it, and its
    fixtures and marks skip with the reason."""
    if path in ("conftest.py", "testenv.py"):
        return
    text = (TESTS / path).read_text(encoding="utf-8")
    assert not re.search(r"""parent\s*/\s*["']shared["']|["']\.\./shared|["']shared["']\s*/""", text), path


@pytest.mark.parametrize("require", ["", "1"], ids=["skips", "required-fails"])
def test_libreoffice_tests_without_soffice(tmp_path, require):
    """With no soffice on PATH a ``libreoffice`` test skips and says why; with XLMNIST_REQUIRE_SOFFICE=1
    (CI) it runs, and fails."""
    env = {k: v for k, v in os.environ.items() if k != "XLMNIST_REQUIRE_SOFFICE"}
    env["PATH"] = str(tmp_path)  # nothing in it: no soffice, no libreoffice
    env["XLMNIST_REQUIRE_SOFFICE"] = require
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         "tests/test_oracle.py::test_error_cells_are_reported"],
        capture_output=True, text=True, cwd=ROOT, env=env, timeout=300,
    )  # fmt: skip
    if require:
        assert proc.returncode == 1 and "1 failed" in proc.stdout, proc.stdout
        assert "LibreOffice (soffice) is not installed" in proc.stdout
    else:
        assert proc.returncode == 0 and "1 skipped" in proc.stdout, proc.stdout
        assert "LibreOffice is not installed (no soffice on PATH)" in proc.stdout
