"""Datasets: Titanic (course preprocessing), MNIST (IDX reader, lookup, verified download), 3-vs-7 sample.

* Titanic: the Kaggle ``train.csv`` ships as ``xlmnist/datasets/titanic_train.csv``; :func:`titanic_table`
  reproduces the course workbook's ``linear`` sheet (712 rows, same order, same columns).
* MNIST: :func:`read_idx` parses IDX files (gzip or raw); :func:`load_mnist` looks in an explicit folder,
  then ``$XLMNIST_DATA``, then the cache folder (``$XLMNIST_CACHE`` or ``~/.cache/xlmnist/mnist``), then
  downloads from the mirrors (``$XLMNIST_MNIST_MIRRORS``, comma-separated base URLs) and checks the
  decompressed md5 before anything lands in the cache.
* 3 vs 7 (fast.ai MNIST_SAMPLE): all 3s and 7s of MNIST train ("train") and test ("valid"), y = 1 for a 3.
  A copy ships as ``xlmnist/datasets/mnist_3v7.npz`` so nothing has to be downloaded.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
import os
import struct
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np

from xlmnist.errors import DataError

log = logging.getLogger(__name__)

DATASETS_DIR = Path(__file__).resolve().with_name("datasets")
TITANIC_CSV = DATASETS_DIR / "titanic_train.csv"
SAMPLE_3V7 = DATASETS_DIR / "mnist_3v7.npz"
DATASET_NAMES = ("titanic", "mnist_3v7", "mnist")

# ----------------------------------------------------------------------------------------------- Titanic
TITANIC_RAW_COLUMNS = ["PassengerId", "Survived", "Pclass", "Name", "Sex", "Age", "SibSp", "Parch", "Ticket",
                       "Fare", "Cabin", "Embarked"]  # fmt: skip
TITANIC_COLUMNS = ["Survived", "Embarked", "Pclass", "Sex", "Age", "Fare", "SibSp", "Parch", "Age_N",
                   "log_Fare", "Pclass_1", "Pclass_2", "Embark_S", "Embark_C", "Male", "Ones"]  # fmt: skip
TITANIC_FEATURES = ["SibSp", "Parch", "Age_N", "log_Fare", "Pclass_1", "Pclass_2", "Embark_S", "Embark_C",
                    "Male", "Ones"]  # fmt: skip


def load_titanic_raw(path: str | os.PathLike | None = None):
    """The Kaggle Titanic ``train.csv`` as a DataFrame (891 rows, 12 columns), shipped with xlmnist."""
    import pandas as pd  # deferred: pandas is only needed for the Titanic CSV (CLI start-up)

    src = Path(path) if path is not None else TITANIC_CSV
    try:
        df = pd.read_csv(src)
    except (OSError, ValueError) as exc:
        raise DataError(f"{src}: cannot read Titanic CSV: {exc}") from exc
    missing = [c for c in TITANIC_RAW_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{src}: not the Kaggle Titanic train.csv (missing columns {', '.join(missing)})")
    return df


def titanic_table(raw=None):
    """The course sheet's Titanic table (sheet ``linear`` of the fast.ai titanic.xlsx), 712 rows.

    Missing values are handled exactly like the course workbook: rows without an ``Age`` (177) are dropped,
    then rows without an ``Embarked`` (2), leaving 712 of the 891 passengers in their CSV order. Nothing is
    imputed. Derived columns, as the sheet's formulas compute them:
    ``Age_N = Age / max(Age)`` (max over the kept rows: 80), ``log_Fare = log10(Fare + 1)``,
    ``Pclass_1 = Pclass==1``, ``Pclass_2 = Pclass==2``, ``Embark_S = Embarked=="S"``,
    ``Embark_C = Embarked=="C"``, ``Male = Sex=="male"`` (0/1 integers) and ``Ones = 1`` (the bias input).
    The model inputs are :data:`TITANIC_FEATURES`; the label is ``Survived``.
    """
    df = load_titanic_raw() if raw is None else raw
    df = df[df["Age"].notna() & df["Embarked"].notna()].reset_index(drop=True)
    out = df[["Survived", "Embarked", "Pclass", "Sex", "Age", "Fare", "SibSp", "Parch"]].copy()
    out["Age"] = out["Age"].astype(float)
    out["Fare"] = out["Fare"].astype(float)
    out["Age_N"] = out["Age"] / out["Age"].max()
    out["log_Fare"] = np.log10(out["Fare"] + 1)
    out["Pclass_1"] = (out["Pclass"] == 1).astype(np.int64)
    out["Pclass_2"] = (out["Pclass"] == 2).astype(np.int64)
    out["Embark_S"] = (out["Embarked"] == "S").astype(np.int64)
    out["Embark_C"] = (out["Embarked"] == "C").astype(np.int64)
    out["Male"] = (out["Sex"] == "male").astype(np.int64)
    out["Ones"] = np.int64(1)
    return out[TITANIC_COLUMNS]


# ----------------------------------------------------------------------------------------------- MNIST IDX
IDX_IMAGES, IDX_LABELS = 0x00000803, 0x00000801
MNIST_FILES = {  # (split, kind) -> canonical file name (as on the mirrors, without .gz)
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
MNIST_MD5 = {  # md5 of the decompressed originals
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
MNIST_SIZES = {"train": 60000, "test": 10000}
MNIST_MIRRORS = (
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
)


def _file_bytes(path: Path) -> bytes:
    """The (decompressed) content of an IDX file; gzip is detected by its magic bytes."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise DataError(f"{path}: corrupt or truncated gzip data ({exc})") from exc
    if path.suffix == ".gz":
        raise DataError(f"{path}: not a gzip file")
    return data


def parse_idx(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Parse IDX bytes: images (magic 0x803) -> uint8 [N,28,28], labels (0x801) -> uint8 [N]."""
    if len(data) < 8:
        raise DataError(f"{name}: too short for an IDX file ({len(data)} bytes)")
    (magic,) = struct.unpack(">i", data[:4])
    if magic not in (IDX_IMAGES, IDX_LABELS):
        raise DataError(
            f"{name}: bad IDX magic number 0x{magic & 0xFFFFFFFF:08x} (expected 0x00000803 images or 0x00000801 labels)"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{name}: truncated IDX header")
    dims = struct.unpack(f">{ndim}i", data[4:header])
    if magic == IDX_IMAGES and dims[1:] != (28, 28):
        raise DataError(f"{name}: images are {dims[1]}x{dims[2]}, expected 28x28")
    if any(d < 0 for d in dims):
        raise DataError(f"{name}: negative IDX dimension {dims}")
    expected = header + int(np.prod(dims, dtype=np.int64))
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "trailing bytes"
        raise DataError(f"{name}: {what}: {len(data)} bytes, header {dims} needs {expected}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims).copy()


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an MNIST IDX file (``.gz`` or raw); raises :class:`DataError` naming the file if it is bad."""
    path = Path(path)
    return parse_idx(_file_bytes(path), str(path))


# ----------------------------------------------------------------------------------------------- MNIST lookup
def _candidates(folder: Path, canonical: str) -> list[Path]:
    dotted = canonical.replace("-idx", ".idx")  # train-images.idx3-ubyte
    return [folder / (base + ext) for base in (canonical, dotted) for ext in (".gz", "")]


def _find(folder: Path, canonical: str) -> Path | None:
    return next((p for p in _candidates(folder, canonical) if p.is_file()), None)


def cache_dir() -> Path:
    """Where downloaded MNIST files are kept: ``$XLMNIST_CACHE`` or ``~/.cache/xlmnist/mnist``."""
    env = os.environ.get("XLMNIST_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "xlmnist" / "mnist"


def mirrors() -> list[str]:
    env = os.environ.get("XLMNIST_MNIST_MIRRORS", "").strip()
    urls = [u.strip() for u in env.split(",") if u.strip()] if env else list(MNIST_MIRRORS)
    return [u if u.endswith("/") else u + "/" for u in urls]


def _search_dirs(path) -> list[Path]:
    dirs = []
    if path is not None:
        p = Path(path).expanduser()
        if not p.is_dir():
            raise DataError(f"{p}: no such MNIST folder")
        dirs.append(p)
    if os.environ.get("XLMNIST_DATA"):
        dirs.append(Path(os.environ["XLMNIST_DATA"]).expanduser())
    dirs.append(cache_dir())
    return dirs


def _local_split(split: str, path=None) -> dict[str, Path] | None:
    """The first folder (explicit path, $XLMNIST_DATA, cache) holding both files of ``split``."""
    for folder in _search_dirs(path):
        found = {kind: _find(folder, MNIST_FILES[(split, kind)]) for kind in ("images", "labels")}
        if all(found.values()):
            return found
    return None


def _check_split(split: str) -> None:
    if split not in MNIST_SIZES:
        raise DataError(f"unknown MNIST split {split!r} (use 'train' or 'test')")


def mnist_available(path=None, split: str | None = None) -> bool:
    """True when MNIST (both splits, or ``split``) is on disk; never downloads."""
    splits = [split] if split else list(MNIST_SIZES)
    try:
        return all(_local_split(s, path) is not None for s in splits)
    except DataError:
        return False


def _download(canonical: str, dest_dir: Path) -> Path:
    """Fetch ``canonical``.gz from the first mirror that serves it with the right md5; cache it atomically."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    want = MNIST_MD5[canonical]
    failures, mismatch = [], None
    for base in mirrors():
        url = base + canonical + ".gz"
        fd, tmp = tempfile.mkstemp(prefix=f".{canonical}.", suffix=".part", dir=dest_dir)
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
                while chunk := resp.read(1 << 20):
                    out.write(chunk)
            raw = _file_bytes(Path(tmp))
            got = hashlib.md5(raw).hexdigest()
            if got != want:
                mismatch = f"{url}: checksum mismatch for {canonical}: md5 {got}, expected {want}"
                failures.append(mismatch)
                continue
            parse_idx(raw, url)
            final = dest_dir / (canonical + ".gz")
            os.replace(tmp, final)
            log.info("downloaded %s -> %s", url, final)
            return final
        except urllib.error.HTTPError as exc:
            failures.append(f"{url}: HTTP {exc.code} {exc.reason}")
        except (urllib.error.URLError, OSError, DataError) as exc:
            failures.append(f"{url}: {getattr(exc, 'reason', None) or exc}")
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    if mismatch:
        raise DataError(mismatch + " (nothing cached)")
    raise DataError(f"cannot download {canonical}.gz: " + "; ".join(failures))


def load_mnist(split: str = "train", path=None, download: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """MNIST ``split`` ("train" 60,000 or "test" 10,000) as (images uint8 [N,28,28], labels uint8 [N]).

    Looks in ``path``, then ``$XLMNIST_DATA``, then the cache folder; downloads into the cache unless
    ``download=False`` (then a :class:`DataError` says where it looked).
    """
    _check_split(split)
    files = _local_split(split, path)
    if files is None:
        if not download:
            where = ", ".join(str(d) for d in _search_dirs(path))
            raise DataError(f"MNIST {split} files not found in {where} (and download=False)")
        cache = cache_dir()
        files = {}
        for kind in ("images", "labels"):
            name = MNIST_FILES[(split, kind)]
            files[kind] = _find(cache, name) or _download(name, cache)
    images, labels = read_idx(files["images"]), read_idx(files["labels"])
    if images.ndim != 3 or labels.ndim != 1:
        raise DataError(f"{files['images']}: images/labels files swapped or wrong kind")
    if len(images) != len(labels):
        raise DataError(f"{files['labels']}: {len(labels)} labels for {len(images)} images")
    return images, labels


def load_mnist_all(path=None, download: bool = True) -> dict[str, np.ndarray]:
    """Full MNIST: train_x [60000,28,28], train_y, valid_x [10000,28,28], valid_y (the test set)."""
    train_x, train_y = load_mnist("train", path, download)
    valid_x, valid_y = load_mnist("test", path, download)
    return {"train_x": train_x, "train_y": train_y, "valid_x": valid_x, "valid_y": valid_y}


# ----------------------------------------------------------------------------------------------- 3 vs 7
def _threes_sevens(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All 3s then all 7s (MNIST order kept within each digit); label 1 for a 3, 0 for a 7 (the book's)."""
    threes, sevens = x[y == 3], x[y == 7]
    labels = np.concatenate([np.ones(len(threes), np.uint8), np.zeros(len(sevens), np.uint8)])
    return np.concatenate([threes, sevens]), labels


def mnist_3v7_from(all_: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    train_x, train_y = _threes_sevens(all_["train_x"], all_["train_y"])
    valid_x, valid_y = _threes_sevens(all_["valid_x"], all_["valid_y"])
    return {"train_x": train_x, "train_y": train_y, "valid_x": valid_x, "valid_y": valid_y}


def make_3v7_sample(mnist_dir, out_path=SAMPLE_3V7) -> Path:
    """Write the 3-vs-7 sample (``np.savez_compressed``) from the MNIST files in ``mnist_dir``, atomically."""
    arrays = mnist_3v7_from(load_mnist_all(mnist_dir, download=False))
    out_path = Path(out_path)
    fd, tmp = tempfile.mkstemp(prefix=".mnist_3v7.", suffix=".npz", dir=out_path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; this file ships with the package
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out_path


def _load_sample(path=SAMPLE_3V7) -> dict[str, np.ndarray]:
    try:
        with np.load(path) as npz:
            arrays = {k: npz[k] for k in ("train_x", "train_y", "valid_x", "valid_y")}
    except (OSError, KeyError, ValueError, zlib.error) as exc:
        raise DataError(f"{path}: cannot read the 3-vs-7 sample: {exc}") from exc
    return arrays


def load_3v7(source: str = "auto", path=None) -> dict[str, np.ndarray]:
    """The fast.ai MNIST_SAMPLE task: train_x [12396,28,28] (6,131 3s then 6,265 7s), valid_x [2038,28,28].

    ``source``: "mnist" = select from full MNIST (downloading if needed), "sample" = the shipped npz,
    "auto" = full MNIST if it is on disk (never downloads), else the shipped sample. Both give identical
    arrays. Labels are uint8, 1 for a 3 and 0 for a 7.
    """
    if source == "auto":
        source = "mnist" if mnist_available(path) else "sample"
    if source == "sample":
        return _load_sample()
    if source == "mnist":
        return mnist_3v7_from(load_mnist_all(path))
    raise DataError(f"unknown 3-vs-7 source {source!r} (use 'auto', 'sample' or 'mnist')")


# ----------------------------------------------------------------------------------------------- arrays
def dataset_arrays(name: str, split: str = "train", path=None, download: bool = True):
    """(X float64 [N, F], y float64 [N]) for a sheet: ``name`` in :data:`DATASET_NAMES`.

    MNIST: X = pixels / 255 flattened row-major to 784 columns; y = the label (digit, or 1/0 for 3/7);
    ``split`` "train" or "valid" (MNIST's test set). Titanic: X = the :data:`TITANIC_FEATURES` columns of
    :func:`titanic_table` (712 rows), y = Survived; it has only the "train" split.
    """
    if split not in ("train", "valid"):
        raise DataError(f"unknown split {split!r} (use 'train' or 'valid')")
    if name == "titanic":
        if split != "train":
            raise DataError("dataset titanic has only the 'train' split")
        table = titanic_table()
        return table[TITANIC_FEATURES].to_numpy(np.float64), table["Survived"].to_numpy(np.float64)
    if name == "mnist_3v7":
        arrays = load_3v7("auto", path)
    elif name == "mnist":
        x, y = load_mnist("train" if split == "train" else "test", path, download)
        arrays = {f"{split}_x": x, f"{split}_y": y}
    else:
        raise DataError(f"unknown dataset {name!r} (use one of {', '.join(DATASET_NAMES)})")
    x, y = arrays[f"{split}_x"], arrays[f"{split}_y"]
    return x.reshape(len(x), -1).astype(np.float64) / 255.0, y.astype(np.float64)
