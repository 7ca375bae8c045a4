"""Minibatch training as in the book (``train_epochs``): seeded shuffles, one SGD/Adam step per batch,
the sheet's validation loss and accuracy after each epoch, and a diagnosis when predictions collapse."""

from __future__ import annotations

import functools
import math
import time

import torch

from xlmnist.errors import TrainingError
from xlmnist.train import torchopt
from xlmnist.train.metrics import collapsed, diagnose
from xlmnist.train.optim import DEFAULT_LR, TrainResult, as_params, loss_fn, resolve_device

COLLAPSE_PATIENCE = 3  # epochs in a row with one predicted class before training stops


def train_epochs(
    model,
    data: torch.Tensor,
    *,
    valid: torch.Tensor | None = None,
    view=None,
    optimizer: str = "sgd",
    lr: float | None = None,
    epochs: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    device: str = "cpu",
    max_seconds: float | None = None,
    params: list[torch.Tensor] | None = None,
    progress=None,
    lr_schedule: str = "constant",
    cancel=None,
) -> TrainResult:
    """Minibatch training as in the book: per epoch one seeded shuffle (``torch.Generator(seed)``) of
    ``data``'s rows, then one SGD/Adam step per ``batch_size`` rows (the last batch smaller).

    The loop runs in ``model``'s dtype (a float32 compile for speed). After each epoch the sheet's loss and
    accuracy over ``valid`` are measured by ``view`` (:class:`xlmnist.train.metrics.SheetView`); one row per
    epoch goes to ``result.epochs``: epoch, train_loss (the mean of the epoch's batch losses, weighted by
    rows), valid_loss, valid_accuracy, seconds (since the start, validation included). The final
    parameters are returned (as the book's loop does), not the best. ``lr_schedule="linear"`` decays the
    learning rate linearly from ``lr`` towards 0 over all the run's steps ("constant": no decay).
    ``cancel()`` returning True stops after the current step, like Ctrl-C (``result.interrupted``).

    A NaN/inf loss, or validation predictions collapsed to one class (for COLLAPSE_PATIENCE epochs or at
    the end), raises TrainingError naming the epoch and the likely cause; ``exc.result`` holds the
    parameters (the collapsed ones, or those of the last finite epoch) and ``exc.result.diagnosis``.
    """
    device = resolve_device(device)
    name = (optimizer or "sgd").lower()
    if name not in ("sgd", "adam"):
        raise TrainingError(f"optimizer {optimizer!r}: minibatch training uses sgd or adam")
    lr = float(lr) if lr is not None else DEFAULT_LR[name]
    epochs = int(epochs) if epochs is not None else 1
    if not (lr > 0 and math.isfinite(lr)):
        raise TrainingError(f"learning rate {lr}: must be a positive number")
    schedule = (lr_schedule or "constant").strip().lower()
    if schedule not in ("constant", "linear"):
        raise TrainingError(f"lr_schedule {lr_schedule!r}: use constant or linear")
    if epochs < 0 or not batch_size or batch_size < 1:
        raise TrainingError(f"epochs {epochs}, batch size {batch_size}: must be >= 0 and >= 1")
    dtype = getattr(model, "dtype", torch.float64)
    ps = as_params(params, model, device, dtype)
    data = torch.as_tensor(data).to(device=device, dtype=dtype)
    if valid is not None:
        valid = torch.as_tensor(valid).to(device=device, dtype=dtype)
    loss_of = loss_fn(model)
    opt = torchopt.make(name, ps, lr=lr)
    if data.device.type == "cpu":  # numpy's row gather: torch's CPU index_select is ~40x slower here
        rows_np = data.numpy()

        def gather(idx):
            return torch.from_numpy(rows_np[idx.numpy()])
    else:

        def gather(idx):
            return data[idx.to(data.device)]

    trusts = getattr(model, "trusts", None)
    objective = model.objective
    if trusts is not None and trusts(data):  # per-batch guards on the data checked once, here
        objective = functools.partial(model.objective, trusted=True)
    gen = torch.Generator().manual_seed(seed)
    n = len(data)
    total_steps = max(1, epochs * math.ceil(n / batch_size))
    if valid is not None and view is not None:
        view.measure(ps, valid[:1])  # compile the validation program now, not inside the first epoch
    t0, c0 = time.perf_counter(), time.process_time()
    rows: list[dict] = []
    good = [p.detach().clone() for p in ps]
    steps, initial, run, first_bad = 0, math.nan, 0, None
    interrupted = stop = False

    def result(params_, diagnosis=None) -> TrainResult:
        last = rows[-1]["train_loss"] if rows else initial
        return TrainResult(
            params=[p.detach().to("cpu", torch.float64) for p in params_], objective=last,
            initial_objective=initial, steps=steps, seconds=time.perf_counter() - t0, device=device,
            cpu_seconds=time.process_time() - c0,
            history=[r["train_loss"] for r in rows], optimizer=name, lr=lr, interrupted=interrupted,
            epochs=rows, diagnosis=diagnosis,
        )  # fmt: skip

    def fail(msg: str, params_) -> TrainingError:
        err = TrainingError(msg)
        err.result = result(params_, msg)
        return err

    for epoch in range(1, epochs + 1):
        batches = []  # (loss, rows) per step, summed once per epoch: no extra tensor op per step
        try:
            for idx in torch.randperm(n, generator=gen).split(batch_size):
                if schedule == "linear":
                    for group in opt.param_groups:
                        group["lr"] = lr * (1 - steps / total_steps)
                torchopt.zero_grad(opt)
                loss = loss_of(objective(ps, data=gather(idx)))
                loss.backward()
                torchopt.step(opt)
                batches.append((loss.detach(), len(idx)))
                steps += 1
                if steps == 1:
                    initial = float(batches[0][0])
                if max_seconds is not None and time.perf_counter() - t0 > max_seconds:
                    stop = True
                    break
                if cancel is not None and cancel():
                    interrupted = stop = True
                    break
        except KeyboardInterrupt:
            interrupted = stop = True
        seen = sum(k for _, k in batches)
        losses = torch.stack([v for v, _ in batches]).double().cpu().tolist() if batches else []
        total = sum(v * k for v, (_, k) in zip(losses, batches))
        train_loss = total / max(seen, 1)
        finite = math.isfinite(train_loss) and all(bool(torch.isfinite(p).all()) for p in ps)
        if not finite:
            raise fail(
                f"epoch {epoch}: the training loss became {train_loss if not math.isfinite(train_loss) else 'finite but the parameters NaN/inf'}"
                f" ({name}, lr {lr:g}); likely cause: the learning rate is too high (try --lr {lr / 10:g})"
                + (
                    "; in float32 EXP overflows above 88 (--dtype float64 goes further)"
                    if dtype == torch.float32
                    else ""
                )
                + "; nothing written",
                good,
            )
        row = {"epoch": epoch, "train_loss": train_loss, "valid_loss": None, "valid_accuracy": None}
        bad = None
        if valid is not None and view is not None:
            res = view.measure(ps, valid)
            row["valid_loss"], row["valid_accuracy"] = res["loss"], res["accuracy"]
            bad = collapsed(view, res)
        row["seconds"] = time.perf_counter() - t0
        rows.append(row)
        if progress:
            progress(epoch, row)
        if bad is None:
            run, first_bad = 0, None
            good = [p.detach().clone() for p in ps]
        else:
            run, first_bad = run + 1, first_bad or epoch
        if bad is not None and (run >= COLLAPSE_PATIENCE or epoch == epochs or stop):
            raise fail(diagnose(view, ps, valid, first_bad, bad, name, lr), ps)
        if stop:
            break
    return result(ps)
