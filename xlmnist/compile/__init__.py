"""Blocks -> vectorized torch: the function table (``functions``), one op per block (``compiler``, with
rectangle assembly in ``areas``), the compiled model (``model``), and the straight-line program the
trainer runs: blocks lowered to a small op IR (``ir``, ``sources``, ``lower``), rewritten (``fuse``),
rendered and compiled once, validated in float64 (``program``); ``debug`` is ``XLMNIST_DEBUG=1|2|3``.

``compile_workbook(path, sheet=...)`` -> :class:`CompiledModel` is the stage's entry point.
"""

from xlmnist.compile.model import SENSES, CompiledModel, compile_workbook
from xlmnist.compile.settings import read_settings

__all__ = ["SENSES", "CompiledModel", "compile_workbook", "read_settings"]
