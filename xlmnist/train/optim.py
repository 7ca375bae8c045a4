"""Train the trainable cells of a compiled workbook: Excel Solver, but it is PyTorch.

``train(model, ...)`` minimises (``sense="min"``), maximises (``"max"``) or drives to ``model.target``
(``"value"``: minimises ``(objective - target)**2``) the objective of a ``CompiledModel`` (see DESIGN.md).
Small models (<= 50k parameters) use full-batch L-BFGS with a strong-Wolfe line search in float64, like
Solver's GRG; larger ones Adam. It stops when the objective stops changing (relative change < 1e-12 over
a few steps), the gradient vanishes, ``epochs`` steps are done or ``max_seconds`` have passed.

L-BFGS returns the best parameters its line searches evaluated (the last iterate, up to ties); SGD and
Adam return the parameters after their last update (``epochs`` = the number of updates) with the
objective at them, and ``history`` = the objective before the first and after each update. Ctrl-C stops
cleanly with them (``interrupted=True``).
A NaN/inf objective or parameter raises ``TrainingError`` naming the step; ``exc.result`` holds the
last good (best) parameters, which callers must not need to write.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from xlmnist.errors import TrainingError
from xlmnist.train import torchopt

LBFGS_MAX_PARAMS = 50_000
DEFAULT_LR = {"lbfgs": 1.0, "adam": 0.01, "sgd": 0.1}
DEFAULT_EPOCHS = {"lbfgs": 500, "adam": 2000, "sgd": 2000}
OPTIMIZERS = ("auto", "lbfgs", "adam", "sgd")
REL_TOL = 1e-12
LBFGS_CHUNK = 20  # L-BFGS iterations per optimizer.step call
PATIENCE = 5  # steps in a row below REL_TOL before "converged"


@dataclass
class TrainResult:
    params: list[torch.Tensor]
    objective: float
    initial_objective: float
    steps: int
    seconds: float
    device: str
    history: list[float] = field(default_factory=list)
    optimizer: str = ""
    lr: float = 0.0
    converged: bool = False
    interrupted: bool = False
    evaluations: int = 0
    epochs: list[dict] = field(default_factory=list)  # minibatch training: one row per epoch
    diagnosis: str | None = None
    cpu_seconds: float | None = None  # minibatch training: this process's CPU time in the loop


def resolve_device(device: str | None) -> str:
    device = (device or "cpu").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(
            f"device {device}: CUDA is not available on this machine (torch {torch.__version__}); use --device cpu"
        )
    if device != "cpu" and not device.startswith("cuda"):
        raise TrainingError(f"device {device}: unknown device; use cpu or cuda")
    return device


def choose_optimizer(optimizer: str | None, n_params: int) -> str:
    name = (optimizer or "auto").lower()
    if name not in OPTIMIZERS:
        raise TrainingError(f"optimizer {optimizer!r}: unknown; use one of {', '.join(OPTIMIZERS)}")
    if name == "auto":
        return "lbfgs" if n_params <= LBFGS_MAX_PARAMS else "adam"
    return name


def random_params(model, seed: int = 0, scale: float = 0.1) -> list[torch.Tensor]:
    """Seeded N(0, scale^2) values shaped like the model's trainable ranges (a re-initialisation)."""
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(p.shape, generator=gen, dtype=torch.float64) * scale for p in model.initial_params()]


def loss_fn(model):
    sense = getattr(model, "sense", "min")
    if sense == "max":
        return lambda obj: -obj
    if sense == "value":
        target = float(model.target)
        return lambda obj: (obj - target) ** 2
    return lambda obj: obj


class _Tracker:
    """Keeps the best finite point seen and raises on NaN/inf."""

    def __init__(self, loss_of, optimizer_name: str, lr: float):
        self.loss_of, self.name, self.lr = loss_of, optimizer_name, lr
        self.best_loss, self.best_obj, self.best_params = math.inf, math.nan, None
        self.evaluations, self.step, self.last_obj = 0, 0, math.nan

    def check(self, obj: float, loss: float, params, track: bool = True) -> None:
        self.evaluations += 1
        self.last_obj = obj
        finite = (
            math.isfinite(obj) and math.isfinite(loss) and all(bool(torch.isfinite(p).all()) for p in params)
        )
        if not finite:
            what = "objective" if not math.isfinite(obj) else "parameters"
            lower = (
                f"try a lower learning rate (--lr {self.lr / 10:g})"
                if self.name != "lbfgs"
                else "try --optimizer adam with a small --lr"
            )
            err = TrainingError(
                f"step {self.step}: the {what} became {obj if what == 'objective' else 'NaN/inf'} ({self.name}, lr {self.lr:g}); training diverged, nothing written; {lower}"
            )
            raise err
        if track and loss < self.best_loss:
            self.best_loss, self.best_obj = loss, obj
            self.best_params = [p.detach().clone() for p in params]


def _progress_bar(total: int) -> Callable[[int, float], None]:
    start = time.perf_counter()

    def show(step: int, objective: float) -> None:
        frac = min(step / total, 1.0) if total else 0.0
        bar = "#" * int(frac * 30)
        sys.stderr.write(
            f"\r[{bar:<30}] step {step}/{total} objective {objective:.12g} {time.perf_counter() - start:.1f}s "
        )
        sys.stderr.flush()

    return show


def train(
    model,
    optimizer: str = "auto",
    lr: float | None = None,
    epochs: int | None = None,
    seed: int = 0,
    device: str = "cpu",
    progress=None,
    max_seconds: float | None = None,
    params: list[torch.Tensor] | None = None,
    data: torch.Tensor | None = None,
) -> TrainResult:
    """Train ``model``'s trainable cells; return the final parameters (see the module docstring).

    ``data`` (rows laid out like the sheet's ``xlmnist_data``) replaces the visible rows (full batch;
    minibatch training is :func:`xlmnist.train.minibatch.train_epochs`).

    ``progress``: None = a ``\\r`` bar on stderr when it is a terminal, False = silent, or a callable
    ``progress(step, objective)``. ``params``: start from these instead of the current cell values.
    """
    device = resolve_device(device)
    torch.manual_seed(seed)
    ps = as_params(params, model, device, torch.float64)
    n_params = sum(p.numel() for p in ps)
    name = choose_optimizer(optimizer, n_params)
    lr = float(lr) if lr is not None else DEFAULT_LR[name]
    epochs = int(epochs) if epochs is not None else DEFAULT_EPOCHS[name]
    if not (lr > 0 and math.isfinite(lr)):
        raise TrainingError(f"learning rate {lr}: must be a positive number")
    if epochs < 0:
        raise TrainingError(f"epochs {epochs}: must be >= 0")
    if progress is None:
        progress = _progress_bar(epochs) if sys.stderr.isatty() else False
    loss_of = loss_fn(model)
    tracker = _Tracker(loss_of, name, lr)
    t0 = time.perf_counter()

    if data is not None:  # full-batch training on the dataset's rows (they replace the sheet's data rows)
        data = torch.as_tensor(data).to(device=device, dtype=torch.float64)

    def evaluate():
        obj = model.objective(ps) if data is None else model.objective(ps, data=data)
        loss = loss_of(obj)
        tracker.check(float(obj.detach()), float(loss.detach()), ps)
        return obj, loss

    with torch.no_grad():
        obj0, _ = evaluate()
    initial = float(obj0)
    history = [initial]

    def closure():
        torchopt.zero_grad(opt)
        _, loss = evaluate()
        loss.backward()
        for p in ps:
            if p.grad is not None and not torch.isfinite(p.grad).all():
                raise TrainingError(
                    f"step {tracker.step}: the gradient became NaN/inf ({name}, lr {lr:g}); nothing written; try a lower learning rate"
                )
        return loss

    converged = interrupted = False
    steps, quiet, prev = 0, 0, tracker.best_loss
    try:
        if name == "lbfgs":
            opt = torchopt.make(
                "lbfgs",
                ps,
                lr=lr,
                max_iter=LBFGS_CHUNK,
                max_eval=LBFGS_CHUNK * 50,
                history_size=100,
                line_search_fn="strong_wolfe",
                tolerance_grad=1e-14,
                tolerance_change=0.0,
            )
        else:
            opt = torchopt.make(name, ps, lr=lr)
        epoch = 0
        while steps < epochs:
            epoch += 1
            tracker.step = steps + 1
            if name == "lbfgs":
                # a chunk of iterations per call; L-BFGS stops early on a relative change < REL_TOL
                group = opt.param_groups[0]
                group["max_iter"] = min(LBFGS_CHUNK, epochs - steps)
                chunk_start = tracker.best_loss
                group["tolerance_change"] = REL_TOL * abs(chunk_start)
                torchopt.step(opt, closure)
                done = opt.state[ps[0]]["n_iter"] - steps
                steps += done
                # L-BFGS stopped early (its change/gradient tolerances) without real progress in this chunk;
                # a chunk that stopped early but improved a lot (loss heading to 0) gets a fresh tolerance
                gain = chunk_start - tracker.best_loss
                stalled = done < group["max_iter"] and gain <= 1e-9 * abs(tracker.best_loss)
            else:
                current = float(torchopt.step(opt, closure).detach())  # the loss before this update
                if steps:  # the closure just evaluated the parameters after the previous update
                    history.append(tracker.last_obj)
                steps += 1
                stalled = False
            if not all(bool(torch.isfinite(p).all()) for p in ps):
                raise TrainingError(
                    f"step {steps}: the parameters became NaN/inf ({name}, lr {lr:g}); nothing written; try a lower learning rate (--lr {lr / 10:g})"
                )
            if name == "lbfgs":
                history.append(tracker.best_obj)
            if progress:
                progress(steps, tracker.best_obj if name == "lbfgs" else tracker.last_obj)
            if name == "lbfgs":
                current = tracker.best_loss
            change = abs(prev - current) / max(abs(current), 1e-300)
            quiet = quiet + 1 if change < REL_TOL else 0
            prev = current
            grad_tiny = all(p.grad is None or float(p.grad.abs().max()) <= 1e-14 for p in ps)
            if stalled or quiet >= PATIENCE or grad_tiny:
                converged = True
                break
            if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                break
    except KeyboardInterrupt:
        if tracker.best_params is None:
            raise
        interrupted = True
    except TrainingError as exc:
        exc.result = _result(tracker, initial, steps, t0, device, history, name, lr, False, False)
        raise
    finally:
        if progress and progress is not False and getattr(progress, "__name__", "") == "show":
            sys.stderr.write("\n")
    if name != "lbfgs" and steps:  # SGD/Adam: the parameters after the last update, not the best seen
        try:
            with torch.no_grad():
                evaluate()
        except TrainingError as exc:
            exc.result = _result(tracker, initial, steps, t0, device, history, name, lr, False, False)
            raise
        tracker.best_obj, tracker.best_params = tracker.last_obj, [p.detach().clone() for p in ps]
        history.append(tracker.last_obj)
    return _result(tracker, initial, steps, t0, device, history, name, lr, converged, interrupted)


def _result(tracker, initial, steps, t0, device, history, name, lr, converged, interrupted) -> TrainResult:
    params = [p.detach().cpu() for p in tracker.best_params] if tracker.best_params is not None else []
    return TrainResult(
        params=params,
        objective=tracker.best_obj,
        initial_objective=initial,
        steps=steps,
        seconds=time.perf_counter() - t0,
        device=device,
        history=history,
        optimizer=name,
        lr=lr,
        converged=converged,
        interrupted=interrupted,
        evaluations=tracker.evaluations,
    )


def as_params(params, model, device, dtype) -> list[torch.Tensor]:
    start = params if params is not None else model.initial_params()
    return [
        torch.as_tensor(p).detach().to(device=device, dtype=dtype).clone().requires_grad_(True) for p in start
    ]
