"""A course-style convolution workbook (like fast.ai's conv spreadsheet), and the same model in torch.

Sheet ``conv``: a 28 x 28 digit on B2:AC29 (the first 3 of the shipped 3-vs-7 sample), six 3 x 3 kernels
(54 trainable cells, AF2:AH4, AF6:AH8, ... one area each), per kernel a 26 x 26 conv layer whose cells are
``{=MAX(0,SUM(B2:D4*$AF$2:$AH$4))}`` (one array formula per cell, ``form="array"``) or the plain
``=MAX(0,SUMPRODUCT(B2:D4,$AF$2:$AH$4))`` (``form="plain"``), a 25 x 25 MAX pooling ``=MAX(B32:C33)`` over
2 x 2 windows with stride 1, per pooled cell the squared error against a target feature map (sheet
``readout``: the maps of six other kernels, plus noise) and their sum as the loss. Used by
``tests/compile/test_conv.py`` and ``bench/bench_conv.py``.
"""

from __future__ import annotations

import numpy as np
from openpyxl import Workbook
from openpyxl.utils import get_column_letter as L
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.worksheet.formula import ArrayFormula

K = 6  # kernels
N = 28  # input size
OUT = N - 2  # conv output size
P = OUT - 1  # pool output size
IN_R, IN_C = 2, 2  # input top-left (B2)
K_C = 32  # kernels in AF:AH
CONV_R = 32  # first conv layer's top row; layer k at CONV_R + k * (OUT + 2)
POOL_C = 30  # pools in AD... beside their conv layer
ERR_C = POOL_C + P + 1  # squared errors beside the pools
LOSS = "AL1"


def digit() -> np.ndarray:
    """A 28 x 28 digit in 0..1: the first 3 of the shipped sample (synthetic if it cannot be loaded)."""
    try:
        from xlmnist.data import load_3v7

        return load_3v7("sample")["train_x"][0].astype(np.float64) / 255.0
    except Exception:  # noqa: BLE001 - any data problem: a synthetic ring
        y, x = np.mgrid[0:N, 0:N]
        r = np.hypot(y - 13.5, x - 13.5)
        return np.clip(1.0 - np.abs(r - 8.0) / 3.0, 0.0, 1.0)


def init(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(kernels [K, 3, 3], target feature maps [K, P, P]: the pooled maps of other kernels, plus noise)."""
    rng = np.random.default_rng(seed)
    kern, teacher = rng.normal(0, 0.5, (K, 3, 3)), rng.normal(0, 0.5, (K, 3, 3))
    x = np.lib.stride_tricks.sliding_window_view(digit(), (3, 3))  # [OUT, OUT, 3, 3]
    h = np.maximum(0.0, np.einsum("ijab,kab->kij", x, teacher))
    pooled = np.lib.stride_tricks.sliding_window_view(h, (2, 2), axis=(1, 2)).max((3, 4))
    return kern, pooled + rng.normal(0, 0.05, pooled.shape)


def conv_row(k: int) -> int:
    return CONV_R + k * (OUT + 2)


def kernel_ref(k: int, stacked: bool = False) -> str:
    r = 2 + (3 if stacked else 4) * k
    return f"${L(K_C)}${r}:${L(K_C + 2)}${r + 2}"


def build(path, form: str = "array", seed: int = 0, stacked: bool = False, dense: bool = False) -> str:
    """``stacked``: the kernels one under the other in one area AF2:AH19 (else one area each, a row apart);
    ``dense``: the loss is ``(SUM(readouts)-1)^2``, a readout per kernel ``SUMPRODUCT(pool, weights)``."""
    wb = Workbook()
    ws = wb.active
    ws.title = "conv"
    ro = wb.create_sheet("readout")
    img = digit()
    kern, target = init(seed)
    for i in range(N):
        for j in range(N):
            ws.cell(IN_R + i, IN_C + j, float(img[i, j]))
    reads = []
    for k in range(K):
        r0 = 2 + (3 if stacked else 4) * k
        for i in range(3):
            for j in range(3):
                ws.cell(r0 + i, K_C + j, float(kern[k, i, j]))
        kr, cr = kernel_ref(k, stacked), conv_row(k)
        for i in range(OUT):
            for j in range(OUT):
                win = f"{L(IN_C + j)}{IN_R + i}:{L(IN_C + j + 2)}{IN_R + i + 2}"
                cell = f"{L(2 + j)}{cr + i}"
                if form == "array":
                    ws[cell] = ArrayFormula(cell, f"=MAX(0,SUM({win}*{kr}))")
                else:
                    ws[cell] = f"=MAX(0,SUMPRODUCT({win},{kr}))"
        for i in range(P):
            for j in range(P):
                win = f"{L(2 + j)}{cr + i}:{L(3 + j)}{cr + i + 1}"
                ws.cell(cr + i, POOL_C + j, f"=MAX({win})")
                ro.cell(cr + i, POOL_C + j, float(target[k, i, j]))
                pc = f"{L(POOL_C + j)}{cr + i}"
                ws.cell(cr + i, ERR_C + j, f"=({pc}-readout!{pc})^2")
        area = f"{L(ERR_C)}{cr}:{L(ERR_C + P - 1)}{cr + P - 1}"
        pool = f"{L(POOL_C)}{cr}:{L(POOL_C + P - 1)}{cr + P - 1}"
        ws.cell(1, 90 + k, f"=SUMPRODUCT({pool},readout!{pool})" if dense else f"=SUM({area})")
        reads.append(f"{L(90 + k)}1")
    total = f"SUM({reads[0]}:{reads[-1]})"
    ws[LOSS] = f"=({total}-1)^2" if dense else f"={total}"
    adj = f"conv!$AF$2:$AH${1 + 3 * K}" if stacked else ",".join(f"conv!{kernel_ref(k)}" for k in range(K))
    for name, text in (("solver_opt", f"conv!${LOSS[:2]}$1"), ("solver_adj", adj), ("solver_typ", "2")):
        ws.defined_names[name] = DefinedName(name, attr_text=text, hidden=True)
    wb.save(path)
    return str(path)


def torch_model(dtype=None):
    """The same sheet as a hand-written torch model: ``loss(kernels [K,1,3,3])`` and the initial kernels."""
    import torch  # deferred: heavy
    import torch.nn.functional as F

    dtype = dtype or torch.float64
    kern, target = init()
    x = torch.tensor(digit(), dtype=dtype)[None, None]
    t = torch.tensor(target, dtype=dtype)

    def loss(k):
        h = F.relu(F.conv2d(x, k))  # [1, K, OUT, OUT]
        p = F.max_pool2d(h, 2, stride=1)[0]  # [K, P, P]
        return ((p - t) ** 2).sum()

    return loss, torch.tensor(kern, dtype=dtype)[:, None]
