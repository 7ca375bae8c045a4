"""Structured references (``Table1[[#This Row],[a]:[b]]``): the bracketed specifier split into items."""

from __future__ import annotations

import re


def spec_items(spec: str) -> list[str]:
    """``[#This Row],[a]:[b]`` -> ['#This Row', 'a\\x00b']; ``@col`` -> ['@', 'col']; ``col`` -> ['col']."""
    s = spec.strip()
    out: list[str] = []
    if s.startswith("@"):
        out.append("@")
        s = s[1:].strip()
    if not s:
        return out
    if not s.startswith("["):
        return out + [_unescape(s)]
    parts, i, cur = [], 0, ""
    while i < len(s):
        ch = s[i]
        if ch == "[":
            j = i + 1
            buf = ""
            while j < len(s) and s[j] != "]":
                if s[j] == "'" and j + 1 < len(s):
                    j += 1
                buf += s[j]
                j += 1
            cur = cur + "\x00" + buf if cur else buf
            i = j + 1
        elif ch == ",":
            parts.append(cur)
            cur = ""
            i += 1
        else:
            i += 1  # ':' and spaces: ':' joins the two columns via \x00
    if cur:
        parts.append(cur)
    return out + [p.strip() if p.startswith("#") else p for p in parts]


def _unescape(s: str) -> str:
    return re.sub(r"'(.)", r"\1", s)
