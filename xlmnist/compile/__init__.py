"""Blocks -> vectorized torch: the function table (``functions``), one op per block (``compiler``), the
compiled model (``model``), the straight-line program the trainer runs (``lower``, ``fuse``).

``compile_workbook(path, sheet=...)`` -> :class:`CompiledModel` is the stage's entry point.
"""

from xlmnist.compile.model import SENSES, CompiledModel, compile_workbook, read_settings

__all__ = ["SENSES", "CompiledModel", "compile_workbook", "read_settings"]
