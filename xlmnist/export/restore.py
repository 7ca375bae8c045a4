"""``xlmnist import MODEL BOOK``: the weights of a module exported from BOOK written back into the trainable
ranges they came from (:func:`import_into`).

Either export form records where its weights live: the general form's ``PARAMS_AT`` (``p{k}`` is the k-th
trainable range), the layer form's ``WEIGHTS`` recipes (which rows/columns of which range make each layer's
``weight`` and ``bias``, the inverse of its ``book_weights``). That is read from the module's source with
``ast`` (:mod:`xlmnist.export.pyread`), never by running it; a saved state dict is read with
``torch.load(weights_only=True)``, never unpickling code. The write is the trainer's: one atomic write of
the ranges and of the dependent formula cells' recomputed cached values.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch

from xlmnist.compile.model import compile_workbook
from xlmnist.errors import XlmnistError
from xlmnist.export.pyread import module_weights, read_origin
from xlmnist.train.session import write_results
from xlmnist.xlsx.refs import area_name


def torch_load(path: Path):
    return torch.load(path, map_location="cpu", weights_only=True)


def safely(path: Path, read):
    """``read()`` of the model file at ``path``: a module is parsed, never executed, and a saved file is
    read with ``torch.load(weights_only=True)`` (tensors and plain containers only): a pickled module,
    which could run any code while loading, is refused with a one-line error, as is any other failure."""
    name = path.name
    if not path.is_file():
        raise XlmnistError(f"{name}: no such model file")
    try:
        return read()
    except XlmnistError:
        raise
    except pickle.UnpicklingError:  # weights_only refuses anything but tensors and plain containers
        raise XlmnistError(
            f"{name}: holds pickled Python objects (e.g. a whole nn.Module), which xlmnist does not load "
            "because unpickling can run code; save the weights instead with "
            "torch.save(model.state_dict(), path) and give the layers with --arch, e.g. 784-30-relu-1-sigmoid"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any failure to load is the user's file
        raise XlmnistError(
            f"{name}: cannot load the model ({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None


def _array(name: str, key: str, v) -> np.ndarray:
    if not isinstance(v, torch.Tensor):
        raise XlmnistError(f"{name}: {key} is not a tensor ({type(v).__name__})")
    return v.detach().to(torch.float64).cpu().numpy()


def _general_values(name: str, areas: list, state: dict) -> list[np.ndarray]:
    """The general form's state dict ``{p0, p1, ...}`` as one array per trainable range (``PARAMS_AT``)."""
    want = [f"p{k}" for k in range(len(areas))]
    if sorted(state) != sorted(want):
        raise XlmnistError(
            f"{name}: the state dict has {', '.join(sorted(state)) or 'no tensors'}; the module's parameters "
            f"are {', '.join(want)}"
        )
    out = []
    for key, (s, r1, c1, r2, c2) in zip(want, areas):
        a = _array(name, key, state[key])
        if a.shape != (r2 - r1 + 1, c2 - c1 + 1):
            raise XlmnistError(
                f"{name}: {key} has shape {tuple(a.shape)}; its range {area_name(s, r1, c1, r2, c2)} is "
                f"{r2 - r1 + 1}x{c2 - c1 + 1}"
            )
        out.append(a)
    return out


def _layer_values(name: str, recipes: dict, state: dict) -> tuple[list, list[np.ndarray]]:
    """The layer form's state dict back into the areas its WEIGHTS recipes read (the inverse of the
    module's ``book_weights``): (areas, one array per area)."""
    missing = [k for k in recipes if k not in state]
    if missing:
        raise XlmnistError(f"{name}: the state dict has no {', '.join(missing)}")
    grids: dict[tuple, list] = {}  # area -> [transposed, the area as the recipe reads it]
    for key, (kind, parts) in recipes.items():
        x = _array(name, key, state[key])
        off = 0
        for sheet, r1, c1, r2, c2, transposed, index in parts:
            shape = (r2 - r1 + 1, c2 - c1 + 1)
            grid = grids.setdefault(
                (sheet, r1, c1, r2, c2), [transposed, np.full(shape[::-1] if transposed else shape, np.nan)]
            )
            if grid[0] != transposed:
                raise XlmnistError(f"{name}: WEIGHTS reads {area_name(sheet, r1, c1, r2, c2)} two ways")
            w = grid[1]
            n = w.shape[0] if kind == "r" else w.shape[1]
            part = x[off : off + n]
            try:
                if kind == "r":
                    w[...] = part
                elif kind == "w":
                    w[list(index)] = part.T
                else:
                    w[int(index)] = part
            except (ValueError, IndexError, TypeError):
                raise XlmnistError(
                    f"{name}: {key} (shape {tuple(x.shape)}) does not fit {area_name(sheet, r1, c1, r2, c2)}"
                ) from None
            off += n
        if off != x.shape[0]:
            raise XlmnistError(f"{name}: {key} has {x.shape[0]} rows; its cells hold {off}")
    areas, values = [], []
    for area, (transposed, w) in grids.items():
        if np.isnan(w).any():
            raise XlmnistError(f"{name}: the weights do not cover every cell of {area_name(*area)}")
        areas.append(area)
        values.append(w.T.copy() if transposed else w)
    return areas, values


def import_into(model, book, out=None, module=None) -> dict:
    """Write the weights of a module exported from ``book`` back into the trainable ranges they came from.

    ``model``: the exported ``model.py`` (its baked weights: the PARAMS literal or the .pt beside it), or a
    state dict saved from it (``torch.save(model.state_dict(), path)``), whose module is ``module`` or the
    ``.py`` of the same name beside it: the module says which cells each tensor is (PARAMS_AT / WEIGHTS),
    read from its source, never run. Writes into ``book`` or the copy ``out`` (one atomic write, the
    dependent formula cells' cached values recomputed) and returns ``{objective_cell, objective, params,
    book, form, stale}``, the objective evaluated on the written weights."""
    path = Path(model)
    if path.suffix == ".py":
        py, state = path, None
    else:
        py = Path(module) if module else path.with_suffix(".py")
        if not py.is_file():
            raise XlmnistError(
                f"{path.name}: a state dict does not say which cells its tensors are; give the module it was "
                f"exported as: --module model.py"
            )
        state = safely(path, lambda: torch_load(path))
        if not isinstance(state, dict):
            raise XlmnistError(f"{path.name}: not a state dict ({type(state).__name__})")
    form, objective, where, tree = safely(py, lambda: read_origin(py))
    if state is None:
        state = safely(py, lambda: module_weights(py, tree))
    name = path.name
    if form == "general":
        areas, values = where, _general_values(name, where, state)
    else:
        areas, values = _layer_values(name, where, state)
    cm = compile_workbook(book, objective=objective, params=",".join(area_name(*a) for a in areas))
    params = [torch.tensor(v, dtype=torch.float64) for v in values]
    with torch.no_grad():
        value = float(cm.objective(params))
    stale: list = []
    written = write_results(book, cm, params, out=out, stale=stale)
    return {
        "objective_cell": cm.objective_ref,
        "objective": value,
        "params": list(cm.param_refs),
        "book": str(written),
        "form": form,
        "stale": stale,
    }
