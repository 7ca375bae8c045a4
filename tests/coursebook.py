"""A course-style Titanic workbook built by the tests (openpyxl), for a clone without ``../shared``.

It mirrors the constructs of the fast.ai course's ``titanic.xlsx`` (``../shared/course``), cell for cell where
the course has them: the data rows of :func:`xlmnist.data.titanic_table` in columns A:P of an Excel Table on
each model sheet, derived columns as structured references (``Table13[[#This Row],[Age]]/$E$1``,
``MAX(Table13[Age])``), a ``Ones`` column for the bias; ``linear``: one SUMPRODUCT per row against the
weights ``R4:AA4``, squared error, the mean in ``AA7``; ``nnet``: two SUMPRODUCTs (one through the *linear*
sheet's table, as in the course), ``IF(x<0,0,x)`` ReLUs, their sum, the mean in ``AH1``; ``mmult``: one
``MMULT`` array formula ``V4:W<last>`` over all rows, ReLUs, the mean in ``AA1``; an ``all_rows`` sheet with
the raw CSV; and Excel Solver's sheet-scoped names (``solver_opt``, ``solver_adj``, ``solver_typ`` = 2 and
Solver's other options). The weights are seeded random numbers, and formulas have no cached values
(openpyxl writes none), so Solver's saved losses are only in the course's own file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openpyxl
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.worksheet.formula import ArrayFormula
from openpyxl.worksheet.table import Table, TableStyleInfo

from xlmnist import data

COLUMNS = data.TITANIC_COLUMNS  # A:P, Survived .. Ones
RAW = COLUMNS[:8]  # Survived, Embarked, Pclass, Sex, Age, Fare, SibSp, Parch: constants
DERIVED = {  # column -> the course's calculated column formula ({t}: the table name)
    "Age_N": "{t}[[#This Row],[Age]]/$E$1",
    "log_Fare": "LOG10({t}[[#This Row],[Fare]]+1)",
    "Pclass_1": "IF({t}[[#This Row],[Pclass]]=1,1,0)",
    "Pclass_2": "IF({t}[[#This Row],[Pclass]]=2,1,0)",
    "Embark_S": 'IF({t}[[#This Row],[Embarked]]="S",1,0)',
    "Embark_C": 'IF({t}[[#This Row],[Embarked]]="C",1,0)',
    "Male": 'IF({t}[[#This Row],[Sex]]="male",1,0)',
}
WEIGHT_HEADERS = ["SibSp", "Parch", "Age_N", "log_Fare", "Pclass_1", "Pclass_2", "Embark_S", "Embark_C", "Male",
                  "Const"]  # fmt: skip
TABLES = {"linear": "Table13", "nnet": "Table134", "mmult": "Table1342"}
OBJECTIVE = {"linear": "linear!$AA$7", "nnet": "nnet!$AH$1", "mmult": "mmult!$AA$1"}
PARAMS = {"linear": "linear!$R$4:$AA$4", "nnet": "nnet!$R$4:$AA$5", "mmult": "mmult!$S$4:$T$13"}
SOLVER_OPTIONS = {"solver_cvg": "0.0001", "solver_drv": "1", "solver_eng": "1", "solver_est": "1",
                  "solver_neg": "2", "solver_num": "0", "solver_pre": "0.000001", "solver_scl": "1",
                  "solver_sho": "2", "solver_val": "0", "solver_ver": "3"}  # fmt: skip


def _data_block(ws, table: str, rows) -> int:
    """Title row, header row 3, the data rows from row 4 with the derived columns as formulas; the last row."""
    ws["A1"], ws["D1"] = "Data", "Max:"
    ws["E1"], ws["F1"] = f"=MAX({table}[Age])", f"=MAX({table}[Fare])"
    for j, name in enumerate(COLUMNS, start=1):
        ws.cell(3, j, name)
    for i, rec in enumerate(rows.itertuples(index=False), start=4):
        values = dict(zip(COLUMNS, rec, strict=True))
        for j, name in enumerate(COLUMNS, start=1):
            if name in DERIVED:
                ws.cell(i, j, "=" + DERIVED[name].format(t=table))
            elif name == "Ones":
                ws.cell(i, j, 1)
            else:
                v = values[name]
                ws.cell(i, j, v.item() if hasattr(v, "item") else v)
    last = 3 + len(rows)
    tab = Table(displayName=table, ref=f"A3:P{last}")
    tab.tableStyleInfo = TableStyleInfo(name="TableStyleMedium2", showRowStripes=True)
    ws.add_table(tab)
    return last


def _weights(ws, first_row: int, w: np.ndarray) -> None:
    for i, row in enumerate(np.atleast_2d(w), start=first_row):
        for j, v in enumerate(row, start=18):  # R..AA
            ws.cell(i, j, float(v))


def _solver(wb, sheet_index: int, sheet: str) -> None:
    names = {"solver_opt": OBJECTIVE[sheet], "solver_adj": PARAMS[sheet], "solver_typ": "2", **SOLVER_OPTIONS}
    ws = wb.worksheets[sheet_index]
    for name, value in names.items():
        ws.defined_names[name] = DefinedName(name, attr_text=value, localSheetId=sheet_index, hidden=True)


def build_course_titanic(path: str | Path, rows: int | None = None, seed: int = 0) -> Path:
    """Write the course-style workbook to ``path``: all 712 Titanic rows, or the first ``rows``."""
    table = data.titanic_table()
    if rows is not None:
        table = table.iloc[:rows]
    n = len(table)
    rng = np.random.default_rng(seed)
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    # the course's sheet order: mmult, nnet, linear, all_rows
    mm, nn, lin, raw = (wb.create_sheet(s) for s in ("mmult", "nnet", "linear", "all_rows"))

    last = _data_block(lin, TABLES["linear"], table)
    lin["R1"], lin["AC1"], lin["AC3"], lin["AD3"] = "Params", "Model", "Linear", "Loss"
    for j, h in enumerate(WEIGHT_HEADERS, start=18):
        lin.cell(3, j, h)
    _weights(lin, 4, rng.normal(0, 0.3, 10))
    for r in range(4, last + 1):
        lin[f"AC{r}"] = "=SUMPRODUCT(Table13[[#This Row],[SibSp]:[Ones]],$R$4:$AA$4)"
        lin[f"AD{r}"] = f"=(AC{r}-Table13[[#This Row],[Survived]])^2"
    lin["Z7"], lin["AA7"] = "Total loss:", f"=AVERAGE(AD4:AD{last})"

    _data_block(nn, TABLES["nnet"], table)
    nn["R1"], nn["AC1"], nn["AG1"], nn["AH1"] = "Params", "Model", "Total loss:", f"=AVERAGE(AH4:AH{last})"
    for j, h in enumerate(WEIGHT_HEADERS, start=18):
        nn.cell(3, j, h)
    for j, h in enumerate(["Lin1", "Lin2", "ReLU1", "ReLU2", "Preds", "Loss"], start=29):
        nn.cell(3, j, h)
    _weights(nn, 4, rng.normal(0, 0.3, (2, 10)))
    for r in range(4, last + 1):
        nn[f"AC{r}"] = (
            "=SUMPRODUCT(Table13[[#This Row],[SibSp]:[Ones]],$R$4:$AA$4)"  # the linear sheet's table
        )
        nn[f"AD{r}"] = "=SUMPRODUCT(Table134[[#This Row],[SibSp]:[Ones]],$R$5:$AA$5)"
        nn[f"AE{r}"] = f"=IF(AC{r}<0,0,AC{r})"
        nn[f"AF{r}"] = f"=IF(AD{r}<0,0,AD{r})"
        nn[f"AG{r}"] = f"=AE{r}+AF{r}"
        nn[f"AH{r}"] = f"=(Table134[[#This Row],[Survived]]-AG{r})^2"

    _data_block(mm, TABLES["mmult"], table)
    mm["R1"], mm["V1"], mm["Z1"], mm["AA1"] = "Params", "Model", "Total loss:", f"=AVERAGE(AA4:AA{last})"
    for j, h in enumerate(["Column", "Param1", "Param2"], start=18):
        mm.cell(3, j, h)
    for j, h in enumerate(["Lin1", "Lin2", "ReLU1", "ReLU2", "Preds", "Loss"], start=22):
        mm.cell(3, j, h)
    w = rng.normal(0, 0.3, (10, 2))
    for i, h in enumerate(COLUMNS[6:], start=4):
        mm.cell(i, 18, h)
        mm.cell(i, 19, float(w[i - 4, 0]))
        mm.cell(i, 20, float(w[i - 4, 1]))
    if last >= 147 and mm["F147"].value == 0:
        mm["F147"] = None  # as in the course: one Fare of 0 is an empty cell on this sheet (read as 0)
    mm["V4"] = ArrayFormula(f"V4:W{last}", f"=MMULT(G4:P{last},S4:T13)")
    for r in range(4, last + 1):
        mm[f"X{r}"] = f"=IF(V{r}<0,0,V{r})"
        mm[f"Y{r}"] = f"=IF(W{r}<0,0,W{r})"
        mm[f"Z{r}"] = f"=X{r}+Y{r}"
        mm[f"AA{r}"] = (
            f"=(Table134[[#This Row],[Survived]]-Z{r})^2"  # the nnet sheet's table, as in the course
        )

    src = data.load_titanic_raw()
    cols = ["Survived", "Pclass", "Sex", "Age", "SibSp", "Parch", "Fare", "Embarked"]
    raw.append(cols)
    for rec in src[cols].itertuples(index=False):
        raw.append([None if v != v else (v.item() if hasattr(v, "item") else v) for v in rec])

    for i, sheet in enumerate(wb.sheetnames[:3]):
        _solver(wb, i, sheet)
    assert n == last - 3
    path = Path(path)
    wb.save(path)
    return path
