"""The one table of Excel functions -> torch builders, assembled from the category modules.

Builders take ``(ctx, args)`` with ``args`` a list of :class:`~xlmnist.compile.values.Value` and
return a Value (see :mod:`xlmnist.compile.values` for the shapes and Excel's empty-cell rules). The
parser drops the ``_xlfn.`` / ``_xlws.`` prefixes, so ``_xlfn.STDEV.P`` is looked up as ``STDEV.P``.
A name missing here fails at compile time naming the cell and the function.
"""

from __future__ import annotations

from xlmnist.compile import gather
from xlmnist.compile.functions import criteria, dist, logic, lookup, maths, matrix, regress, stats
from xlmnist.compile.functions.operators import ARITH, compare, concat
from xlmnist.compile.functions.operators import CMP as _CMP
from xlmnist.compile.functions.stats import DIRECT_BOOLS
from xlmnist.compile.values import BOOL, EMPTY, ERR, NUM, TEXT, ExcelError, Value
from xlmnist.compile.values import as_bool as _bool
from xlmnist.compile.values import num_of as _num_of

__all__ = [
    "ARITH",
    "BOOL",
    "EMPTY",
    "DIRECT_BOOLS",
    "ERR",
    "FUNCTIONS",
    "NUM",
    "TEXT",
    "ExcelError",
    "Value",
    "_CMP",
    "_bool",
    "_num_of",
    "compare",
    "concat",
]

# name -> (builder, min args, max args)
FUNCTIONS = {
    **stats.STATS,
    **criteria.CRITERIA,
    **maths.MATH,
    **dist.DIST,
    **regress.REGRESS,
    **logic.LOGIC,
    "SUMPRODUCT": (matrix.f_sumproduct, 1, 255),
    "MMULT": (matrix.f_mmult, 2, 2),
    "TRANSPOSE": (matrix.f_transpose, 1, 1),
    "SUMXMY2": (matrix.f_sumxmy2, 2, 2),
    "SUMX2MY2": (matrix.f_sumx2my2, 2, 2),
    "SUMX2PY2": (matrix.f_sumx2py2, 2, 2),
    "ROWS": (matrix.f_rows, 1, 1),
    "COLUMNS": (matrix.f_columns, 1, 1),
    "INDEX": (lookup.f_index, 2, 3),
    "MATCH": (lookup.f_match, 2, 3),
    "CHOOSE": (lookup.f_choose, 2, 255),
    **gather.LOOKUPS,  # VLOOKUP, HLOOKUP, XLOOKUP, and OFFSET with cell-dependent offsets
}
