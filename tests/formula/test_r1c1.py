"""The R1C1 key: one regex pass per formula *shape*, reused for the cells of the same shape."""

from __future__ import annotations

import pytest

from xlmnist.formula.r1c1 import r1c1_key


@pytest.mark.parametrize(
    "text, row, col, key",
    [
        ("A1+2", 1, 1, "R[0]C[0]+2"),
        ("A5+7", 5, 1, "R[0]C[0]+7"),  # the shape of the line above: literal 7, not the cached 2
        ("A5+7", 9, 1, "R[-4]C[0]+7"),
        ("A5+7", 5, 3, "R[0]C[-2]+7"),  # another column: its own plan
        ("$B$3*C4", 4, 2, "R3C2*R[0]C[1]"),
        ("$B$30*C40", 40, 2, "R30C2*R[0]C[1]"),
        ("SUM(A$1:A12)/12", 12, 1, "SUM(R1C[0]:R[0]C[0])/12"),
        ("SUM(A$1:A13)/13", 14, 1, "SUM(R1C[0]:R[-1]C[0])/13"),
        ("SUM(3:$5)+1E+3", 4, 1, "SUM(R[-1]:R5)+1E+3"),
        ('"A1"&B2&"x9"', 2, 2, '"A1"&R[0]C[0]&"x9"'),
        ('"A7"&B8&"x3"', 8, 2, '"A7"&R[0]C[0]&"x3"'),
        ("'Sheet 2'!C7+Table1[[#This Row],[A1]]", 7, 3, "'Sheet 2'!R[0]C[0]+Table1[[#This Row],[A1]]"),
        ("LOG10(A1)+ABC1(2)", 1, 1, "LOG10(R[0]C[0])+ABC1(2)"),
        ("A:$C", 1, 2, "C[-1]:C3"),
        ("PI()", 5, 5, "PI()"),
    ],
)
def test_keys_of_one_shape_use_each_cell_s_digits(text, row, col, key):
    assert r1c1_key(text, row, col) == key


def _per_cell(sh):
    """What graph._build_sheet did before r1c1_groups: r1c1_key per cell (shared: the master's key)."""
    groups = {}
    for cell in sh.formula_cells():
        single = sh.arrays.get(cell) == (*cell, *cell)
        if cell in sh.arrays and not single:
            continue
        origin, text = sh.master_text(cell)
        key = r1c1_key(text, *origin)
        groups.setdefault("\0" + key if single else key, []).append(cell)
    return groups


def test_groups_in_bulk_equal_the_keys_per_cell():
    from xlmnist.formula.r1c1 import r1c1_groups
    from xlmnist.xlsx.reader import Sheet

    sh = Sheet("s")
    for r in range(2, 40):
        sh.formulas[(r, 3)] = f"A{r}*$B$1+{r % 3}"  # one shape; a literal that changes: several keys
        sh.formulas[(r, 4)] = f"SUM(A$1:A{r})" if r % 5 else f"A{r}+0.{r:03d}"  # mixed shapes
        sh.formulas[(r, 5)] = f"data!$A{r + 1}:$ADE{r + 1}"  # rows offset by one
        sh.formulas[(r, 6)] = f"C{r - 1}+1" if r > 2 else "7"
    sh.formulas[(1, 6)] = "PI()"
    sh.formulas[(41, 3)] = "A1"  # a one-cell array formula
    sh.arrays[(41, 3)] = (41, 3, 41, 3)
    sh.formulas[(42, 3)] = "MMULT(A1:B2,C1:D2)"  # a larger array formula: left out
    sh.arrays[(42, 3)] = (42, 3, 43, 4)
    sh.formulas[(50, 2)] = "A50*2"  # a shared formula's master and its followers
    sh.masters["0"] = ((50, 2), "A50*2")
    for r in range(51, 55):
        sh.shared[(r, 2)] = "0"
    got = r1c1_groups(sh)
    assert list(got.items()) == list(_per_cell(sh).items())
    assert len(got["R[0]C[-2]*R1C2+1"]) > 1  # the column of one shape was split by its literal only
