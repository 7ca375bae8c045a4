"""torch's own optimisers (SGD, Adam, L-BFGS) without importing ``torch._dynamo`` when nothing is compiled.

In torch 2.x every ``torch.optim`` optimiser imports ``torch._dynamo`` on first use (~0.8 s and ~70 MB here,
a quarter of a short ``xlmnist train``), whatever its flags:

* ``Optimizer.add_param_group`` / ``zero_grad`` and the functional ``adam`` / ``sgd`` are wrapped by
  ``torch._disable_dynamo``, whose wrapper imports ``torch._dynamo`` on its first call to build
  ``torch._dynamo.disable(fn)`` and caches it on ``fn`` as ``fn.__dynamo_disable``;
* ``SGD.step`` / ``Adam.step`` are wrapped by ``_use_grad_for_differentiable``, which imports it to call
  ``torch._dynamo.graph_break()`` twice around the step, under ``torch.set_grad_enabled(differentiable)``.

Outside ``torch.compile`` both wrappers change nothing but the grad mode. So while ``torch._dynamo`` is not
loaded, :func:`make` and :func:`step` run torch's own optimiser code with those caches primed by the
undecorated functions (and removed again afterwards, so a later ``torch.compile`` in the same process sees
torch as it was), and :func:`step` calls the undecorated ``step`` under the grad mode ``_use_grad`` sets.
The results are bit for bit those of ``opt.step()`` (``tests/train/test_torchopt.py``).

The plain torch calls are used instead (and ``XLMNIST_DEBUG`` says why) when ``torch._dynamo`` is already
loaded (nothing to save), when step hooks are registered, or when a wrapper is not the one recognised here.
"""

from __future__ import annotations

import inspect
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch.optim import optimizer as _optimizer

from xlmnist.compile.debug import level

_ATTR = "__dynamo_disable"  # where torch._disable_dynamo's wrapper caches torch._dynamo.disable(fn)
_DISABLE_CODE = torch._disable_dynamo(lambda: None).__code__
_USE_GRAD_CODE = _optimizer._use_grad_for_differentiable(lambda self: None).__code__
_lock = threading.Lock()
_held: dict[Callable, int] = {}  # primed function -> how many make/step calls hold it now
_found: dict[type, tuple[Callable, ...]] = {}


def debug(message: str) -> None:
    if level() >= 1:
        print(f"xlmnist: torchopt: {message}", file=sys.stderr)


def dynamo_loaded() -> bool:
    return "torch._dynamo" in sys.modules


def make(name: str, params, **options) -> torch.optim.Optimizer:
    """``torch.optim.LBFGS`` / ``Adam`` / ``SGD`` (``name`` "lbfgs" / "adam" / "sgd") over ``params``."""
    cls = {"lbfgs": torch.optim.LBFGS, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}[name]
    with _primed(cls):
        return cls(params, **options)


def zero_grad(opt: torch.optim.Optimizer) -> None:
    """``opt.zero_grad()`` (the gradients set to None)."""
    with _primed(type(opt)):
        opt.zero_grad()


def step(opt: torch.optim.Optimizer, closure=None):
    """``opt.step(closure)``, the same computation, without importing ``torch._dynamo``."""
    run = _undecorated_step(opt)
    if run is None:
        return opt.step(closure) if closure is not None else opt.step()
    with _primed(type(opt)):
        return run(closure)


def _undecorated_step(opt):
    if dynamo_loaded():
        return None
    hooks = (
        _optimizer._global_optimizer_pre_hooks, _optimizer._global_optimizer_post_hooks,
        getattr(opt, "_optimizer_step_pre_hooks", None), getattr(opt, "_optimizer_step_post_hooks", None),
    )  # fmt: skip
    if any(hooks):
        debug("optimizer step hooks are registered; torch's step (imports torch._dynamo)")
        return None
    fn = type(opt).step
    if getattr(fn, "hooked", False):  # Optimizer.profile_hook_step: the hooks (none) and a profiler label
        fn = fn.__wrapped__
    if getattr(fn, "__code__", None) is _USE_GRAD_CODE:
        raw = fn.__wrapped__
        grad_mode = bool(opt.defaults.get("differentiable", False))

        def run(closure):
            with torch.set_grad_enabled(grad_mode):
                return raw(opt, closure)

        return run
    if inspect.isfunction(fn) and not _wraps(fn, _USE_GRAD_CODE):
        return lambda closure: fn(opt, closure)  # L-BFGS: a plain @torch.no_grad() step
    debug(f"{type(opt).__name__}.step has a wrapper not recognised; torch's step")
    return None


def _wraps(fn, code) -> bool:
    while fn is not None:
        if getattr(fn, "__code__", None) is code:
            return True
        fn = getattr(fn, "__wrapped__", None)
    return False


def _disabled_functions(cls: type) -> tuple[Callable, ...]:
    """The undecorated functions behind the ``torch._disable_dynamo`` wrappers that ``cls``'s methods and
    its module's functions (the functional ``adam``, ``sgd``) call."""
    if cls not in _found:
        found: dict[int, Callable] = {}
        spaces = [vars(k) for k in cls.__mro__]
        spaces.append(vars(sys.modules.get(cls.__module__, _optimizer)))
        for space in spaces:
            for value in list(space.values()):
                for fn in _inner_functions(value):
                    if fn.__code__ is _DISABLE_CODE and inspect.isfunction(getattr(fn, "__wrapped__", None)):
                        found[id(fn.__wrapped__)] = fn.__wrapped__
        _found[cls] = tuple(found.values())
    return _found[cls]


def _inner_functions(value) -> Iterator:
    """``value`` (a function or a method's function) and the functions its closure holds, one level."""
    fn = getattr(value, "__func__", value)
    if not inspect.isfunction(fn):
        return
    yield fn
    for cell in fn.__closure__ or ():
        try:
            held = cell.cell_contents
        except ValueError:  # an empty cell
            continue
        if inspect.isfunction(held):
            yield held


@contextmanager
def _primed(cls: type):
    """While inside: each wrapper of :func:`_disabled_functions` calls its function directly, as it does
    outside ``torch.compile`` once ``torch._dynamo`` is loaded."""
    if dynamo_loaded():
        yield
        return
    fns = _disabled_functions(cls)
    with _lock:
        for fn in fns:
            if fn not in _held and getattr(fn, _ATTR, None) is None:
                setattr(fn, _ATTR, fn)
                _held[fn] = 0
            if fn in _held:
                _held[fn] += 1
    try:
        yield
    finally:
        with _lock:
            for fn in fns:
                if fn in _held:
                    _held[fn] -= 1
                    if not _held[fn]:
                        del _held[fn]
                        if getattr(fn, _ATTR, None) is fn:
                            delattr(fn, _ATTR)
