"""The block graph: copied formulas grouped into blocks, split_rows, topological order, cycles."""

from __future__ import annotations

import pytest

from xlmnist.errors import FormulaError
from xlmnist.formula.graph import Graph, topo_order
from xlmnist.xlsx.reader import Sheet, Workbook
from xlmnist.xlsx.refs import parse_cell


def book(cells: dict[str, str], **sheets) -> Workbook:
    """Sheet ``S`` with formulas (text without "=") or numbers at the given A1 cells."""
    out = {}
    for name, content in {"S": cells, **sheets}.items():
        sh = Sheet(name)
        for ref, v in content.items():
            rc = parse_cell(ref)
            if isinstance(v, str):
                sh.formulas[rc] = v
            else:
                sh.values[rc] = float(v)
            sh.max_row, sh.max_col = max(sh.max_row, rc[0]), max(sh.max_col, rc[1])
        out[name] = sh
    return Workbook("t.xlsx", out, list(out), {}, {})


def blocks(g: Graph) -> list[str]:
    return sorted(b.name for b in g.blocks)


def test_copied_formulas_are_one_block_per_rectangle():
    cells = {f"A{r}": r for r in range(1, 6)}
    cells |= {f"B{r}": f"A{r}*2" for r in range(1, 6)}  # copied down: one block
    cells |= {f"C{r}": f"B{r}+$A$1" for r in range(1, 4)}  # another formula, shorter
    cells |= {"C5": "B5+$A$1"}  # same relative formula, not contiguous: its own rectangle
    cells |= {"D1": "SUM(B1:B5)"}
    g = Graph(book(cells))
    assert blocks(g) == ["S!B1:B5", "S!C1:C3", "S!C5", "S!D1"]
    assert g.block_at("S", 3, 2).name == "S!B1:B5"
    assert g.block_at("S", 4, 3) is None
    assert g.blocks_in("S", 1, 1, 5, 2) == [g.block_at("S", 1, 2).id]


def test_split_rows_cuts_blocks_at_the_bounds():
    g = Graph(book({f"B{r}": f"A{r}+1" for r in range(1, 11)}))
    new = g.split_rows("S", (4, 8, 20))
    assert blocks(g) == ["S!B1:B3", "S!B4:B7", "S!B8:B10"]
    assert sorted(g.blocks[i].name for i in new) == ["S!B4:B7", "S!B8:B10"]
    assert g.block_at("S", 9, 2).name == "S!B8:B10"


def test_topo_order_dependencies_first():
    g = Graph(book({"A1": 1, "B1": "A1*2", "C1": "B1+D1", "D1": "B1*3", "E1": "C1"}))
    at = {b.name: b.id for b in g.blocks}
    order = [g.blocks[i].name for i in topo_order(g, [at["S!E1"]])]
    assert order.index("S!B1") < order.index("S!D1") < order.index("S!C1") < order.index("S!E1")
    assert "S!A1" not in order  # a constant is no block


def test_cycle_and_self_reference_are_named():
    g = Graph(book({"A1": "B1+1", "B1": "A1*2"}))
    with pytest.raises(FormulaError, match=r"S!(A1|B1): circular reference"):
        topo_order(g, [g.block_at("S", 1, 1).id])
    g = Graph(book({"A1": "A1+1"}))
    with pytest.raises(
        FormulaError, match=r"S!A1: circular reference \(the formula refers to its own cell\)"
    ):
        topo_order(g, [g.block_at("S", 1, 1).id])


def test_cross_sheet_dependency():
    g = Graph(book({"A1": "T!B2*2"}, T={"B2": "C2+1", "C2": 4}))
    order = [g.blocks[i].name for i in topo_order(g, [g.block_at("S", 1, 1).id])]
    assert order == ["T!B2", "S!A1"]


def test_block_cycle_the_cells_do_not_have_is_split():
    """C7:D7 sum the columns above; D2:D6 read C7: one block C7:D7 would be a false cycle."""
    cells = {f"C{r}": r for r in range(2, 7)}
    cells |= {f"D{r}": f"C{r}/C$7" for r in range(2, 7)}
    cells |= {"C7": "SUM(C2:C6)", "D7": "SUM(D2:D6)"}
    g = Graph(book(cells))
    assert blocks(g) == ["S!C7", "S!D2:D6", "S!D7"]
    order = [g.blocks[i].name for i in topo_order(g, [g.block_at("S", 7, 4).id])]
    assert order == ["S!C7", "S!D2:D6", "S!D7"]


def test_real_cycle_is_reported_with_its_path():
    g = Graph(book({"A1": "B1+1", "B1": "C1*2", "C1": "A1-1", "D1": "A1"}))
    with pytest.raises(FormulaError, match=r"circular reference \(S!(A1|B1|C1) -> S!\w1 -> S!\w1 -> S!\1\)"):
        topo_order(g, [g.block_at("S", 1, 4).id])
    # a copied row whose cells form a cycle through another block: split to cells, still a cycle
    g = Graph(book({"A1": "C1", "B1": "D1", "C1": "B1", "D1": "A1"}))
    with pytest.raises(FormulaError, match=r"circular reference \((S!\w1 -> ){4}S!\w1\)"):
        topo_order(g, [g.block_at("S", 1, 1).id])
