"""LibreOffice's own nonlinear solver on a workbook, driven over UNO.

Runs under the *system* Python that has python3-uno (``/usr/bin/python3``), not the project's venv:

    /usr/bin/python3 bench/lo_solver.py BOOK SHEET OBJECTIVE VARIABLES TIMEOUT_S [TARGET]

e.g. ``titanic.xlsx linear AA7 R4:AA4 60 0.1442271493``. Uses LibreOffice's built-in nonlinear solver
(``com.sun.star.comp.Calc.SwarmSolver``, differential evolution); the Java DEPS solver
(libreoffice-nlpsolver) cannot be installed beside libreoffice-calc-nogui on Debian. Prints one JSON line:
{"objective": best value, "seconds": wall time of solve(), "success": bool, "solver": name}.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import uno
from com.sun.star.beans import PropertyValue
from com.sun.star.sheet import SolverConstraint
from com.sun.star.sheet.SolverConstraintOperator import GREATER_EQUAL, LESS_EQUAL
from com.sun.star.table import CellAddress


class SolverConstraintOperator:
    GREATER_EQUAL = GREATER_EQUAL
    LESS_EQUAL = LESS_EQUAL


def _prop(name, value):
    p = PropertyValue()
    p.Name, p.Value = name, value
    return p


def _col(letters):
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n - 1


def _addr(sheet_index, a1):
    letters = "".join(c for c in a1 if c.isalpha())
    row = int("".join(c for c in a1 if c.isdigit())) - 1
    a = CellAddress()
    a.Sheet, a.Column, a.Row = sheet_index, _col(letters), row
    return a


def main():
    book, sheet, objective, variables, timeout = sys.argv[1:6]
    target = float(sys.argv[6]) if len(sys.argv) > 6 else None
    profile = tempfile.mkdtemp(prefix="xlmnist-lo-solver-")
    work = os.path.join(profile, "book.xlsx")
    with open(book, "rb") as src, open(work, "wb") as dst:
        dst.write(src.read())
    book = work
    port = 2000 + os.getpid() % 5000
    proc = subprocess.Popen(
        [
            "soffice",
            f"-env:UserInstallation=file://{profile}",
            "--headless",
            "--norestore",
            f"--accept=socket,host=127.0.0.1,port={port};urp;",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        ctx = uno.getComponentContext()
        resolver = ctx.ServiceManager.createInstanceWithContext("com.sun.star.bridge.UnoUrlResolver", ctx)
        for _ in range(120):
            try:
                rctx = resolver.resolve(
                    f"uno:socket,host=127.0.0.1,port={port};urp;StarOffice.ComponentContext"
                )
                break
            except Exception:
                time.sleep(0.5)
        smgr = rctx.ServiceManager
        desktop = smgr.createInstanceWithContext("com.sun.star.frame.Desktop", rctx)
        doc = desktop.loadComponentFromURL(
            uno.systemPathToFileUrl(os.path.abspath(book)), "_blank", 0, (_prop("Hidden", True),)
        )
        # DEPS's status dialog looks for the desktop's current component: make our hidden one current
        frame = doc.getCurrentController().getFrame()
        frame.activate()
        desktop.setActiveFrame(frame)
        sheets = doc.Sheets
        index = list(sheets.ElementNames).index(sheet)
        first, last = variables.split(":")
        a0, a1 = _addr(index, first), _addr(index, last)
        cells = []
        for r in range(a0.Row, a1.Row + 1):
            for c in range(a0.Column, a1.Column + 1):
                a = CellAddress()
                a.Sheet, a.Column, a.Row = index, c, r
                cells.append(a)
        impl = os.environ.get("XLMNIST_LO_SOLVER", "com.sun.star.comp.Calc.NLPSolver.DEPSSolverImpl")
        solver = smgr.createInstanceWithContext(impl, rctx)
        if solver is None:
            raise SystemExit(f"LibreOffice has no solver {impl} (install libreoffice-nlpsolver for DEPS)")
        solver.Document = doc
        solver.Objective = _addr(index, objective)
        solver.Variables = tuple(cells)
        # the swarm needs a search box: |w| <= BOUND for every variable cell
        bound = float(os.environ.get("XLMNIST_LO_BOUND", "5"))
        constraints = []
        for cell in cells:
            for op, rhs in (
                (SolverConstraintOperator.GREATER_EQUAL, -bound),
                (SolverConstraintOperator.LESS_EQUAL, bound),
            ):
                c = SolverConstraint()
                c.Left, c.Operator, c.Right = cell, op, rhs
                constraints.append(c)
        solver.Constraints = tuple(constraints)
        solver.Maximize = False
        names = [p.Name for p in solver.getPropertySetInfo().getProperties()]
        print("solver properties:", names, file=sys.stderr)
        if "Timeout" in names:
            solver.setPropertyValue("Timeout", int(timeout))
        t0 = time.perf_counter()
        solver.solve()
        seconds = time.perf_counter() - t0
        doc.calculateAll()
        value = (
            sheets.getByIndex(index)
            .getCellByPosition(solver.Objective.Column, solver.Objective.Row)
            .getValue()
        )
        out = {
            "solver": impl,
            "objective": value,
            "seconds": seconds,
            "success": bool(solver.Success),
            "reached_target": target is not None and value <= target,
        }
        print(json.dumps(out))
        doc.close(True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()
