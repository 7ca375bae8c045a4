"""``compile_workbook`` -> :class:`CompiledModel`: the compiled objective, its parameters and data rows."""

from __future__ import annotations

import gc
import os
import sys

import numpy as np
import torch

from xlmnist import timing
from xlmnist.compile import debug
from xlmnist.compile.areas import DATA, TRUSTED, parse_areas
from xlmnist.compile.compiler import Compiler
from xlmnist.compile.diagnose import diagnose
from xlmnist.compile.program import checked_evaluator, lower_program, retarget
from xlmnist.compile.settings import pick_sheet, read_settings
from xlmnist.errors import WorkbookError, XlmnistError
from xlmnist.xlsx.lazy import LazySheet, reachable_view
from xlmnist.xlsx.reader import read_workbook
from xlmnist.xlsx.refs import area_name, cell_name

SENSES = {"1": "max", "2": "min", "3": "value"}


class CompiledModel:
    """A workbook's objective compiled to torch; see DESIGN.md for the interface."""

    def __init__(
        self,
        comp: Compiler,
        objective: tuple,
        sense: str,
        target: float | None,
        settings: dict,
        recipe=None,
        twin=None,
    ):
        self._recipe = recipe  # (sheet, objective, params, data) as given: what recompile needs
        self._c = comp
        sheet, r, c = objective[0], objective[1], objective[2]
        self.objective_ref = (
            cell_name(sheet, r, c).replace("'", "") if "'" not in sheet else cell_name(sheet, r, c)
        )
        self.sense, self.target, self.settings = sense, target, settings
        self.param_refs = [area_name(*p) for p in comp.params]
        self.dtype, self.device = comp.ctx.dtype, comp.ctx.device
        blk = comp.graph.block_at(sheet, r, c)
        if blk is None:
            raise WorkbookError(f"{self.objective_ref}: the objective cell holds no formula")
        comp.compile_blocks([blk.id])
        self._const = None  # the objective's value where it is a constant (a sheet without trainable cells)
        if not comp.compiled[blk.id]:
            if comp.params:
                raise WorkbookError(
                    f"{self.objective_ref}: the objective does not depend on any trainable cell "
                    f"({', '.join(self.param_refs)})"
                )
            self._const = torch.tensor(comp.cnum[sheet][r, c], dtype=self.dtype, device=self.device)
        self._obj = (blk.id, r - blk.out[0], c - blk.out[1])
        needed, todo = set(), [blk.id]
        while todo:  # the blocks the objective reads (through the data range's replacement, if any)
            bid = todo.pop()
            if bid not in needed:
                needed.add(bid)
                todo += comp.reads.get(bid, ())
        self._obj_steps = [(bid, e) for bid, e in comp.steps if bid in needed]
        self.random = bool(comp.random & needed)  # the objective depends on RAND() & co.: a sample per call
        self.data_ref = None if comp.data is None else area_name(*comp.data)
        self._ncols = None if comp.data is None else comp.data[4] - comp.data[2] + 1
        self._prog = self._twin = None
        self.fallback_reason: str | None = None  # why the objective runs its closures, if it does
        with torch.no_grad():
            value = self.objective(self.initial_params())
        if not torch.isfinite(value):
            diagnose(self)
        self._prog = self._lowered(value, twin)

    @property
    def program_kind(self) -> str:
        """``"lowered"``: the objective runs as one generated program; ``"closures"``: block by block
        (``fallback_reason`` says why)."""
        return "closures" if self._prog is None else "lowered"

    def _lowered(self, value: torch.Tensor, twin: CompiledModel | None):
        """The objective as one generated straight-line function (xlmnist.compile.lower), if it agrees.

        The program is validated in float64 on the CPU, where it must agree with the block closures to
        1e-12 (no dependence on rounding); a float32 or GPU model runs the same program (the same
        generated source) validated by its float64 ``twin``."""
        if os.environ.get("XLMNIST_LOWER") == "0":
            self.fallback_reason = "XLMNIST_LOWER=0"
            return None
        if self._const is not None:
            self.fallback_reason = "the objective is a constant (no trainable cells): nothing to lower"
            return None
        if self.random:
            self.fallback_reason = "the objective depends on RAND() & co. (not lowered: a sample per call)"
            return None
        if self.dtype != torch.float64 or self.device.type != "cpu":
            if twin is None:
                c = self._c
                rec = self._recipe
                twin = _compile(c.wb, c.graph, *rec[:3], torch.float64, "cpu", rec[3], report=False)
            self._twin = twin
            if twin._prog is None:
                self.fallback_reason = f"the float64 program is not used: {twin.fallback_reason}"
                return None
            try:
                prog = retarget(twin._prog, self.dtype, self.device, self._obj_steps)
                with torch.no_grad():
                    got = prog(self._env(self.initial_params(), None))
            except Exception as exc:  # noqa: BLE001 - a retargeting bug: the closures are the reference
                self.fallback_reason = f"the {self.dtype} program failed: {type(exc).__name__}: {exc}"
                return None
            if not torch.isclose(got.double(), value.double(), rtol=1e-3, atol=1e-6):  # a dtype-only bug
                self.fallback_reason = (
                    f"the {self.dtype} program gives {float(got)!r}, the closures {float(value)!r}"
                )
                return None
            return prog
        try:
            prog = lower_program(self._c, self._obj_steps, self._obj)
            with torch.no_grad():
                got = prog(self._env(self.initial_params(), None))
        except Exception as exc:  # noqa: BLE001 - a lowering bug: the closures are the reference
            self.fallback_reason = f"lowering failed: {type(exc).__name__}: {exc}"
            return None
        if not torch.isclose(got, value, rtol=1e-12, atol=1e-300):
            self.fallback_reason = f"the lowered objective {float(got)!r} != the closures' {float(value)!r}"
            return None
        return prog

    def release(self) -> None:
        """Drop the compiler, the graph, the parsed workbook and the programs, keeping only the names
        (objective, parameters, sense, settings, dtype, device): a one-shot command's write-back then reuses
        that memory. The model cannot evaluate anything afterwards."""
        keep = ("objective_ref", "param_refs", "sense", "target", "settings", "dtype", "device")
        kept = {k: self.__dict__[k] for k in keep if k in self.__dict__}
        self.__dict__.clear()
        self.__dict__.update(kept)

    def recompile(self, dtype=None, device=None) -> CompiledModel:
        """The same sheet compiled again for another dtype/device, reusing the workbook already read and
        its formula graph (no second read or parse of the file)."""
        c = self._c
        twin = self if self.dtype == torch.float64 and self.device.type == "cpu" else self._twin
        model = _compile(
            c.wb,
            c.graph,
            *self._recipe[:3],
            dtype or self.dtype,
            device or self.device,
            self._recipe[3],
            twin,
        )
        if self.__dict__.get("_seed") is not None:
            model.reseed(self._seed)
        return model

    @property
    def workbook(self):
        """The parsed workbook (:class:`xlmnist.reader.Workbook`) the model was compiled from."""
        return self._c.wb

    @property
    def compiler(self) -> Compiler:
        """The compile stage behind the model (graph, constant grids, parameter areas), for export."""
        return self._c

    def dependent_blocks(self) -> list:
        """The formula blocks of the whole workbook that depend (directly or through other formulas) on the
        trainable cells: what a write-back must recompute. Blocks the compiler cannot read are left out."""
        comp = self._c
        graph = comp.graph
        direct, readers = set(), {}
        for b in graph.blocks:
            try:
                graph.analyse(b)
            except XlmnistError:
                continue  # a formula the compiler cannot read: it keeps its cached value
            for use in b.refs:
                u1, v1, u2, v2 = use.footprint(b.R, b.C)
                for sheet, r1, c1, r2, c2 in comp.params:
                    if use.sheet == sheet and u1 <= r2 and r1 <= u2 and v1 <= c2 and c1 <= v2:
                        direct.add(b.id)
            for dep in b.deps:
                readers.setdefault(dep, []).append(b.id)
        seen, todo = set(direct), list(direct)
        while todo:
            for nxt in readers.get(todo.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return [graph.blocks[i] for i in sorted(seen)]

    def initial_params(self) -> list[torch.Tensor]:
        return self._c.initial_params()

    def reseed(self, seed: int) -> None:
        """Fix the samples of RAND() & co. (:attr:`random`): the same draws again for the same seed."""
        self._c.reseed(seed)
        self._seed = seed  # recompile() keeps it

    def data_rows(self) -> torch.Tensor | None:
        """The data rows as the sheet holds them ([N, ncols]), or None without a data range."""
        return self._c.data_default

    def _env(self, params, data) -> dict:
        c = self._c
        if len(params) != len(c.params):
            raise WorkbookError(f"expected {len(c.params)} parameter tensors, got {len(params)}")
        env = {-(k + 2): p for k, p in enumerate(params)}
        if data is None:
            env[DATA] = c.data_default
            return env
        if c.data is None:
            raise WorkbookError(
                f"{self.objective_ref}: the sheet has no data range (define xlmnist_data or pass data=... "
                "to compile_workbook)"
            )
        if data.dim() != 2 or data.shape[1] != self._ncols or data.shape[0] < 1:
            raise WorkbookError(
                f"{self.data_ref}: data must be [rows, {self._ncols}] (one example per row), got {tuple(data.shape)}"
            )
        env[DATA] = data if data.dtype == self.dtype else data.to(self.dtype)
        return env

    def trusts(self, data: torch.Tensor) -> bool:
        """Whether ``data`` (a whole dataset) passes the conditions the generated objective otherwise checks
        on every call (e.g. integer labels 0..n-1 behind a one-hot); then ``objective(..., trusted=True)``
        on any subset of its rows skips them."""
        check = getattr(self._prog, "check", None)
        return bool(check is not None and check(data.to(self.dtype)))

    def objective(self, params, data=None, trusted: bool = False) -> torch.Tensor:
        env = self._env(params, data)
        if trusted and data is not None:
            env[TRUSTED] = True
        if self._prog is not None:
            return self._prog(env)
        if self._const is not None:
            return self._const
        for bid, e in self._obj_steps:
            env[bid] = e(env)
        bid, i, j = self._obj
        return env[bid][i, j]

    def evaluate(self, refs, params, data=None) -> dict:
        if isinstance(refs, str):
            refs = [refs]
        c = self._c
        areas, todo = {}, []
        for ref in refs:
            (sheet, r1, c1, r2, c2), *more = parse_areas(
                c.wb, ref, self.objective_ref.split("!")[0].strip("'")
            )
            if more:
                raise WorkbookError(f"{ref}: evaluate takes one rectangle per reference")
            c.compile_blocks(c.graph.blocks_in(sheet, r1, c1, r2, c2))
            areas[ref] = c.area(sheet, r1, c1, r2, c2)[0]
            ids = np.unique(c._grid_slice(c.src[sheet], r1, c1, r2, c2, -1))
            todo += [int(i) for i in ids if i >= 0 and c.compiled.get(int(i))]  # the dynamic blocks it reads
        needed: set[int] = set()  # only what the requested ranges depend on
        while todo:
            bid = todo.pop()
            if bid not in needed:
                needed.add(bid)
                todo += c.reads.get(bid, ())
        env = self._env(params, data)
        prog = self._evaluator(needed, env)
        if prog is not None:
            env.update(prog(env))
        else:
            for bid, e in c.steps:
                if bid in needed:
                    env[bid] = e(env)
        return {ref: e(env) for ref, e in areas.items()}

    def _evaluator(self, needed: set[int], env: dict):
        """The blocks ``needed`` as one generated straight-line function (like :meth:`objective`), checked
        once against the block closures on ``env``; None where lowering is off or disagrees."""
        key = frozenset(needed)
        cache = self.__dict__.setdefault("_evaluators", {})
        if key in cache:
            return cache[key]
        steps = [(bid, e) for bid, e in self._c.steps if bid in needed]
        prog = None
        if steps and self._c.random & needed:
            if debug.level() >= 3:
                print("xlmnist: evaluate runs the block closures: they use RAND() & co.", file=sys.stderr)
        elif steps and os.environ.get("XLMNIST_LOWER") != "0":
            prog = checked_evaluator(self._c, steps, env)
        cache[key] = prog
        return prog

    def describe(self, program: bool = True) -> str:
        """The blocks (shape, kind, functions, formula) and, with ``program``, the objective program."""
        return debug.describe(self, program)


def compile_workbook(
    path, sheet=None, objective=None, params=None, dtype=torch.float64, device="cpu", data=None, seed=None
) -> CompiledModel:
    """Compile the objective of ``sheet`` (or of the flags) into a :class:`CompiledModel`; ``seed`` fixes
    the samples of RAND() & co. (default: a fresh seed)."""
    with timing.stage("compile"):  # XLMNIST_TIMING=1 (reading is its own stage)
        wb = read_workbook(path, defer=LazySheet)  # only the sheets the model reaches get parsed
        enabled = gc.isenabled()
        gc.disable()  # the graph's many small objects (a block per row of a recurrence): no rescans
        try:
            model = _compile(wb, None, sheet, objective, params, dtype, device, data)
        finally:
            if enabled:
                gc.enable()
    if seed is not None:
        model.reseed(seed)
    return model


def _compile(
    wb, graph, sheet, objective, params, dtype, device, data, twin=None, report=True
) -> CompiledModel:
    if objective is not None and sheet is None:
        sheet = parse_areas(wb, objective, wb.active or wb.order[0])[0][0]
    sheet = pick_sheet(wb, sheet)
    name = os.path.basename(wb.path)
    obj_text = objective or wb.names.get((sheet, "XLMNIST_OBJECTIVE")) or wb.names.get((sheet, "SOLVER_OPT"))
    par_text = params or wb.names.get((sheet, "XLMNIST_PARAMS")) or wb.names.get((sheet, "SOLVER_ADJ"))
    if not obj_text:
        raise WorkbookError(
            f"{name}: sheet {sheet!r} has no objective cell "
            "(no Solver settings or xlmnist_objective name; pass --objective)"
        )
    obj = parse_areas(wb, obj_text, sheet)
    if len(obj) != 1 or obj[0][1:3] != obj[0][3:5]:
        raise WorkbookError(f"{obj_text}: the objective must be a single cell")
    typ = str(wb.names.get((sheet, "SOLVER_TYP"), "2")).strip()
    sense = SENSES.get(typ.split(".")[0].strip())
    if sense is None:
        raise WorkbookError(
            f"{name}: sheet {sheet!r}: solver_typ = {typ}: unknown Solver goal (1 max, 2 min, 3 value of)"
        )
    target = None
    if sense == "value":
        try:
            target = float(wb.names.get((sheet, "SOLVER_VAL"), "0"))
        except ValueError:
            raise WorkbookError(f"{name}: sheet {sheet!r}: solver_val is not a number") from None
    if graph is None and any(isinstance(s, LazySheet) for s in wb.sheets.values()):
        wb = reachable_view(wb, sheet, par_text, [obj_text, data or wb.names.get((sheet, "XLMNIST_DATA"))])
    comp = Compiler(wb, dtype=dtype, device=device, graph=graph)
    for area in parse_areas(wb, par_text, sheet) if par_text else ():  # none: evaluate only
        comp.add_param(*area)
    data_text = data or wb.names.get((sheet, "XLMNIST_DATA"))
    if data_text:
        areas = parse_areas(wb, data_text, sheet)
        if len(areas) != 1:
            raise WorkbookError(f"{data_text}: the data range must be one rectangle")
        comp.set_data(*areas[0])
    recipe = (sheet, objective, params, data)
    model = CompiledModel(comp, obj[0][:3], sense, target, read_settings(wb, sheet), recipe, twin)
    if report and debug.level():
        print(debug.report(model, debug.level()), file=sys.stderr)
    return model
