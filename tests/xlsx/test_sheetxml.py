"""The worksheet parser on small hand-written sheet XML: the fast path and the iterparse fallback agree."""

from __future__ import annotations

import zipfile

import pytest

from xlmnist.xlsx.reader import XLError, read_workbook
from xlmnist.xlsx.refs import col_index, col_letters, quote_sheet, split_areas, split_ref, unquote_sheet

NS = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
R_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
CELLS = (
    '<row r="1"><c r="A1"><v>1.5</v></c><c r="B1" t="s"><v>0</v></c><c r="C1" t="b"><v>1</v></c>'
    '<c r="D1" t="e"><v>#DIV/0!</v></c><c r="E1" t="inlineStr"><is><t>inline</t></is></c></row>'
    '<row r="2"><c r="A2"><f t="shared" ref="A2:A4" si="0">B2*2</f><v>0</v></c>'
    '<c r="B2"><f t="array" ref="B2:C3">MMULT(D2:D3,E2:F2)</f><v>1</v></c><c r="F2" s="1"/></row>'
    '<row r="3"><c r="A3"><f t="shared" si="0"/><v>0</v></c></row>'
    '<row r="4"><c r="A4"><f t="shared" si="0"/></c><c r="C4" t="str"><f>A4&amp;"&lt;"</f><v>x</v></c></row>'
)


def write_book(path, sheet_xml: str, prefix: str = "") -> None:
    """A minimal xlsx by hand; ``prefix`` "x:" makes the fast path give up (namespace prefix)."""
    p = prefix
    ns = NS.replace("xmlns=", f"xmlns:{p[:-1]}=") if p else NS
    body = (
        f"<{p}worksheet {ns}><{p}sheetData>{sheet_xml.replace('<', '<' + p).replace('<' + p + '/', '</' + p)}"
    )
    body += f"</{p}sheetData></{p}worksheet>"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(
            "xl/workbook.xml",
            f'<workbook {NS} xmlns:r="{R_NS}"><sheets><sheet name="S" sheetId="1" r:id="rId1"/></sheets></workbook>',
        )
        z.writestr(
            "xl/_rels/workbook.xml.rels",
            '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
            '<Relationship Id="rId1" Type="x/worksheet" Target="worksheets/sheet1.xml"/>'
            '<Relationship Id="rId2" Type="x/sharedStrings" Target="sharedStrings.xml"/></Relationships>',
        )
        z.writestr("xl/worksheets/sheet1.xml", body)
        z.writestr("xl/sharedStrings.xml", f"<sst {NS}><si><t>shared</t></si></sst>")


@pytest.mark.parametrize("prefix", ["", "x:"], ids=["fast", "iterparse"])
def test_cell_kinds(tmp_path, prefix):
    path = tmp_path / "s.xlsx"
    write_book(path, CELLS, prefix)
    sh = read_workbook(path).sheet("S")
    assert sh.values[(1, 1)] == 1.5 and sh.values[(1, 2)] == "shared" and sh.values[(1, 3)] is True
    assert sh.values[(1, 4)] == XLError("#DIV/0!") and isinstance(sh.values[(1, 4)], XLError)
    assert sh.values[(1, 5)] == "inline"
    assert (2, 6) not in sh.values and (9, 9) not in sh.values  # a styled empty cell, a missing cell
    assert sh.formula((2, 1)) == "B2*2" and sh.formula((3, 1)) == "B3*2" and sh.formula((4, 1)) == "B4*2"
    assert sh.master_text((4, 1)) == ((2, 1), "B2*2")
    assert sh.arrays == {(2, 2): (2, 2, 3, 3)}
    assert sh.formula((4, 3)) == 'A4&"<"' and sh.values[(4, 3)] == "x"
    assert (sh.max_row, sh.max_col) == (4, 5)  # the styled empty F2 is not content


def test_refs_round_trip():
    for n in (1, 26, 27, 702, 703, 16384):
        assert col_index(col_letters(n)) == n
    assert col_letters(16384) == "XFD"
    assert split_ref("'it''s'!$B$3:A1") == ("it's", 1, 1, 3, 2)
    assert unquote_sheet(quote_sheet("it's")) == "it's" and quote_sheet("nnet") == "nnet"
    assert split_areas("='a,b'!$A$1,h!B2:C3") == ["'a,b'!$A$1", "h!B2:C3"]
    for bad in ("A1", "S!A1:B2:C3", "S!XFE1", "S!A0"):
        with pytest.raises(Exception, match=bad.split("!")[-1] if "!" in bad else "must name its sheet"):
            split_ref(bad)


# Cells the bulk scanner (cellscan) must take as numbers, or leave to the regular expressions: each is
# read the same by the fast path and by iterparse (the "x:" prefix makes the fast path give up).
EDGE_CELLS = (
    '<row r="1"><c r="A1" s="3" t="n"><v>1E-3</v></c><c r="B1" t="n" s="2"><v>-0.5</v></c>'
    '<c r="C1" t="s"><v>0</v></c><c r="D1" t="b"><v>0</v></c><c r="E1" t="str"><v>12</v></c>'
    '<c r="F1" t="e"><v>#N/A</v></c><c r="G1" vm="1"><v>5</v></c><c r="H1"><v> 7 </v></c>'
    '<c r="I1" t="n"><v>12345678901234567890</v></c><c r="J1" t="inlineStr"><is><t>5</t></is></c>'
    '<c r="K1" t=\'s\'><v>0</v></c><c r="L1" t = "s"><v>0</v></c><c r="M1"   s="12"><v>+.5e+2</v></c>'
    '<c r="N1" s="1" t="b"><v>1</v></c><c r="O1" cm="1" t="n"><v>9</v></c><c r="P1" s="4"/></row>'
    '<row r="2"><c r="A2"><f>SUM(A1:B1)</f><v>3</v></c><c r="B2" s="2"><f>A1&amp;"x&lt;"</f><v/></c>'
    '<c r="C2"><f>1+1</f></c><c r="D2" t="str"><f>"a"</f><v>a</v></c><c r="E2"><f>=A1</f><v /></c>'
    '<c r="F2"><f> A1 </f></c><c r="G2" t="b"><f>TRUE</f><v>1</v></c><c r="H2"><f>D1</f><v>0.25</v></c>'
    "<c r=\"I2\"><f t='shared' ref='I2:I3' si='0'>A2*2</f><v>6</v></c></row>"
    '<row r="3"><c r="I3"><f t="shared" si="0"/><v>0</v></c><c r="A3">\n  <v>4</v>\n</c>'
    '<c r="B3" t="n"><v>0.1</v></c><c r="XFD3"><v>2</v></c><c r="AB3" s="1"><v>3</v></c></row>'
)


def _cells(sh):
    return {k: (type(v).__name__, repr(v)) for k, v in sh.values.items()}


def test_edge_cells_fast_and_iterparse_agree(tmp_path):
    books = []
    for prefix in ("", "x:"):
        path = tmp_path / f"e{len(prefix)}.xlsx"
        write_book(path, EDGE_CELLS, prefix)
        books.append(read_workbook(path).sheet("S"))
    fast, slow = books
    assert _cells(fast) == _cells(slow)
    assert dict(fast.formulas) == dict(slow.formulas) and fast.shared == slow.shared
    assert (fast.max_row, fast.max_col) == (slow.max_row, slow.max_col) == (3, 16384)
    v = fast.values
    assert v[(1, 1)] == 0.001 and v[(1, 3)] == "shared" and v[(1, 4)] is False and v[(1, 5)] == "12"
    assert v[(1, 11)] == "shared" and v[(1, 12)] == "shared" and v[(1, 13)] == 50.0 and v[(1, 8)] == 7.0
    assert (
        fast.formulas[(2, 2)] == 'A1&"x<"' and fast.formulas[(2, 5)] == "A1" and fast.formulas[(2, 6)] == "A1"
    )
    assert v[(2, 1)] == 3.0 and (2, 2) not in v and v[(2, 7)] is True and v[(2, 8)] == 0.25
    assert fast.formula((3, 9)) == "A3*2" and v[(3, 16384)] == 2.0


def test_numbers_read_exactly_as_float(tmp_path):
    import random
    import struct

    rng = random.Random(7)
    texts = ["0", "1", "-0", "0.1", "1e-320", "4.9406564584124654E-324", "1.7976931348623157e308", "5."]
    for _ in range(3000):
        x = struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0]
        if x == x and abs(x) != float("inf"):
            texts += [repr(x), f"{x:.17g}", f"{x:.15E}"]
        texts.append(repr(rng.random()))
    cells = "".join(
        f'<row r="{i // 100 + 1}">'
        + "".join(f'<c r="{col_letters(j % 100 + 1)}{i // 100 + 1}"><v>{t}</v></c>' for j, t in chunk)
        + "</row>"
        for i, chunk in ((i, list(enumerate(texts[i : i + 100], i))) for i in range(0, len(texts), 100))
    )
    path = tmp_path / "n.xlsx"
    write_book(path, cells)
    sh = read_workbook(path).sheet("S")
    for i, t in enumerate(texts):
        got = sh.values[(i // 100 + 1, i % 100 + 1)]
        assert type(got) is float and struct.pack("<d", got) == struct.pack("<d", float(t)), t


def test_scanner_takes_plain_numbers_and_formulas_and_leaves_the_rest():
    from xlmnist.xlsx import cellscan

    xml = (
        b'<row r="7"><c r="B7" s="1" t="n"><v>0.5</v></c><c r="C7" t="s"><v>0</v></c>'
        b'<c r="AD7"><v>3</v></c><c r="E7"><f>B7&amp;&lt;</f><v>1</v></c><c r="F7"><f>1</f><v/></c>'
        b'<c r="G7" t="str"><f>"x"</f><v>x</v></c><c r="H7"><f t="shared" si="0">B7</f></c></row>'
    )
    found = cellscan.scan(xml)
    rows, cols, values = found.numbers
    assert rows.tolist() == [7, 7] and cols.tolist() == [2, 30] and values.tolist() == [0.5, 3.0]
    rows, cols, texts = found.formulas
    assert rows.tolist() == [7, 7] and cols.tolist() == [5, 6] and texts == ["B7&<", "1"]
    assert [x.tolist() for x in found.cached] == [[7], [5], [1.0]]
    assert [x.tolist() for x in found.strings] == [[7], [3], [0]]  # C7: shared string 0
    assert found.rest == (
        b'<row r="7"><c r="G7" t="str"><f>"x"</f><v>x</v></c><c r="H7"><f t="shared" si="0">B7</f></c></row>'
    )
    assert found.cells == 7
    assert cellscan.scan(b'<row r="1"><!-- <c r="A1"><v>1</v></c> --></row>') is None


@pytest.mark.parametrize("prefix", ["", "x:"], ids=["fast", "iterparse"])
def test_shared_string_index_out_of_range_is_corrupt(tmp_path, prefix):
    from xlmnist.errors import WorkbookError

    path = tmp_path / "bad.xlsx"
    write_book(path, '<row r="1"><c r="A1" t="s"><v>5</v></c></row>', prefix)
    with pytest.raises(WorkbookError, match="bad.xlsx: corrupt xlsx workbook"):
        read_workbook(path)
