"""The small structured program the lowering builds (:mod:`xlmnist.compile.lower`), the rewrites work on
(:mod:`xlmnist.compile.fuse`) and :func:`render` turns into Python source once at the end.

An :class:`Op` is one torch operation: a ``kind`` (a key of :data:`OPS`), operands and attributes. An
operand is a variable name of the program (``t3`` a temporary, ``b7`` a block, ``p0`` a parameter, ``k5``
a constant tensor, ``D``/``M`` the data rows and their count, ``S7`` a block closure), a number, a
``slice``/tuple index, or a nested :class:`Op` (rendered inline). A program is a list of :class:`Stmt`:
``targets = op``, a target being a variable name or an ``env`` slot (an int). Every piece of the rendered
text comes from :data:`OPS` or is ``repr`` of a number or a checked variable name: formula text never
reaches it, and no rewrite ever looks at rendered text.
"""

from __future__ import annotations

import re

from xlmnist.compile.areas import TRUSTED

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

# kind -> template ({0}, {1}, ... the operands; {*} all of them, comma-separated)
OPS = {
    "neg": "(-{0})",
    "add": "({0} + {1})",
    "sub": "({0} - {1})",
    "mul": "({0} * {1})",
    "div": "({0} / {1})",
    "pow": "({0} ** {1})",
    "add_n": None,  # ({0} + {1} + ...)
    "eq": "torch.eq({0}, {1})",
    "ne": "torch.ne({0}, {1})",
    "lt": "torch.lt({0}, {1})",
    "le": "torch.le({0}, {1})",
    "gt": "torch.gt({0}, {1})",
    "ge": "torch.ge({0}, {1})",
    "exp": "torch.exp({0})",
    "log": "torch.log({0})",
    "log10": "torch.log10({0})",
    "abs": "torch.abs({0})",
    "sqrt": "torch.sqrt({0})",
    "tanh": "torch.tanh({0})",
    "sign": "torch.sign({0})",
    "square": "torch.square({0})",
    "sigmoid": "torch.sigmoid({0})",
    "relu": "torch.nn.functional.threshold({0}, {1}, 0.0)",  # {1}: 0.0 or RELU_T
    "maximum": "torch.maximum({0}, {1})",
    "minimum": "torch.minimum({0}, {1})",
    "where": "torch.where({0}, {1}, {2})",
    "to_dt": "{0}.to(DT)",
    "long": "{0}.long()",
    "unsqueeze": "{0}.unsqueeze(1)",
    "as11": "{0}.reshape(1, 1)",
    "flat": "{0}.reshape(-1)",
    "expand": "{0}.expand({1}, {2})",
    "index": None,  # {0}[index]
    "stack": "torch.stack([{*}], 1)",
    "cat": "torch.cat([{*}], 1)",
    "mv": "torch.mv({0}, {1})",
    "mm": "torch.mm({0}, {1})",
    "mmT": "torch.mm({0}, {1}.T)",
    "dot": "torch.dot({0}, {1})",
    "conv2d": "torch.nn.functional.conv2d({0}[None, None], {1}[None, None])[0, 0]",  # grid, kernel
    "conv2dn": "torch.nn.functional.conv2d({0}[None, None], {1})[0]",  # grid, kernels [K, 1, h, w]
    "kernels": "torch.stack([{*}])[:, None]",
    "view4": "{0}.reshape({1}, {2}, {3}, {4})",
    "winreduce": None,  # fn over h x w windows, stride sh x sw (1): max_pool2d / avg_pool2d ([K, R, C] with chan)
    "chanreduce": None,  # {0}.fn((1, 2))
    "chanflat": "{0}.flatten(1)",
    "row": "{0}.reshape(1, -1)",
    "rowdot": "({0} * {1}).sum(1)",
    "reduce": None,  # {0}.fn() / {0}.fn(1) / {0}.fn(1, keepdim=True)
    "softmax": "torch.softmax({0}, 1)",
    "cross_entropy": None,  # cross_entropy({0}, {1}, reduction=...)
    "all": "{0}.all()",
    "bool": "bool({0})",
    "or": "({0} or {1})",
    "and": None,  # {0} and {1} and ...
    "ifelse": "({1} if {0} else {2})",
    "call": None,  # {0}({1}, ...)
    "env": None,  # env[{int}]
    "trusted": None,  # env.get(TRUSTED, False)
    "rows": "{0}.shape[0]",
    "dict": None,  # {key: {0}, ...}
}
REDUCE = {"sum", "mean", "amax", "amin"}


class Op:
    """One operation: ``kind`` (a key of :data:`OPS`), operands ``args`` and attributes ``attrs``."""

    __slots__ = ("kind", "args", "attrs")

    def __init__(self, kind: str, *args, **attrs):
        if kind not in OPS:
            raise KeyError(kind)
        self.kind, self.args, self.attrs = kind, args, attrs

    def key(self):
        return (self.kind, tuple(_key(a) for a in self.args), tuple(sorted(self.attrs.items())))

    def __eq__(self, other):
        return isinstance(other, Op) and self.key() == other.key()

    def __hash__(self):
        return hash(self.key())

    def __repr__(self):
        return render_op(self)


def _key(a):
    if isinstance(a, Op):
        return a.key()
    if isinstance(a, slice):
        return ("slice", a.start, a.stop)
    if isinstance(a, tuple):
        return ("tuple",) + tuple(_key(x) for x in a)
    return (type(a).__name__, a)


class Stmt:
    """``targets = op`` (targets: variable names, or ints for ``env`` slots)."""

    __slots__ = ("targets", "op")

    def __init__(self, targets: tuple, op):
        self.targets, self.op = targets, op

    @property
    def name(self) -> str | None:
        t = self.targets[0]
        return t if isinstance(t, str) else None


def names(x) -> set[str]:
    """The variable names an operand (or op) reads."""
    if isinstance(x, str):
        return {x}
    if isinstance(x, Op):
        out = set()
        for a in x.args:
            out |= names(a)
        return out
    if isinstance(x, tuple):
        out = set()
        for a in x:
            out |= names(a)
        return out
    return set()


def has_kind(x, kind: str) -> bool:
    if isinstance(x, Op):
        return x.kind == kind or any(has_kind(a, kind) for a in x.args)
    return isinstance(x, tuple) and any(has_kind(a, kind) for a in x)


def substitute(x, fn):
    """``x`` with every variable name ``v`` replaced by ``fn(v)`` (an operand)."""
    if isinstance(x, str):
        return fn(x)
    if isinstance(x, Op):
        return Op(x.kind, *(substitute(a, fn) for a in x.args), **x.attrs)
    if isinstance(x, tuple):
        return tuple(substitute(a, fn) for a in x)
    return x


# ---- rendering -------------------------------------------------------------------------------------------
def operand(a) -> str:
    if isinstance(a, Op):
        return render_op(a)
    if isinstance(a, str):
        if not _NAME.fullmatch(a):
            raise ValueError(f"not a program variable: {a!r}")
        return a
    if isinstance(a, bool) or not isinstance(a, (int, float)):
        raise TypeError(f"not an operand: {a!r}")
    return repr(a)


def _index(a) -> str:
    if isinstance(a, tuple):
        return ", ".join(_index(x) for x in a)
    if isinstance(a, slice):
        lo, hi = "" if a.start is None else repr(int(a.start)), "" if a.stop is None else repr(int(a.stop))
        return f"{lo}:{hi}"
    return repr(int(a))


def render_op(op: Op) -> str:
    k, args = op.kind, op.args
    if k == "add_n":
        return "(" + " + ".join(operand(a) for a in args) + ")"
    if k == "and":
        return " and ".join(operand(a) for a in args)
    if k == "index":
        return f"{operand(args[0])}[{_index(args[1])}]"
    if k == "reduce":
        fn, dim = op.attrs["fn"], op.attrs.get("dim")
        if fn not in REDUCE:
            raise KeyError(fn)
        if dim is None:
            return f"{operand(args[0])}.{fn}()"
        return f"{operand(args[0])}.{fn}(1{', keepdim=True' if op.attrs.get('keep') else ''})"
    if k == "winreduce":
        fn, h, w = op.attrs["fn"], int(op.attrs["h"]), int(op.attrs["w"])
        if fn not in REDUCE:
            raise KeyError(fn)
        x, F = operand(args[0]), "torch.nn.functional"
        x, tail = (x, "") if op.attrs.get("chan") else (f"{x}[None]", "[0]")  # pooling wants [C, H, W]
        sh, sw = int(op.attrs.get("sh", 1)), int(op.attrs.get("sw", 1))
        st = "1" if (sh, sw) == (1, 1) else f"({sh}, {sw})"
        if fn == "amax":
            return f"{F}.max_pool2d({x}, ({h}, {w}), {st}){tail}"
        if fn == "amin":
            return f"(-{F}.max_pool2d(-{x}, ({h}, {w}), {st}){tail})"
        mean = f"{F}.avg_pool2d({x}, ({h}, {w}), {st}){tail}"
        return mean if fn == "mean" else f"({mean} * {h * w})"
    if k == "chanreduce":
        if op.attrs["fn"] not in REDUCE:
            raise KeyError(op.attrs["fn"])
        return f"{operand(args[0])}.{op.attrs['fn']}((1, 2))"
    if k == "cross_entropy":
        red = {"none": '"none"', "mean": '"mean"'}[op.attrs["reduction"]]
        return f"torch.nn.functional.cross_entropy({operand(args[0])}, {operand(args[1])}, reduction={red})"
    if k == "call":
        return f"{operand(args[0])}({', '.join(operand(a) for a in args[1:])})"
    if k == "env":
        return f"env[{int(args[0])}]"
    if k == "trusted":
        return f"env.get({TRUSTED!r}, False)"
    if k == "dict":
        return "{" + ", ".join(f"{int(key)}: {operand(v)}" for key, v in zip(op.attrs["keys"], args)) + "}"
    text = OPS[k].replace("{*}", ", ".join(operand(a) for a in args))
    return text.format(*(operand(a) for a in args)) if "{0}" in text else text


def render_stmt(s: Stmt) -> str:
    targets = [f"env[{int(t)}]" if isinstance(t, int) else operand(t) for t in s.targets]
    return " = ".join(targets + [operand(s.op)])


def render(head: list[Stmt], body: list[Stmt], ret, guards: list) -> str:
    """The Python source of ``def program(env)`` (and ``def check(D)`` over the data-only guards)."""
    lines = [render_stmt(s) for s in head + body] + [f"return {operand(ret)}"]
    src = "def program(env):\n" + "".join(f"    {x}\n" for x in lines)
    if guards:  # the same conditions over a whole dataset, checked once by the training loop
        conds = sorted({operand(g) for g in guards})
        src += "\n\ndef check(D):\n    return " + " and ".join(conds) + "\n"
    return src
