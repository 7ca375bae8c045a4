"""Bad input through the real command line: one line naming sheet!cell, exit 2, the workbook unchanged."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest
from openpyxl.workbook.defined_name import DefinedName

ROOT = Path(__file__).resolve().parents[1]


def book(
    path: Path, cells: dict, solver: tuple[str, str] | None = ("s!$C$1", "s!$A$1:$A$2"), typ: str = "2"
) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.title = "s"
    for ref, value in cells.items():
        ws[ref] = value
    if solver:
        for name, text in (("solver_opt", solver[0]), ("solver_adj", solver[1]), ("solver_typ", typ)):
            ws.defined_names[name] = DefinedName(name, attr_text=text)
    wb.save(path)
    return path


BASE = {"A1": 0.5, "A2": -0.25, "B1": 2.0, "B2": 3.0}
CASES = [
    ("unsupported function", {**BASE, "C1": "=FOOBAR(A1)+A2"}, None, r"s!C1.*FOOBAR"),
    ("circular reference", {**BASE, "C1": "=A1+D1", "D1": "=C1*2"}, None, r"circular.*s!(C1|D1)"),
    ("#DIV/0! reaches the objective", {**BASE, "C1": "=A1*B1+A2/0"}, None, r"s!C1.*#DIV/0!"),
    ("#N/A reaches the objective", {**BASE, "C1": "=A1*B1+D1", "D1": "#N/A"}, None, r"s!C1.*s!D1 holds #N/A"),
    ("#REF! in a cell", {**BASE, "C1": "=A1*B1+D1", "D1": "#REF!"}, None, r"s!C1.*s!D1 holds #REF!"),
    ("#REF! in the formula", {**BASE, "C1": "=A1*B1+#REF!"}, None, r"s!C1.*holds the error #REF!"),
    ("text where a number is needed", {**BASE, "C1": "=A1*D1", "D1": "abc"}, None, r"s!C1.*s!D1.*text"),
    ("objective independent of the params", {**BASE, "C1": "=B1*B2"}, None, r"s!C1.*does not depend"),
    ("no Solver settings and no flags", {**BASE, "C1": "=A1*B1"}, "none", r"\bs\b.*(Solver|objective)"),
]


def run(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "xlmnist", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def assert_one_line_error(proc, pattern):
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xlmnist: error: "), proc.stderr
    assert re.search(pattern, lines[0]), lines[0]


@pytest.mark.parametrize("what, cells, solver, pattern", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("command", ["train", "eval"])
def test_formula_errors(tmp_path, what, cells, solver, pattern, command):
    path = book(tmp_path / "b.xlsx", cells, None if solver == "none" else ("s!$C$1", "s!$A$1:$A$2"))
    before = path.read_bytes()
    proc = run(command, path)
    assert_one_line_error(proc, pattern)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.xlsx"]  # no temp files left


def test_encrypted_workbook(tmp_path):
    # what Excel writes for a password-protected workbook: an OLE2 compound file, not a zip
    path = tmp_path / "secret.xlsx"
    content = bytes.fromhex("d0cf11e0a1b11ae1") + b"\0" * 504 + b"EncryptionInfo"
    path.write_bytes(content)
    proc = run("train", path)
    assert_one_line_error(proc, r"secret\.xlsx.*(encrypt|password)")
    assert path.read_bytes() == content


def test_flags_override_missing_solver_settings(tmp_path):
    path = book(tmp_path / "b.xlsx", {**BASE, "C1": "=(A1*B1+A2*B2-1)^2"}, solver=None)
    proc = run("train", path, "--objective", "'s'!C1", "--params", "s!A1:A2", "--json")
    assert proc.returncode == 0, proc.stderr
    import json

    assert json.loads(proc.stdout)["objective"] == pytest.approx(0.0, abs=1e-12)


def test_help_and_bare_command_list_every_command(capsys):
    """``xlmnist --help`` (exit 0) and a bare ``xlmnist`` (exit 2) print the command list."""
    from xlmnist import cli

    with pytest.raises(SystemExit) as exc:
        cli.main(["--help"])
    assert exc.value.code == 0
    helped = capsys.readouterr().out
    assert cli.main([]) == 2
    bare = capsys.readouterr().out
    for text in (helped, bare):
        assert text.startswith("usage: xlmnist")
        for command in cli.COMMANDS:
            assert f"\n    {command} " in text, (command, text)


@pytest.mark.parametrize(
    "flags, pattern",
    [
        (["--epochs", "0"], r"--epochs: 0: must be > 0"),
        (["--max-seconds", "-1"], r"--max-seconds: -1: must be > 0"),
        (["--lr", "nan"], r"--lr: nan: must be > 0"),
        (["--batch-size", "0"], r"--batch-size: 0: must be > 0"),
    ],
    ids=["epochs-0", "max-seconds-negative", "lr-nan", "batch-size-0"],
)
def test_bad_numbers_rejected_before_any_write(tmp_path, flags, pattern):
    path = book(tmp_path / "b.xlsx", {**BASE, "C1": "=(A1*B1+A2*B2-1)^2"})
    before = path.read_bytes()
    proc = run("train", path, *flags)
    assert proc.returncode == 2 and re.search(pattern, proc.stderr), proc.stderr
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["b.xlsx"]


@pytest.mark.parametrize(
    "params, bad",
    [("s!Z1:Z2", "s!Z1:Z2"), ("s!A1:A2,s!Z9", "s!Z9"), ("s!A1:A2,t!A1", "t!A1")],
    ids=["only-empty-cells", "real-and-empty", "other-sheet"],
)
@pytest.mark.parametrize("command", ["train", "step"])
def test_params_the_objective_does_not_read(tmp_path, params, bad, command):
    path = book(tmp_path / "b.xlsx", {**BASE, "C1": "=(A1*B1+A2*B2-1)^2"})
    wb = openpyxl.load_workbook(path)
    wb.create_sheet("t")["A1"] = 1.0
    wb.save(path)
    before = path.read_bytes()
    proc = run(command, path, "--params", params)
    bad = re.escape(bad)
    assert_one_line_error(proc, rf"{bad}.*does not depend|does not depend.*{bad}")
    assert path.read_bytes() == before


def test_write_failure_is_one_line(tmp_path):
    path = book(tmp_path / "b.xlsx", {**BASE, "C1": "=(A1*B1+A2*B2-1)^2"})
    (tmp_path / "blocker").write_text("a file where a folder should be")
    before = path.read_bytes()
    proc = run("train", path, "--quiet", "--out", tmp_path / "blocker" / "o.xlsx")
    assert_one_line_error(proc, r"blocker.*cannot write")
    assert path.read_bytes() == before


@pytest.mark.parametrize("command", ["train", "eval"])
def test_unknown_solver_goal_is_an_error(tmp_path, command):
    """solver_typ 7 is no Solver goal: refused, not silently minimised."""
    path = book(tmp_path / "b.xlsx", {**BASE, "C1": "=(A1*B1+A2*B2-1)^2"}, typ="7")
    before = path.read_bytes()
    assert_one_line_error(run(command, path), r"solver_typ = 7: unknown Solver goal")
    assert path.read_bytes() == before


@pytest.mark.parametrize(
    "params, pattern",
    [
        ("s!$BZ$1:$XFD$1048576", r"s!BZ1:XFD1048576: the trainable range spans 17,099,128,832 cells"),
        ("s!$A$1,s!$XFD$1048576", r"s!XFD1048576: the trainable range reaches far beyond"),
    ],
    ids=["whole-sheet-range", "one-far-cell"],
)
def test_trainable_range_too_large_is_refused_before_allocating(tmp_path, params, pattern):
    """A trainable range over (nearly) a whole sheet drove the machine out of memory; now a limit error."""
    path = book(tmp_path / "b.xlsx", {**BASE, "C1": "=(A1*2-1)^2"}, solver=("s!$C$1", params))
    before = path.read_bytes()
    assert_one_line_error(run("train", path), pattern)
    assert path.read_bytes() == before


def test_command_list_summaries_match_the_commands_own_help():
    """``xlmnist --help`` lists :data:`cli.SUMMARIES` without importing the command modules; each summary is
    the help its module registers."""
    from xlmnist import cli

    assert list(cli.SUMMARIES) == list(cli.COMMANDS)
    for name, text in cli.SUMMARIES.items():
        sub = cli.make_parser(name)._subparsers._group_actions[0]
        helps = {a.dest: a.help for a in sub._choices_actions}
        assert helps[name] == text, name


def test_help_imports_no_command_module():
    code = "import sys; from xlmnist import cli; cli.make_parser(None); print('torch' in sys.modules)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"


def test_timing_breakdown_on_stderr(tmp_path):
    """``XLMNIST_TIMING=1``: one line naming import / read / compile / run / write / total."""
    from xlmnist import timing

    with timing.stage("read"):
        with timing.stage("compile"):
            pass
    parts = timing.breakdown()
    assert list(parts) == ["import", "read", "compile", "run", "write", "total"]
    assert parts["total"] >= parts["read"] + parts["compile"]
