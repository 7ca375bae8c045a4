"""Where a command's wall time goes: ``XLMNIST_TIMING=1 xlmnist train ...`` prints, to stderr,

    xlmnist timing: import 2.41s  read 0.08s  compile 0.31s  run 1.02s  write 0.05s  total 3.87s

``import`` is the start-up until the command runs (Python, torch, the command's modules); ``read``,
``compile`` and ``write`` are the :func:`stage` blocks of those names (a stage nested in another counts
only for itself); ``run`` is the rest (training, evaluation, printing). Costs nothing when unset.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time

_T0 = time.perf_counter()  # imported by xlmnist.cli, first thing: the start of the command
_marks: dict[str, float] = {}
_stages: dict[str, float] = {}
_stack: list[float] = []  # time spent in nested stages, per open stage


def enabled() -> bool:
    return os.environ.get("XLMNIST_TIMING", "") not in ("", "0")


def mark(name: str) -> None:
    """Record ``name`` as the time from the start to now (``import``: the command is about to run)."""
    _marks[name] = time.perf_counter() - _T0


@contextlib.contextmanager
def stage(name: str):
    """Count the block's wall time under ``name`` (less the time of stages nested in it)."""
    t = time.perf_counter()
    _stack.append(0.0)
    try:
        yield
    finally:
        spent = time.perf_counter() - t
        inner = _stack.pop()
        _stages[name] = _stages.get(name, 0.0) + spent - inner
        if _stack:
            _stack[-1] += spent


def breakdown() -> dict[str, float]:
    """``{"import", stages..., "run", "total"}`` in seconds, so far."""
    total = time.perf_counter() - _T0
    out = {"import": _marks.get("import", 0.0)}
    for name in ("read", "compile"):
        out[name] = _stages.get(name, 0.0)
    out.update({k: v for k, v in _stages.items() if k not in out and k != "write"})
    out["run"] = max(0.0, total - sum(out.values()) - _stages.get("write", 0.0))
    out["write"] = _stages.get("write", 0.0)
    out["total"] = total
    return out


def report() -> None:
    if enabled():
        parts = "  ".join(f"{k} {v:.2f}s" for k, v in breakdown().items())
        print(f"xlmnist timing: {parts}", file=sys.stderr)
