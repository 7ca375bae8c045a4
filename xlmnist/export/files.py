"""The export's files written whole or not at all: a module's source, a state dict (a temporary file
beside the target, then renamed over it)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import torch


def save_state(state, pt: Path) -> None:
    """``{name: array}`` as a float64 state dict at ``pt``."""
    buf = tempfile.NamedTemporaryFile(dir=pt.parent, prefix=f".{pt.stem}-", suffix=".tmp", delete=False)
    buf.close()
    torch.save({k: torch.tensor(np.asarray(v), dtype=torch.float64) for k, v in state.items()}, buf.name)
    os.replace(buf.name, pt)


def atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
