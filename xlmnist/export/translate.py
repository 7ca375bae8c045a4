"""Formula AST -> Python expression text for the exported module (torch for the model and loss, numpy for
the feature formulas): recognised ReLU/sigmoid forms become ``torch.relu``/``torch.sigmoid``, anything
else an element-wise translation over row tensors. A mixin of :class:`xlmnist.export.module.Exporter`,
which supplies ``area`` (how a referenced range is read)."""

from __future__ import annotations

import re

from xlmnist.errors import XlmnistError
from xlmnist.formula import parser as P
from xlmnist.formula.graph import RefUse
from xlmnist.formula.patterns import relu_arg, sigmoid_arg


def escape(value, *, literal: bool = False) -> str:
    """The one way workbook text (sheet, header, file and defined names, formula text) enters generated
    source: ``literal=True`` -> a Python string literal (``repr``); else text for a comment or docstring,
    each quote, backslash and non-printable character (newlines, NUL, lone surrogates) replaced by a space."""
    text = str(value)
    if literal:
        return repr(text)
    return "".join(ch if ch.isprintable() and ch not in "\"'\\" else " " for ch in text)


class Unsupported(XlmnistError):
    """A construct the exporter cannot translate (one line, names the cell)."""


class Expr:
    """A translated expression: code, window kind (None = one value per cell, 'row', 'col', 'fixed')."""

    __slots__ = ("code", "win", "bool", "const")

    def __init__(self, code, win=None, is_bool=False, const=None):
        self.code, self.win, self.bool, self.const = code, win, is_bool, const


def paren(code: str) -> str:
    if re.fullmatch(r"'[^']*'|\"[^\"]*\"", code):
        return code
    return (
        code if re.fullmatch(r"[\w.\[\]:, @]*|\w+\(.*\)", code) and not code.startswith("-") else f"({code})"
    )


_FN1 = {"EXP": "exp", "LN": "log", "LOG10": "log10", "SQRT": "sqrt", "ABS": "abs", "TANH": "tanh"}
_CMP = {"=": "==", "<>": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}
_RED = {"SUM": "sum", "AVERAGE": "mean", "MAX": "amax", "MIN": "amin"}


def _is0(n) -> bool:
    return isinstance(n, P.Number) and n.value == 0.0


class Translator:
    """tr/num/call/reduce: one formula node -> an :class:`Expr`; ``self.area(ctx, sheet, r1, c1, r2, c2)`` reads a range."""

    def tr(self, node, b, ctx) -> Expr:
        ns = "np" if ctx == "feat" else "torch"
        T = type(node)
        if T is RefUse:
            h, w = node.r2 - node.r1 + 1, node.c2 - node.c1 + 1
            code = self.area(ctx, node.sheet, *node.footprint(b.R, b.C))
            if h == 1 and w == 1:
                return Expr(code)
            if node.rrel and b.R > 1:
                if h > 1 or (node.crel and b.C > 1):
                    raise Unsupported(f"{b.anchor}: a sliding window reference is not supported")
                return Expr(code, "row")
            if node.crel and b.C > 1:
                if w > 1:
                    raise Unsupported(f"{b.anchor}: a sliding window reference is not supported")
                return Expr(code, "col")
            return Expr(code, "fixed")
        if T is P.Number or T is P.Bool:
            return Expr(repr(float(node.value)), const=float(node.value))
        if T is P.String and ctx == "feat":
            return Expr(escape(node.value, literal=True))
        if T is P.Unary:
            a = self.num(node.operand, b, ctx)
            return Expr(f"-{paren(a.code)}" if node.op == "-" else a.code, a.win)
        if T is P.Percent:
            return Expr(f"{paren(self.num(node.operand, b, ctx).code)} / 100.0")
        sig = sigmoid_arg(node) if ctx != "feat" else None
        if sig is not None:
            return Expr(f"torch.sigmoid({self.num(sig, b, ctx).code})")
        if T is P.Binary and node.op in "+-*/^":
            x, y = self.num(node.left, b, ctx), self.num(node.right, b, ctx)
            op = "**" if node.op == "^" else node.op
            return Expr(f"{paren(x.code)} {op} {paren(y.code)}", x.win or y.win)
        if T is P.Binary and node.op in _CMP:
            x, y = self.tr(node.left, b, ctx), self.tr(node.right, b, ctx)
            return Expr(f"{paren(x.code)} {_CMP[node.op]} {paren(y.code)}", x.win or y.win, True)
        if T is P.Call:
            return self.call(node, b, ctx, ns)
        raise Unsupported(
            f"{b.anchor}: cannot export {type(node).__name__} {getattr(node, 'op', '')}".strip()
        )

    def num(self, node, b, ctx) -> Expr:
        e = self.tr(node, b, ctx)
        if e.bool:
            return Expr(f"{paren(e.code)}" + (".astype(float)" if ctx == "feat" else ".double()"), e.win)
        return e

    def call(self, node, b, ctx, ns) -> Expr:
        name, args = node.name, node.args
        relu = relu_arg(node)
        if relu is not None:
            x = self.num(relu, b, ctx).code
            return Expr(f"np.maximum({x}, 0.0)" if ctx == "feat" else f"torch.relu({x})")
        if name in _FN1 and len(args) == 1:
            return Expr(f"{ns}.{_FN1[name]}({self.num(args[0], b, ctx).code})")
        if name == "LOG" and 1 <= len(args) <= 2:
            x = self.num(args[0], b, ctx).code
            return Expr(
                f"{ns}.log10({x})"
                if len(args) == 1
                else f"{ns}.log({x}) / {ns}.log({self.num(args[1], b, ctx).code})"
            )
        if name == "IF" and len(args) in (2, 3):
            c = self.tr(args[0], b, ctx)
            x = self.num(args[1], b, ctx)
            y = (
                self.num(args[2], b, ctx)
                if len(args) == 3 and not isinstance(args[2], P.Missing)
                else Expr("0.0", const=0.0)
            )
            if c.const is not None:
                return x if c.const else y
            if ctx != "feat" and x.const is not None and y.const is not None:
                return Expr(f"torch.where({c.code}, {x.code}, {y.code}).double()")
            return Expr(f"{ns}.where({c.code}, {x.code}, {y.code})", c.win or x.win or y.win)
        if name in ("SUMPRODUCT", "MMULT") and len(args) >= 2:
            xs = [self.num(a, b, ctx) for a in args]
            if name == "MMULT":
                return Expr(f"{paren(xs[0].code)} @ {paren(xs[1].code)}", "fixed" if b.array else None)
            return self.reduce(ns, "sum", Expr(" * ".join(paren(x.code) for x in xs), xs[0].win or xs[1].win))
        if name in _RED and args:
            xs = [self.num(a, b, ctx) for a in args]
            if len(xs) == 1 and xs[0].win:
                return self.reduce(ns, _RED[name], xs[0])
            if any(x.win for x in xs):
                raise Unsupported(f"{b.anchor}: {name}() over several ranges is not supported")
            if name == "SUM" or name == "AVERAGE":
                s = " + ".join(paren(x.code) for x in xs)
                return Expr(s if name == "SUM" else f"({s}) / {float(len(xs))}")
            fn = f"{ns}.maximum" if name == "MAX" else f"{ns}.minimum"
            consts = [x for x in xs if x.const is not None]
            rest = [x.code for x in xs if x.const is None]
            out = rest[0]
            for x in rest[1:]:
                out = f"{fn}({out}, {x})"
            if consts:
                k = (max if name == "MAX" else min)(x.const for x in consts)
                out = (
                    f"{fn}({out}, {k!r})"
                    if ctx == "feat"
                    else f"torch.clamp({out}, {name.lower()[:3]}={k!r})"
                )
            return Expr(out)
        raise Unsupported(f"{b.anchor}: unsupported function {name}() for export")

    @staticmethod
    def reduce(ns, fn, e: Expr) -> Expr:
        kd = "keepdims" if ns == "np" else "keepdim"
        if e.win == "row":
            return Expr(f"{ns}.{fn}({e.code}, 1, {kd}=True)")
        if e.win == "col":
            return Expr(f"{ns}.{fn}({e.code}, 0, {kd}=True)")
        return Expr(f"{ns}.{fn}({e.code})")

    def _softmax(self, b):
        """``E/SUM(E)`` with ``E = EXP(z)`` or ``EXP(z - MAX(z row))`` -> the code of ``z``."""
        node = b.ast
        if not (isinstance(node, P.Binary) and node.op == "/" and b.C > 1):
            return None
        e, s = node.left, node.right
        if not (isinstance(e, RefUse) and isinstance(s, RefUse) and e.crel and not s.crel):
            return None
        eb = self.g.block_at(e.sheet, e.r1 + (b.R > 1 and 0), e.c1)
        sb = self.g.block_at(s.sheet, s.r1, s.c1)
        if eb is None or sb is None or eb.C != b.C or eb.R != b.R:
            return None
        self.g.analyse(eb), self.g.analyse(sb)
        ok_sum = isinstance(sb.ast, P.Call) and sb.ast.name == "SUM" and len(sb.ast.args) == 1
        arg = sb.ast.args[0] if ok_sum else None
        if not (
            isinstance(arg, RefUse) and arg.sheet == eb.sheet and (arg.c1, arg.c2) == (eb.out[1], eb.out[3])
        ):
            return None
        x = eb.ast
        if not (isinstance(x, P.Call) and x.name == "EXP" and len(x.args) == 1):
            return None
        z = x.args[0]
        if isinstance(z, P.Binary) and z.op == "-" and isinstance(z.right, P.Call) and z.right.name == "MAX":
            z = z.left
        return self.num(z, eb, "model").code
