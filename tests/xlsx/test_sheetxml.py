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
