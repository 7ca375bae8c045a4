"""``xlmnist train`` (a file, no LibreOffice): the history charts' ranges end at the last epoch written,
and a second run rewrites them."""

from __future__ import annotations

import re
import shutil
import zipfile

from xlmnist.lessons.learn import fit_chart_rows
from xlmnist.train.session import train_book


def _ranges(path) -> set[str]:
    with zipfile.ZipFile(path) as zf:
        xml = b"".join(zf.read(n) for n in zf.namelist() if n.startswith("xl/charts/chart"))
    return set(re.findall(r"<f>'history_linear'!(\$A\$3:\$[A-Z]\$\d+)</f>", xml.decode()))


def test_charts_follow_each_run(books, tmp_path):
    path = tmp_path / "m.xlsx"
    shutil.copyfile(books / "mnist_3v7.xlsx", path)
    assert _ranges(path) == {"$A$3:$A$202"}  # as built: the whole block
    train_book(path, sheet="linear", epochs=2)
    assert _ranges(path) == {"$A$3:$A$4"}
    train_book(path, sheet="linear", epochs=5)
    assert _ranges(path) == {"$A$3:$A$7"}


def test_fit_chart_rows_leaves_other_ranges_alone():
    xml = b"<c:f>'h'!$B$3:$B$202</c:f><c:f>'h'!B2</c:f><c:f>other!$B$3:$B$202</c:f><c:f>'h'!$B$9:$B$20</c:f>"
    assert fit_chart_rows(xml, "h", 3, 202, 12) == (
        b"<c:f>'h'!$B$3:$B$12</c:f><c:f>'h'!B2</c:f><c:f>other!$B$3:$B$202</c:f><c:f>'h'!$B$9:$B$20</c:f>"
    )
