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
