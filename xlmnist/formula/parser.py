"""Formula text -> AST, from openpyxl's Tokenizer with one operator precedence table."""

from __future__ import annotations

import re
from dataclasses import dataclass

from openpyxl.formula.tokenizer import Token, Tokenizer, TokenizerError

from xlmnist.errors import FormulaError
from xlmnist.formula.depth import check_tokens, check_tree
from xlmnist.xlsx import limits
from xlmnist.xlsx.refs import MAX_COL, MAX_ROW, col_index


@dataclass(frozen=True)
class Number:
    value: float


@dataclass(frozen=True)
class String:
    value: str


@dataclass(frozen=True)
class Bool:
    value: bool


@dataclass(frozen=True)
class Error:
    value: str


@dataclass(frozen=True)
class Missing:
    """An omitted function argument: ``IF(a,,b)``."""


@dataclass(frozen=True)
class Ref:
    sheet: str | None
    r1: int
    c1: int
    r2: int
    c2: int
    ar1: bool = False  # $ flags per coordinate
    ac1: bool = False
    ar2: bool = False
    ac2: bool = False


@dataclass(frozen=True)
class Name:
    sheet: str | None
    name: str


@dataclass(frozen=True)
class StructRef:
    table: str
    spec: str  # the text inside the outer brackets


@dataclass(frozen=True)
class Array:
    rows: tuple  # tuple of tuples of Number/String/Bool/Error


@dataclass(frozen=True)
class Call:
    name: str
    args: tuple


@dataclass(frozen=True)
class Unary:
    op: str
    operand: object


@dataclass(frozen=True)
class Binary:
    op: str
    left: object
    right: object


@dataclass(frozen=True)
class Percent:
    operand: object


COMPOSITE = (Call, Unary, Binary, Percent)


def map_operands(node, f):
    """``node`` with each operand replaced by ``f(operand)`` (a function's arguments, an operator's
    operands): the one home of rebuilding a formula's tree; any other node is returned as it is."""
    T = type(node)
    if T is Call:
        return Call(node.name, tuple(f(a) for a in node.args))
    if T is Binary:
        return Binary(node.op, f(node.left), f(node.right))
    if T is Unary:
        return Unary(node.op, f(node.operand))
    if T is Percent:
        return Percent(f(node.operand))
    return node


# infix operators: (left binding power, right binding power); Excel evaluates ^ left to right.
INFIX = {
    "=": (10, 11), "<>": (10, 11), "<": (10, 11), "<=": (10, 11), ">": (10, 11), ">=": (10, 11),
    "&": (20, 21),
    "+": (30, 31), "-": (30, 31),
    "*": (40, 41), "/": (40, 41),
    "^": (50, 51),
    ",": (80, 81),  # union (inside parentheses)
    " ": (90, 91),  # intersection
    ":": (100, 101),  # range
}  # fmt: skip
PREFIX_BP = 60  # unary minus binds tighter than ^: -2^2 = 4
POSTFIX_BP = 70  # %

_A1 = re.compile(r"(\$?)([A-Za-z]{1,3})(\$?)(\d+)$")
_COLONLY = re.compile(r"(\$?)([A-Za-z]{1,3})$")
_ROWONLY = re.compile(r"(\$?)(\d+)$")
_NAME = re.compile(r"[A-Za-z_\\][A-Za-z0-9_.\\?]*$")


def _split_sheet(text: str) -> tuple[str | None, str]:
    if text.startswith("'"):
        end = text.find("'!", 1)
        while end != -1 and text[end - 1 : end + 1] == "''" and end > 1:
            end = text.find("'!", end + 1)
        if end == -1:
            raise ValueError("unterminated sheet name")
        return text[1:end].replace("''", "'"), text[end + 2 :]
    if "!" in text and "[" not in text.split("!", 1)[0]:
        sheet, _, rest = text.partition("!")
        return sheet, rest
    if "!" in text and text.startswith("["):
        raise ValueError("external workbook references are not supported")
    return None, text


def _endpoint(part: str):
    """(row, col, abs_row, abs_col, kind) for one end of a range; kind 'cell' | 'col' | 'row'."""
    m = _A1.match(part)
    if m:
        col = col_index(m.group(2))
        row = int(m.group(4))
        if col > MAX_COL or not 1 <= row <= MAX_ROW:
            raise ValueError(f"bad cell {part}")
        return row, col, bool(m.group(3)), bool(m.group(1)), "cell"
    m = _COLONLY.match(part)
    if m and col_index(m.group(2)) <= MAX_COL:
        return 1, col_index(m.group(2)), True, bool(m.group(1)), "col"
    m = _ROWONLY.match(part)
    if m and 1 <= int(m.group(2)) <= MAX_ROW:
        return int(m.group(2)), 1, bool(m.group(1)), True, "row"
    return None


def operand_ref(text: str):
    """Parse one RANGE operand: a Ref, Name or StructRef."""
    if "[" in text and not text.startswith("["):
        i = text.index("[")
        table, spec = text[:i], text[i:]
        if not spec.endswith("]"):
            raise ValueError(f"bad structured reference {text}")
        return StructRef(table, spec[1:-1])
    sheet, rest = _split_sheet(text)
    if "#REF!" in rest.upper():
        return Error("#REF!")
    a, colon, b = rest.partition(":")
    e1 = _endpoint(a)
    if not colon and e1 is not None and e1[4] != "cell":
        e1 = None
    if e1 is None:
        if colon or not _NAME.match(rest):
            raise ValueError(f"bad reference {text}")
        if rest.upper() in ("TRUE", "FALSE"):
            return Bool(rest.upper() == "TRUE")
        return Name(sheet, rest)
    if not colon:
        r, c, ar, ac, _ = e1
        return Ref(sheet, r, c, r, c, ar, ac, ar, ac)
    e2 = _endpoint(b)
    if e2 is None or (e1[4] == "cell") != (e2[4] == "cell") or (e1[4] != "cell" and e1[4] != e2[4]):
        raise ValueError(f"bad range {text}")
    r1, c1, ar1, ac1, kind = e1
    r2, c2, ar2, ac2, _ = e2
    if kind == "col":
        r2 = MAX_ROW
    elif kind == "row":
        c2 = MAX_COL
    if r1 > r2:
        r1, r2, ar1, ar2 = r2, r1, ar2, ar1
    if c1 > c2:
        c1, c2, ac1, ac2 = c2, c1, ac2, ac1
    return Ref(sheet, r1, c1, r2, c2, ar1, ac1, ar2, ac2)


def _literal(tok: Token):
    v, sub = tok.value, tok.subtype
    if sub == Token.NUMBER:
        return Number(float(v))
    if sub == Token.TEXT:
        return String(v[1:-1].replace('""', '"'))
    if sub == Token.LOGICAL:
        return Bool(v.upper() == "TRUE")
    if sub == Token.ERROR:
        return Error(v.upper())
    return operand_ref(v)


class _Parser:
    def __init__(self, tokens: list[Token]):
        self.toks = tokens
        self.i = 0

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else None

    def next(self):
        tok = self.peek()
        if tok is None:
            raise ValueError("unexpected end of formula")
        self.i += 1
        return tok

    def expr(self, min_bp: int = 0, in_paren: bool = False):
        left = self.prefix(in_paren)
        while True:
            tok = self.peek()
            if tok is None:
                return left
            if tok.type == Token.OP_POST:
                if POSTFIX_BP < min_bp:
                    return left
                self.i += 1
                left = Percent(left)
                continue
            if tok.type == Token.OP_IN or (tok.type == Token.WSPACE):
                op = " " if tok.type == Token.WSPACE else tok.value
                if op == "," and not in_paren:
                    return left
                if op not in INFIX:
                    raise ValueError(f"unknown operator {op!r}")
                lbp, rbp = INFIX[op]
                if lbp < min_bp:
                    return left
                self.i += 1
                left = Binary(op, left, self.expr(rbp, in_paren))
                continue
            return left

    def prefix(self, in_paren: bool):
        tok = self.next()
        t = tok.type
        if t == Token.OPERAND:
            return _literal(tok)
        if t == Token.OP_PRE:
            return Unary(tok.value, self.expr(PREFIX_BP, in_paren))
        if t == Token.PAREN and tok.subtype == Token.OPEN:
            inner = self.expr(0, in_paren=True)
            close = self.next()
            if close.type != Token.PAREN or close.subtype != Token.CLOSE:
                raise ValueError("missing )")
            return inner
        if t == Token.FUNC and tok.subtype == Token.OPEN:
            return self.call(tok.value[:-1])
        if t == Token.ARRAY and tok.subtype == Token.OPEN:
            return self.array()
        raise ValueError(f"unexpected {tok.value!r}")

    def call(self, name: str):
        name = name.upper()
        for prefix in ("_XLFN._XLWS.", "_XLFN.", "_XLWS."):
            if name.startswith(prefix):
                name = name[len(prefix) :]
        args = []
        tok = self.peek()
        if tok is not None and tok.type == Token.FUNC and tok.subtype == Token.CLOSE:
            self.i += 1
            return Call(name, ())
        while True:
            tok = self.peek()
            if tok is not None and (
                tok.type == Token.SEP or (tok.type == Token.FUNC and tok.subtype == Token.CLOSE)
            ):
                args.append(Missing())
            else:
                args.append(self.expr(0))
            tok = self.next()
            if tok.type == Token.SEP and tok.value == ",":
                continue
            if tok.type == Token.FUNC and tok.subtype == Token.CLOSE:
                return Call(name, tuple(args))
            raise ValueError(f"unexpected {tok.value!r} in {name}()")

    def array(self):
        rows, row = [], []
        while True:
            tok = self.next()
            sign = 1.0
            while tok.type == Token.OP_PRE:
                sign = -sign if tok.value == "-" else sign
                tok = self.next()
            if tok.type != Token.OPERAND or tok.subtype == Token.RANGE:
                raise ValueError("array constants hold only literals")
            lit = _literal(tok)
            if sign < 0:
                if not isinstance(lit, Number):
                    raise ValueError("bad array constant")
                lit = Number(-lit.value)
            row.append(lit)
            sep = self.next()
            if sep.type == Token.SEP and sep.value == ",":
                continue
            rows.append(tuple(row))
            if sep.type == Token.SEP and sep.value == ";":
                row = []
                continue
            if sep.type == Token.ARRAY and sep.subtype == Token.CLOSE:
                if len({len(r) for r in rows}) != 1:
                    raise ValueError("ragged array constant")
                return Array(tuple(rows))
            raise ValueError(f"unexpected {sep.value!r} in array constant")


def parse(text: str, where: str = "formula"):
    """Parse formula ``text`` (with or without the leading ``=``) into an AST; FormulaError on failure."""
    src = text if text.startswith("=") else "=" + text
    if len(src) > limits.MAX_FORMULA_CHARS + 1:
        raise FormulaError(
            f"{where}: formula of {len(src) - 1:,} characters, more than {limits.MAX_FORMULA_CHARS:,} "
            "(XLMNIST_MAX_FORMULA_CHARS)"
        )
    try:
        tokens = Tokenizer(src).items
        check_tokens(tokens, where)
        if not tokens:
            raise ValueError("empty formula")
        # whitespace only matters between two operands (intersection)
        kept = []
        for k, tok in enumerate(tokens):
            if tok.type == Token.WSPACE:
                prev = kept[-1] if kept else None
                nxt = tokens[k + 1] if k + 1 < len(tokens) else None
                if not (_ends_operand(prev) and _starts_operand(nxt)):
                    continue
            kept.append(tok)
        p = _Parser(kept)
        node = p.expr(0)
        if p.i != len(kept):
            raise ValueError(f"unexpected {kept[p.i].value!r}")
        check_tree(node, where)
        return node
    except FormulaError:
        raise
    except (TokenizerError, ValueError, IndexError, AttributeError, KeyError, TypeError) as exc:
        raise FormulaError(f"{where}: cannot parse ={text.lstrip('=')}: {exc}") from None
    except RecursionError:
        raise FormulaError(f"{where}: formula nested too deeply") from None


def _ends_operand(tok) -> bool:
    return tok is not None and (
        tok.type == Token.OPERAND or tok.subtype == Token.CLOSE or tok.type == Token.OP_POST
    )


def _starts_operand(tok) -> bool:
    return tok is not None and (
        tok.type in (Token.OPERAND, Token.FUNC, Token.ARRAY, Token.PAREN)
        and tok.subtype in (Token.OPEN, "", *_SUBS)
    )


_SUBS = (Token.RANGE, Token.NUMBER, Token.TEXT, Token.LOGICAL, Token.ERROR)
