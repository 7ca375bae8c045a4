"""The trainer on the course's own sheets (compiled by xlmnist.compile.compiler) and on small torch objectives."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from testenv import COURSE_TITANIC as TITANIC
from testenv import HAVE_COURSE, needs_course

from xlmnist.compile import compile_workbook
from xlmnist.errors import TrainingError
from xlmnist.train.optim import choose_optimizer, random_params, resolve_device, train

SOLVER = {"linear": 0.14422714930851466, "nnet": 0.14315209641714463, "mmult": 0.14315209641014892}
LSTSQ_OPTIMUM = 0.1442271493073191


@pytest.fixture(scope="module")
def course(request):
    """The course's sheets; without ../shared the tests' course-style copy (same data, other weights)."""
    book = TITANIC if HAVE_COURSE else request.getfixturevalue("coursebook")
    return {s: compile_workbook(book, sheet=s) for s in SOLVER}


class Quadratic:
    """A real torch objective with the CompiledModel interface: sum((w - c)^2) (+ offset)."""

    objective_ref, settings = "q!A1", {}

    def __init__(self, sense="min", target=None, shape=(2, 3), sign=1.0):
        self.sense, self.target, self.sign = sense, target, sign
        self.c = torch.arange(float(np.prod(shape)), dtype=torch.float64).reshape(shape) / 4
        self.param_refs = ["q!A2:C3"]

    def initial_params(self):
        return [torch.zeros_like(self.c)]

    def objective(self, params):
        return self.sign * ((params[0] - self.c) ** 2).sum()


def test_linear_from_zeros_reaches_least_squares_optimum(course):
    model = course["linear"]
    start = [torch.zeros_like(p) for p in model.initial_params()]
    r = train(model, params=start, progress=False)
    assert r.initial_objective == pytest.approx(0.4044943820224719, rel=1e-12)  # mean(y^2): 288/712
    assert abs(r.objective - LSTSQ_OPTIMUM) / LSTSQ_OPTIMUM < 1e-10
    assert r.objective <= SOLVER["linear"]
    assert r.converged and r.optimizer == "lbfgs" and r.steps < 100
    # the returned parameters are the ones that give that objective
    assert float(model.objective(r.params)) == r.objective
    print(f"linear: {r.steps} steps {r.seconds:.3f}s -> {r.objective!r}")


@pytest.mark.parametrize("sheet, seed, scale", [("nnet", 0, 0.1), ("mmult", 0, 0.1), ("mmult", 2, 0.1)])
def test_net_from_random_init_reaches_solver_loss(course, sheet, seed, scale):
    """The ReLU net has local minima; from these seeded inits L-BFGS reaches Solver's loss or lower."""
    model = course[sheet]
    r = train(model, params=random_params(model, seed, scale), progress=False)
    assert r.initial_objective > 0.2
    assert r.objective <= SOLVER[sheet] * (1 + 1e-6)
    assert r.converged
    print(
        f"{sheet} seed {seed}: {r.steps} steps {r.seconds:.3f}s -> {r.objective!r} (Solver {SOLVER[sheet]})"
    )


@needs_course
@pytest.mark.parametrize("sheet", ["nnet", "mmult"])
def test_net_from_solver_values_stays_at_solver_minimum(course, sheet):
    """Solver's saved weights are a local minimum: training from them keeps the loss (rel 1e-6)."""
    model = course[sheet]
    r = train(model, progress=False)
    assert r.initial_objective == pytest.approx(SOLVER[sheet], rel=1e-12)
    assert r.objective == pytest.approx(SOLVER[sheet], rel=1e-6)
    assert r.objective <= r.initial_objective


def test_random_init_is_seeded(course):
    model = course["nnet"]
    a, b, c = random_params(model, 3), random_params(model, 3), random_params(model, 4)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    assert a[0].shape == (2, 10)
    r1 = train(model, params=a, progress=False, epochs=30)
    r2 = train(model, params=b, progress=False, epochs=30)
    assert r1.objective == r2.objective and torch.equal(r1.params[0], r2.params[0])


@pytest.mark.parametrize(
    "optimizer, lr, epochs, tol",
    [("adam", 0.05, 3000, 1e-6), ("sgd", 0.1, 3000, 1e-3), ("lbfgs", None, None, 1e-10)],
)
def test_optimizers_on_linear(course, optimizer, lr, epochs, tol):
    model = course["linear"]
    start = [torch.zeros_like(p) for p in model.initial_params()]
    r = train(model, optimizer=optimizer, lr=lr, epochs=epochs, params=start, progress=False)
    assert r.optimizer == optimizer
    assert (r.objective - LSTSQ_OPTIMUM) / LSTSQ_OPTIMUM < tol
    assert r.history[0] == r.initial_objective and r.history[-1] == r.objective
    if optimizer == "lbfgs":
        assert all(b <= a for a, b in zip(r.history, r.history[1:]))  # best-so-far never gets worse
    else:  # the objective before the first and after each update
        assert len(r.history) == r.steps + 1 and r.objective == float(model.objective(r.params))


@pytest.mark.parametrize(
    "sense, target, sign, expect_obj",
    [
        ("min", None, 1.0, 0.0),
        ("max", None, -1.0, 0.0),
        ("value", 2.0, 1.0, 2.0),
        ("value", -3.0, -1.0, -3.0),
    ],
)
def test_senses(sense, target, sign, expect_obj):
    model = Quadratic(sense, target, sign=sign)
    r = train(model, progress=False)
    assert r.objective == pytest.approx(expect_obj, abs=1e-9)
    if sense != "value":
        assert torch.allclose(r.params[0], model.c, atol=1e-6)


@needs_course
def test_divergence_raises_names_step_keeps_best(course):
    model = course["linear"]
    with pytest.raises(
        TrainingError, match=r"^step \d+: the objective became inf .*lower learning rate"
    ) as exc:
        train(model, optimizer="sgd", lr=1e6, epochs=500, progress=False)
    res = exc.value.result
    assert res.params and all(torch.isfinite(p).all() for p in res.params)
    assert res.objective == pytest.approx(SOLVER["linear"], rel=1e-12)  # the best seen: the start
    assert "\n" not in str(exc.value)


def test_ctrl_c_keeps_the_parameters_of_the_last_update(course):
    model = course["nnet"]
    seen = []

    def progress(step, objective):
        seen.append(objective)
        if step >= 20:
            raise KeyboardInterrupt

    r = train(
        model, optimizer="adam", lr=0.01, epochs=1000, progress=progress, params=random_params(model, 0)
    )
    assert r.interrupted and not r.converged and r.steps == 20
    assert r.history[:-1] == seen and r.objective < r.initial_objective  # progress lags one update
    assert float(model.objective(r.params)) == r.objective


def test_epochs_and_time_limits(course):
    model = course["mmult"]
    start = random_params(model, 1)
    r = train(model, optimizer="adam", epochs=7, params=start, progress=False)
    assert r.steps == 7 and len(r.history) == 8
    r = train(model, optimizer="adam", epochs=10**6, max_seconds=0.3, params=start, progress=False)
    assert 0 < r.steps < 10**6 and r.seconds < 5


def test_choices_and_errors():
    assert choose_optimizer("auto", 20) == "lbfgs"
    assert choose_optimizer("auto", 785 * 30 * 3) == "adam"
    assert choose_optimizer("SGD", 5) == "sgd"
    with pytest.raises(TrainingError, match="unknown"):
        choose_optimizer("newton", 5)
    with pytest.raises(TrainingError, match="learning rate"):
        train(Quadratic(), optimizer="adam", lr=-1, progress=False)
    with pytest.raises(TrainingError, match="unknown device"):
        resolve_device("tpu")
    if torch.cuda.is_available():
        assert resolve_device("cuda") == "cuda"
    else:
        with pytest.raises(TrainingError, match="CUDA is not available"):
            train(Quadratic(), device="cuda", progress=False)


def test_nan_start_is_refused():
    model = Quadratic()
    bad = [torch.full_like(model.c, math.nan)]
    with pytest.raises(TrainingError, match="step 0"):
        train(model, params=bad, progress=False)


# ------------------------------------------------------------------------------ minibatch (train_epochs)
@pytest.fixture(scope="module")
def mnist_linear(tmp_path_factory):
    from xlmnist import cli
    from xlmnist.train.metrics import SheetView
    from xlmnist.train.settings import dataset_rows

    out = tmp_path_factory.mktemp("mb")
    assert cli.main(["build", "--out", str(out), "--only", "mnist_3v7.xlsx", "--rows", "20"]) == 0
    model = compile_workbook(out / "mnist_3v7.xlsx", sheet="linear", dtype=torch.float32)
    rows = dataset_rows(model, "mnist_3v7")
    gen = torch.Generator().manual_seed(0)
    return (
        model,
        rows[torch.randperm(len(rows), generator=gen)[:3000]],
        dataset_rows(model, "mnist_3v7", "valid"),
        SheetView(model, "mnist_3v7"),
    )


@pytest.mark.parametrize("optimizer, lr", [("sgd", 1.0), ("adam", 0.01)])
def test_train_epochs_seeded_history_and_validation(mnist_linear, optimizer, lr):
    from xlmnist.train.minibatch import train_epochs

    model, rows, valid, view = mnist_linear
    kw = dict(valid=valid, view=view, optimizer=optimizer, lr=lr, epochs=2, batch_size=256)
    a, b = train_epochs(model, rows, seed=1, **kw), train_epochs(model, rows, seed=1, **kw)
    c = train_epochs(model, rows, seed=2, **kw)
    assert torch.equal(a.params[0], b.params[0]) and not torch.equal(a.params[0], c.params[0])
    assert a.steps == 2 * -(-3000 // 256) and [r["epoch"] for r in a.epochs] == [1, 2]
    assert set(a.epochs[0]) == {"epoch", "train_loss", "valid_loss", "valid_accuracy", "seconds"}
    assert a.epochs[1]["train_loss"] < a.epochs[0]["train_loss"] < 0.5
    assert a.epochs[-1]["valid_accuracy"] > 0.9 and a.epochs[0]["seconds"] < a.epochs[1]["seconds"]
    # the valid numbers are the sheet's loss and correct column over all 2,038 valid rows
    res = view.measure([p.float() for p in a.params], valid)
    assert res["loss"] == pytest.approx(a.epochs[-1]["valid_loss"], rel=1e-5)
    assert res["accuracy"] == a.epochs[-1]["valid_accuracy"]
    assert view.confusion(res).sum() == 2038


def test_train_epochs_nan_names_epoch_and_keeps_last_good(mnist_linear):
    from xlmnist.train.minibatch import train_epochs

    model, rows, _, _ = mnist_linear
    start = [p.clone() for p in model.initial_params()]
    rows = rows.clone()
    rows[7, 3] = float("nan")  # one corrupt pixel: the first epoch's loss is NaN
    with pytest.raises(TrainingError, match=r"^epoch 1: the training loss became nan .*try --lr 0\.1") as exc:
        train_epochs(model, rows, optimizer="sgd", lr=1.0, epochs=3, batch_size=512, params=start)
    assert torch.equal(exc.value.result.params[0], start[0].double())


def test_linear_lr_schedule_is_manual_sgd_with_decaying_lr(mnist_linear):
    from xlmnist.train.minibatch import train_epochs

    model, rows, _, _ = mnist_linear
    rows = rows.float()
    bs = (len(rows) + 2) // 3  # three steps: lr, 2/3 lr, 1/3 lr
    start = [p.clone().float() for p in model.initial_params()]
    res = train_epochs(
        model,
        rows,
        optimizer="sgd",
        lr=0.5,
        epochs=1,
        batch_size=bs,
        seed=3,
        params=start,
        lr_schedule="linear",
    )
    ps = [p.clone().requires_grad_(True) for p in start]
    gen = torch.Generator().manual_seed(3)
    for k, idx in enumerate(torch.randperm(len(rows), generator=gen).split(bs)):
        (grad,) = torch.autograd.grad(model.objective(ps, data=rows[idx]), ps)
        with torch.no_grad():
            ps[0] -= 0.5 * (1 - k / 3) * grad
    torch.testing.assert_close(res.params[0].float(), ps[0].detach(), rtol=1e-6, atol=1e-7)
    with pytest.raises(TrainingError, match="lr_schedule 'cosine'"):
        train_epochs(model, rows, optimizer="sgd", lr=0.5, epochs=1, batch_size=bs, lr_schedule="cosine")
