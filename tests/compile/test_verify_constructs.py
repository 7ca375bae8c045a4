"""``xlmnist verify`` on the constructs of issue #12, small, in one workbook: unrolled optimiser sheets
(gradient descent, Adam, momentum, RMSProp), an embedding sheet with empty ratings (OFFSET/MATCH and
INDEX/MATCH), the lookups, a conv sheet (SUMPRODUCT and array-formula layers, MAX pooling with stride 1
and 2, by OFFSET too) and a dropout sheet (RAND masks): every formula cell compiles and equals what
LibreOffice computes (one recalculation for the module); the cells that depend on RAND are counted,
not compared. The lesson workbooks ``xlmnist build`` writes are checked in ``test_verify.py``."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import openpyxl
import pytest

from xlmnist import oracle
from xlmnist.cli import main
from xlmnist.compile.verify import verify

sys.path.insert(0, str(Path(__file__).resolve().parent))
import recurrence_book  # noqa: E402
import test_lookup  # noqa: E402
import test_pool_stride  # noqa: E402

STEPS = 12  # rows of each unrolled optimiser
RANDOM = 11  # the dropout sheet's cells that depend on RAND & co.


def _dropout(wb):
    ws = wb.create_sheet("drop")
    for r, (x, w) in enumerate(zip([1.0, 2.0, -0.5, 3.0, 0.25, 1.5], [0.3, -0.2, 0.8, 0.1, 1.2, 0.5]), 1):
        ws[f"A{r}"], ws[f"B{r}"] = x, w
        ws[f"C{r}"] = f"=A{r}*B{r}"
        ws[f"D{r}"] = f"=IF(RAND()<0.5,0,C{r}/0.5)"
    ws["E1"] = "=SUM(C1:C6)"
    ws["F1"] = "=(SUM(D1:D6)-10)^2"
    ws["G1"] = "=SUM(D1:D6)"
    ws["H1"], ws["H2"] = "=RANDBETWEEN(1,6)", "=SUM(_xlfn.RANDARRAY(2,3,-1,1))"
    ws["H3"] = "=SUM(_xlfn.RANDARRAY(4,5,1,3,TRUE))"


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    wb = openpyxl.Workbook()
    wb.remove(wb.active)
    for sheet in recurrence_book.SHEETS:
        recurrence_book.BUILD[sheet](wb, STEPS)
    rng = np.random.default_rng(0)
    test_lookup._cf_sheet(wb, "cf", test_lookup.OFFSET_F, rng)
    test_lookup._cf_sheet(wb, "cfi", test_lookup.INDEX_F, rng)
    test_lookup._lookup_sheet(wb)
    lk = wb["lk"]
    for cell in test_lookup.XLOOKUPS:  # this LibreOffice has no XLOOKUP (#NAME?): test_lookup checks them
        lk[cell] = None
    lk["H5"] = "=E2+E4+E6+E7+E9"
    test_pool_stride.add_sheet(wb)
    _dropout(wb)
    path = tmp_path_factory.mktemp("constructs") / "constructs.xlsx"
    wb.save(path)
    return path


def _clean(res: dict) -> None:
    assert res["different"] == 0, res["differences"][:5]
    assert res["not_compiled"] == {} and res["compiled"] == res["cells"], res["not_compiled"]
    assert res["random"] == RANDOM


def test_every_construct_compiles_and_nothing_differs(book):
    """Without cached values (openpyxl wrote the file) every cell compiles; nothing can differ."""
    res = verify(book)
    _clean(res)
    assert res["uncached"] == res["cells"] - RANDOM > 500


@pytest.mark.libreoffice
def test_every_construct_equals_libreoffice(book, tmp_path, capsys):
    """One LibreOffice recalculation; the recalculated file's cached values are LibreOffice's: verify
    (the default, cached oracle, as on a file Excel saved) finds them all equal, per sheet too."""
    recalculated = oracle.recalc_file(book, tmp_path)
    res = verify(recalculated)
    _clean(res)
    assert res["equal"] == res["cells"] - RANDOM and res["uncached"] == 0
    sheets = openpyxl.load_workbook(book, read_only=True).sheetnames
    assert main(["verify", str(recalculated), "--sheet", "adam", "--json"]) == 0
    assert '"different": 0' in capsys.readouterr().out
    assert {"gd", "adam", "mom", "rms", "cf", "cfi", "lk", "pool", "drop"} == set(sheets)
