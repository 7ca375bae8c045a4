"""xlmnist.data: Titanic vs the course workbook, the IDX reader, MNIST lookup/download, the 3-vs-7 sample."""

from __future__ import annotations

import functools
import gzip
import hashlib
import shutil
import struct
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import openpyxl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from testenv import COURSE_TITANIC as COURSE_XLSX
from testenv import MNIST_DIR, needs_course, needs_mnist

from xlmnist import data
from xlmnist.errors import DataError

SHARED_NAMES = {  # canonical (mirror) name -> the file name in ../shared/data/mnist
    "train-images-idx3-ubyte": "train-images.idx3-ubyte.gz",
    "train-labels-idx1-ubyte": "train-labels.idx1-ubyte.gz",
    "t10k-images-idx3-ubyte": "t10k-images.idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte": "t10k-labels.idx1-ubyte.gz",
}
README_MD5 = {  # ../shared/data/README.md
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """No test sees the user's cache, $XLMNIST_DATA or the real mirrors."""
    monkeypatch.delenv("XLMNIST_DATA", raising=False)
    monkeypatch.setenv("XLMNIST_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("XLMNIST_MNIST_MIRRORS", "http://127.0.0.1:9/unreachable/")


def idx_bytes(arr: np.ndarray) -> bytes:
    magic = data.IDX_IMAGES if arr.ndim == 3 else data.IDX_LABELS
    return struct.pack(f">i{arr.ndim}i", magic, *arr.shape) + arr.astype(np.uint8).tobytes()


def write_split(folder: Path, split: str, fill: int, n: int = 5, style: str = "canonical.gz") -> None:
    """A tiny MNIST-like split whose pixels all equal ``fill`` (to tell folders apart)."""
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {"images": np.full((n, 28, 28), fill, np.uint8), "labels": np.arange(n, dtype=np.uint8)}
    for kind, arr in arrays.items():
        name = data.MNIST_FILES[(split, kind)]
        base, ext = style.split(".", 1) if "." in style else (style, "")
        fname = (name if base == "canonical" else name.replace("-idx", ".idx")) + ("." + ext if ext else "")
        raw = idx_bytes(arr)
        (folder / fname).write_bytes(gzip.compress(raw) if ext == "gz" else raw)


# ----------------------------------------------------------------------------------------------- Titanic
def test_titanic_raw_is_the_kaggle_csv():
    assert hashlib.md5(data.TITANIC_CSV.read_bytes()).hexdigest() == "2309cc5f04782ed9bb6016d9f4e381cf"
    raw = data.load_titanic_raw()
    assert raw.shape == (891, 12)
    assert int(raw["Survived"].sum()) == 342
    assert int(raw["Age"].isna().sum()) == 177 and int(raw["Embarked"].isna().sum()) == 2


@functools.cache
def course_linear_rows():
    wb = openpyxl.load_workbook(COURSE_XLSX, data_only=True, read_only=True)
    ws = wb["linear"]
    header = next(ws.iter_rows(min_row=3, max_row=3, max_col=16, values_only=True))
    rows = list(ws.iter_rows(min_row=4, max_row=716, max_col=16, values_only=True))
    wb.close()
    return header, rows


@needs_course
def test_titanic_table_columns_match_course_sheet():
    header, rows = course_linear_rows()
    assert list(header) == data.TITANIC_COLUMNS
    assert list(header[6:]) == data.TITANIC_FEATURES
    assert rows[712] == (None,) * 16  # the course table ends at row 715: 712 rows


@needs_course
@pytest.mark.parametrize("column", data.TITANIC_COLUMNS)
def test_titanic_table_equals_course_sheet(column):
    header, rows = course_linear_rows()
    table = data.titanic_table()
    assert len(table) == 712
    j = list(header).index(column)
    ours, theirs = table[column].tolist(), [r[j] for r in rows[:712]]
    if isinstance(theirs[0], str):
        assert ours == theirs
    else:
        np.testing.assert_allclose(np.asarray(ours, float), np.asarray(theirs, float), rtol=1e-13, atol=0)


def test_titanic_missing_values_are_dropped_not_imputed():
    raw = data.load_titanic_raw()
    table = data.titanic_table(raw)
    kept = raw[raw["Age"].notna() & raw["Embarked"].notna()]
    assert table["Age"].tolist() == kept["Age"].tolist()
    assert not table.isna().any().any()
    assert table["Age_N"].max() == 1.0 and table["Ones"].eq(1).all()


def test_titanic_bad_csv_is_a_data_error(tmp_path):
    bad = tmp_path / "t.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"t\.csv.*missing columns"):
        data.load_titanic_raw(bad)
    with pytest.raises(DataError, match="nope.csv"):
        data.load_titanic_raw(tmp_path / "nope.csv")


# ----------------------------------------------------------------------------------------------- IDX reader
@needs_mnist
@pytest.mark.parametrize("canonical", list(SHARED_NAMES))
def test_read_idx_real_files(canonical):
    path = MNIST_DIR / SHARED_NAMES[canonical]
    arr = data.read_idx(path)
    assert arr.dtype == np.uint8
    assert hashlib.md5(gzip.decompress(path.read_bytes())).hexdigest() == README_MD5[canonical]
    n = 60000 if canonical.startswith("train") else 10000
    assert arr.shape == ((n, 28, 28) if "images" in canonical else (n,))


@needs_mnist
def test_read_idx_raw_equals_gz(tmp_path):
    src = MNIST_DIR / "t10k-labels.idx1-ubyte.gz"
    raw = tmp_path / "t10k-labels-idx1-ubyte"
    raw.write_bytes(gzip.decompress(src.read_bytes()))
    np.testing.assert_array_equal(data.read_idx(raw), data.read_idx(src))


def _small_images() -> bytes:
    return idx_bytes(np.arange(3 * 28 * 28, dtype=np.int64).reshape(3, 28, 28) % 256)


CORRUPTIONS = {  # name -> (file name, bytes, message pattern)
    "truncated raw": ("imgs-idx3-ubyte", lambda: _small_images()[:-1], "truncated"),
    "trailing bytes": ("imgs-idx3-ubyte", lambda: _small_images() + b"\0", "trailing"),
    "truncated gzip": ("imgs-idx3-ubyte.gz", lambda: gzip.compress(_small_images())[:-20], "gzip"),
    "gzip of truncated": ("imgs-idx3-ubyte.gz", lambda: gzip.compress(_small_images()[:-100]), "truncated"),
    "wrong magic": ("imgs-idx3-ubyte", lambda: b"\0\0\x08\x04" + _small_images()[4:], "magic"),
    "png magic": ("imgs-idx3-ubyte", lambda: b"\x89PNG\r\n\x1a\n" + b"\0" * 100, "magic"),
    "wrong count": ("imgs-idx3-ubyte", lambda: struct.pack(">i", 0x803) + struct.pack(">iii", 4, 28, 28) + _small_images()[16:], "truncated"),
    "wrong dims": ("imgs-idx3-ubyte", lambda: struct.pack(">iiii", 0x803, 3, 29, 27) + _small_images()[16:], "28x28"),
    "label count": ("labels-idx1-ubyte", lambda: struct.pack(">ii", 0x801, 11) + bytes(10), "truncated"),
    "not gzip": ("imgs-idx3-ubyte.gz", lambda: b"this is not gzip at all", "not a gzip"),
    "empty": ("imgs-idx3-ubyte", lambda: b"", "too short"),
    "header only": ("imgs-idx3-ubyte", lambda: struct.pack(">ii", 0x803, 3), "header"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_read_idx_corrupt_files_name_the_file(tmp_path, case):
    fname, content, pattern = CORRUPTIONS[case]
    path = tmp_path / fname
    path.write_bytes(content())
    with pytest.raises(DataError, match=pattern) as info:
        data.read_idx(path)
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 4), images=st.booleans(), cut=st.integers(1, 40), seed=st.integers(0, 2**32 - 1))
def test_parse_idx_round_trip_and_any_truncation(n, images, cut, seed):
    arr = np.random.default_rng(seed).integers(0, 256, (n, 28, 28) if images else (n,), dtype=np.uint8)
    blob = idx_bytes(arr)
    np.testing.assert_array_equal(data.parse_idx(blob, "x"), arr)
    with pytest.raises(DataError, match="^x: "):
        data.parse_idx(blob[: max(0, len(blob) - cut)], "x")


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="nothing-here"):
        data.read_idx(tmp_path / "nothing-here.gz")


# ----------------------------------------------------------------------------------------------- lookup
@pytest.mark.parametrize("style", ["canonical.gz", "canonical", "dotted.gz", "dotted"])
def test_lookup_accepts_file_name_styles(tmp_path, style):
    write_split(tmp_path / "d", "test", fill=7, style=style)
    x, y = data.load_mnist("test", tmp_path / "d", download=False)
    assert x.shape == (5, 28, 28) and (x == 7).all() and y.tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    "where, expected",
    [(("explicit", "env", "cache"), 1), (("env", "cache"), 2), (("cache",), 3), (("explicit", "cache"), 1)],
)
def test_lookup_order(tmp_path, monkeypatch, where, expected):
    fills = {"explicit": 1, "env": 2, "cache": 3}
    folders = {"explicit": tmp_path / "explicit", "env": tmp_path / "env", "cache": tmp_path / "cache"}
    for name in where:
        write_split(folders[name], "train", fill=fills[name])
    monkeypatch.setenv("XLMNIST_DATA", str(folders["env"]))
    (tmp_path / "explicit").mkdir(exist_ok=True)
    x, _ = data.load_mnist("train", tmp_path / "explicit", download=False)
    assert (x == expected).all()
    assert data.mnist_available(tmp_path / "explicit", split="train")
    assert not data.mnist_available(tmp_path / "explicit")  # no test split anywhere


def test_incomplete_folder_is_skipped_and_no_download(tmp_path):
    write_split(tmp_path / "d", "test", fill=1)
    (tmp_path / "d" / "t10k-labels-idx1-ubyte.gz").unlink()
    assert not data.mnist_available(tmp_path / "d", split="test")
    with pytest.raises(DataError, match="not found.*download=False"):
        data.load_mnist("test", tmp_path / "d", download=False)
    with pytest.raises(DataError, match="no such MNIST folder"):
        data.load_mnist("test", tmp_path / "missing", download=False)
    with pytest.raises(DataError, match="unknown MNIST split"):
        data.load_mnist("valid", download=False)


@needs_mnist
def test_mnist_available_on_shared_data(monkeypatch):
    assert data.mnist_available(MNIST_DIR)
    assert not data.mnist_available()
    monkeypatch.setenv("XLMNIST_DATA", str(MNIST_DIR))
    assert data.mnist_available()


# ----------------------------------------------------------------------------------------------- download
class Mirror:
    """A real HTTP server on 127.0.0.1 serving a folder; records the paths requested."""

    def __init__(self, root: Path):
        self.root, self.requests = root, []
        mirror = self

        class Handler(SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(root), **kwargs)

            def log_message(self, *args):
                mirror.requests.append(self.path)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def www(tmp_path_factory, full_mnist):
    """good/: the mirror file names; bad/: the test split with bytes flipped (right gzip, wrong md5)."""
    root = tmp_path_factory.mktemp("www")
    (root / "good").mkdir()
    (root / "bad").mkdir()
    for canonical, shared in SHARED_NAMES.items():
        shutil.copyfile(MNIST_DIR / shared, root / "good" / (canonical + ".gz"))
        if canonical.startswith("t10k"):  # the same file with two pixel bytes flipped, re-gzipped
            raw = bytearray(gzip.decompress((MNIST_DIR / shared).read_bytes()))
            raw[-1] ^= 0xFF
            raw[len(raw) // 2] ^= 0x01
            (root / "bad" / (canonical + ".gz")).write_bytes(gzip.compress(bytes(raw), compresslevel=1))
    return root


@pytest.fixture
def mirror(www):
    m = Mirror(www)
    yield m
    m.close()


def cache_files(tmp_path) -> list[str]:
    cache = tmp_path / "cache"
    return sorted(p.name for p in cache.iterdir()) if cache.exists() else []


@pytest.mark.parametrize("split", ["test", "train"])
def test_download_verifies_caches_and_reuses(tmp_path, monkeypatch, mirror, split):
    monkeypatch.setenv("XLMNIST_MNIST_MIRRORS", mirror.url + "good/")
    assert not data.mnist_available(split=split)
    x, y = data.load_mnist(split)
    prefix = "t10k" if split == "test" else "train"
    assert sorted(mirror.requests) == [
        f"/good/{prefix}-images-idx3-ubyte.gz",
        f"/good/{prefix}-labels-idx1-ubyte.gz",
    ]
    assert cache_files(tmp_path) == [f"{prefix}-images-idx3-ubyte.gz", f"{prefix}-labels-idx1-ubyte.gz"]
    for kind, arr in (("images", x), ("labels", y)):
        name = data.MNIST_FILES[(split, kind)]
        raw = gzip.decompress((tmp_path / "cache" / (name + ".gz")).read_bytes())
        assert hashlib.md5(raw).hexdigest() == README_MD5[name] == data.MNIST_MD5[name]
        np.testing.assert_array_equal(arr, data.read_idx(MNIST_DIR / SHARED_NAMES[name]))
    mirror.close()  # the second call must not need the server
    assert data.mnist_available(split=split)
    x2, y2 = data.load_mnist(split, download=False)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(y2, y)
    if split == "train":
        assert np.bincount(y, minlength=10).tolist() == TRAIN_COUNTS


def test_download_checksum_mismatch_leaves_nothing(tmp_path, monkeypatch, mirror):
    monkeypatch.setenv("XLMNIST_MNIST_MIRRORS", mirror.url + "bad/")
    with pytest.raises(DataError) as info:
        data.load_mnist("test")
    msg = str(info.value)
    assert "checksum mismatch" in msg and "t10k-images-idx3-ubyte" in msg
    assert README_MD5["t10k-images-idx3-ubyte"] in msg
    got = hashlib.md5(
        gzip.decompress((mirror.root / "bad" / "t10k-images-idx3-ubyte.gz").read_bytes())
    ).hexdigest()
    assert got in msg
    assert cache_files(tmp_path) == []  # no partial or unverified file


@pytest.mark.parametrize(
    "mirrors",
    [["missing/", "good/"], ["bad/", "good/"], ["http://127.0.0.1:9/refused/", "good/"]],
    ids=["404-then-good", "corrupt-then-good", "refused-then-good"],
)
def test_download_falls_back_to_next_mirror(tmp_path, monkeypatch, mirror, mirrors):
    urls = [m if m.startswith("http") else mirror.url + m for m in mirrors]
    monkeypatch.setenv("XLMNIST_MNIST_MIRRORS", ",".join(urls))
    x, y = data.load_mnist("test")
    assert x.shape == (10000, 28, 28) and np.bincount(y)[[3, 7]].tolist() == [1010, 1028]
    assert "/good/t10k-images-idx3-ubyte.gz" in mirror.requests
    assert cache_files(tmp_path) == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"]


def test_download_all_mirrors_fail(tmp_path, monkeypatch, mirror):
    monkeypatch.setenv("XLMNIST_MNIST_MIRRORS", f"{mirror.url}missing/,{mirror.url}also-missing")
    with pytest.raises(DataError, match=r"cannot download t10k-images-idx3-ubyte\.gz:.*404.*also-missing/"):
        data.load_mnist("test")
    assert cache_files(tmp_path) == []


def test_download_false_never_touches_the_network(monkeypatch, mirror):
    monkeypatch.setenv("XLMNIST_MNIST_MIRRORS", mirror.url + "good/")
    with pytest.raises(DataError, match="download=False"):
        data.load_mnist("test", download=False)
    assert not data.mnist_available()
    assert data.load_3v7("auto")["train_x"].shape == (12396, 28, 28)  # the shipped sample, no download
    assert mirror.requests == []


# ----------------------------------------------------------------------------------------------- 3 vs 7
@functools.cache
def full_3v7():
    return data.load_3v7("mnist", MNIST_DIR)


def test_shipped_sample_counts_and_load_time():
    start = time.perf_counter()
    sample = data.load_3v7("sample")
    assert time.perf_counter() - start < 1.0
    assert data.SAMPLE_3V7.stat().st_size < 4_000_000
    assert {k: v.shape for k, v in sample.items()} == {
        "train_x": (12396, 28, 28), "train_y": (12396,), "valid_x": (2038, 28, 28), "valid_y": (2038,),
    }  # fmt: skip
    assert all(v.dtype == np.uint8 for v in sample.values())
    assert np.bincount(sample["train_y"]).tolist() == [6265, 6131]  # [7s, 3s]
    assert np.bincount(sample["valid_y"]).tolist() == [1028, 1010]
    assert sample["train_y"][:6131].all() and not sample["train_y"][6131:].any()  # threes first


@needs_mnist
def test_sample_equals_full_mnist_selection():
    sample, full = data.load_3v7("sample"), full_3v7()
    for key in sample:
        np.testing.assert_array_equal(sample[key], full[key])
    mn = data.load_mnist_all(MNIST_DIR)
    np.testing.assert_array_equal(full["train_x"][:6131], mn["train_x"][mn["train_y"] == 3])
    np.testing.assert_array_equal(full["valid_x"][1010:], mn["valid_x"][mn["valid_y"] == 7])


@needs_mnist
def test_auto_prefers_full_mnist(monkeypatch):
    monkeypatch.setenv("XLMNIST_DATA", str(MNIST_DIR))
    auto = data.load_3v7("auto")
    np.testing.assert_array_equal(auto["valid_x"], full_3v7()["valid_x"])
    with pytest.raises(DataError, match="unknown 3-vs-7 source"):
        data.load_3v7("kaggle")


@needs_mnist
def test_make_3v7_sample_reproduces_shipped_file(tmp_path):
    out = data.make_3v7_sample(MNIST_DIR, tmp_path / "s.npz")
    with np.load(out) as made, np.load(data.SAMPLE_3V7) as shipped:
        assert sorted(made.files) == sorted(shipped.files) == ["train_x", "train_y", "valid_x", "valid_y"]
        for key in made.files:
            np.testing.assert_array_equal(made[key], shipped[key])
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]  # no temp file left


# ----------------------------------------------------------------------------------------------- arrays
@pytest.mark.parametrize(
    "name, split, shape, labels",
    [
        ("titanic", "train", (712, 10), {0.0, 1.0}),
        pytest.param("mnist_3v7", "train", (12396, 784), {0.0, 1.0}, marks=needs_mnist),
        pytest.param("mnist_3v7", "valid", (2038, 784), {0.0, 1.0}, marks=needs_mnist),
        pytest.param("mnist", "valid", (10000, 784), set(map(float, range(10))), marks=needs_mnist),
    ],
)
def test_dataset_arrays(monkeypatch, name, split, shape, labels):
    monkeypatch.setenv("XLMNIST_DATA", str(MNIST_DIR))
    x, y = data.dataset_arrays(name, split)
    assert x.dtype == np.float64 and y.dtype == np.float64
    assert x.shape == shape and y.shape == (shape[0],) and set(np.unique(y)) == labels
    assert 0.0 <= x.min() and (x.max() == 1.0 if name != "titanic" else x[:, -1].min() == 1.0)
    if name == "mnist_3v7":
        raw = full_3v7()[f"{split}_x"]
        np.testing.assert_array_equal(x[5], raw[5].reshape(-1) / 255.0)


@pytest.mark.parametrize(
    "name, split, pattern",
    [
        ("cifar", "train", "unknown dataset"),
        ("titanic", "valid", "only the 'train'"),
        ("mnist", "test", "unknown split"),
    ],
)
def test_dataset_arrays_errors(name, split, pattern):
    with pytest.raises(DataError, match=pattern):
        data.dataset_arrays(name, split, download=False)
