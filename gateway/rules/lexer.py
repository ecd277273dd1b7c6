"""Lexers: AWS IoT SQL to a lazy stream of positioned tokens; Joda/java.time date patterns for the time functions."""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

from gateway.rules.tokens import KEYWORDS, SqlParseError, Token, TokenKind, line_col

__all__ = ["format_millis", "iter_tokens", "parse_millis", "tokenize", "zone"]

_PUNCT: dict[str, TokenKind] = {
    "(": TokenKind.LPAREN,
    ")": TokenKind.RPAREN,
    "[": TokenKind.LBRACKET,
    "]": TokenKind.RBRACKET,
    "{": TokenKind.LBRACE,
    "}": TokenKind.RBRACE,
    ",": TokenKind.COMMA,
    ".": TokenKind.DOT,
    ":": TokenKind.COLON,
    "*": TokenKind.STAR,
    "+": TokenKind.PLUS,
    "-": TokenKind.MINUS,
    "/": TokenKind.SLASH,
    "%": TokenKind.PERCENT,
    "=": TokenKind.EQ,
    "<": TokenKind.LT,
    ">": TokenKind.GT,
}
_TWO_CHAR: dict[str, TokenKind] = {
    "<>": TokenKind.NE,
    "!=": TokenKind.BANG_EQ,
    "<=": TokenKind.LE,
    ">=": TokenKind.GE,
}
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "`": "`", "n": "\n", "t": "\t", "r": "\r", "/": "/"}
_IDENT_START = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ_")
_IDENT_CHARS = _IDENT_START | frozenset("0123456789")
_DIGITS = frozenset("0123456789")


def _is_digit(ch: str) -> bool:
    return ch in _DIGITS


def _quoted(source: str, pos: int, stop: int) -> tuple[str, int]:
    """Decode the quoted text starting at `pos` (the opening quote); return (value, end offset)."""
    quote = source[pos]
    out: list[str] = []
    i = pos + 1
    while i < stop:
        ch = source[i]
        if ch == quote:
            return "".join(out), i + 1
        if ch == "\\" and i + 1 < stop:
            nxt = source[i + 1]
            # Unknown escapes keep their backslash, so regex classes such as '\d' survive as written.
            out.append(_ESCAPES.get(nxt, "\\" + nxt))
            i += 2
            continue
        out.append(ch)
        i += 1
    what = "quoted identifier" if quote == "`" else "string literal"
    raise SqlParseError(
        f"Unterminated {what}",
        sql=source,
        offset=pos,
        hint=f"close it with a matching {quote}; a backslash escapes a quote inside it",
    )


def _number(source: str, pos: int, stop: int) -> tuple[int | float, int]:
    i = pos
    while i < stop and _is_digit(source[i]):
        i += 1
    is_float = False
    if i + 1 < stop and source[i] == "." and _is_digit(source[i + 1]):
        is_float = True
        i += 1
        while i < stop and _is_digit(source[i]):
            i += 1
    if i < stop and source[i] in "eE":
        j = i + 1
        if j < stop and source[j] in "+-":
            j += 1
        if j < stop and _is_digit(source[j]):
            is_float = True
            i = j
            while i < stop and _is_digit(source[i]):
                i += 1
    text = source[pos:i]
    try:
        value: int | float = float(text) if is_float else int(text)
    except ValueError:
        value = float("inf")
    if is_float and not math.isfinite(value):
        raise SqlParseError(f"Number {text[:40]} is out of range", sql=source, offset=pos)
    if value == float("inf"):
        raise SqlParseError("Integer literal has too many digits", sql=source, offset=pos)
    return value, i


def _unexpected(source: str, pos: int) -> SqlParseError:
    ch = source[pos]
    hint = None
    if ch in "#$+/":
        hint = "topic filters are string literals: FROM 'a/+/#' (single quotes)"
    if ch == ";":
        hint = "a rule is a single statement; remove the ';'"
    if ch == "!":
        hint = "use <> or != for 'not equal', and NOT for negation"
    if source.startswith("==", pos) or source.startswith("&&", pos) or source.startswith("||", pos):
        hint = "use = for equality, AND / OR for logic"
    shown = repr(ch) if ch.isprintable() else f"U+{ord(ch):04X}"
    if source.startswith("==", pos):
        shown = "'=='"
    return SqlParseError(f"Unexpected {shown}", sql=source, offset=pos, hint=hint)


def iter_tokens(source: str, start: int = 0, stop: int | None = None) -> Iterator[Token]:
    """Yield the tokens of `source[start:stop]` (positions relative to all of `source`), then EOF forever."""
    end = len(source) if stop is None else stop
    pos = start
    line, first_col = line_col(source, start)
    line_start = start - first_col + 1
    while True:
        scan = pos
        while pos < end and source[pos].isspace():
            pos += 1
        if pos >= end:
            line, col = line_col(source, pos)
            while True:
                yield Token(TokenKind.EOF, "", line, col, pos, pos)
        newlines = source.count("\n", scan, pos)
        if newlines:
            line += newlines
            line_start = source.rfind("\n", scan, pos) + 1
        col = pos - line_start + 1
        ch = source[pos]
        begin = pos
        value: object = None
        if ch in _IDENT_START:
            while pos < end and source[pos] in _IDENT_CHARS:
                pos += 1
            word = source[begin:pos]
            kind = KEYWORDS.get(word.upper(), TokenKind.IDENT)
            value = word
        elif _is_digit(ch):
            value, pos = _number(source, pos, end)
            kind = TokenKind.NUMBER
        elif ch in "'\"":
            value, pos = _quoted(source, pos, end)
            kind = TokenKind.STRING
        elif ch == "`":
            value, pos = _quoted(source, pos, end)
            kind = TokenKind.QUOTED_IDENT
        elif ch == "@":
            pos += 1
            while pos < end and source[pos] in _IDENT_CHARS:
                pos += 1
            if pos == begin + 1:
                raise SqlParseError(
                    "Expected a variable name after '@'", sql=source, offset=begin, hint="variables look like @name"
                )
            kind = TokenKind.VARIABLE
            value = source[begin + 1 : pos]
        elif source[pos : pos + 2] in _TWO_CHAR and pos + 1 < end:
            kind = _TWO_CHAR[source[pos : pos + 2]]
            pos += 2
        elif ch in _PUNCT and not source.startswith("==", pos):
            kind = _PUNCT[ch]
            pos += 1
        else:
            raise _unexpected(source, pos)
        yield Token(kind, source[begin:pos], line, col, pos, begin, value)
        newlines = source.count("\n", begin, pos)
        if newlines:
            line += newlines
            line_start = source.rfind("\n", begin, pos) + 1


def tokenize(source: str) -> list[Token]:
    """All tokens of `source`, ending with one EOF token (for tests and tools; the parser reads lazily)."""
    out: list[Token] = []
    for token in iter_tokens(source):
        out.append(token)
        if token.kind is TokenKind.EOF:
            return out
    return out


# ---- date-time patterns: Joda (parse_time) and java.time (time_to_epoch) ------------------------------------------

_MONTHS = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)  # fmt: skip
_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
# Zone abbreviations java.time accepts when parsing, mapped to the region they stand for.
_ABBREVIATIONS = {
    "PST": "America/Los_Angeles", "PDT": "America/Los_Angeles", "MST": "America/Denver", "MDT": "America/Denver",
    "CST": "America/Chicago", "CDT": "America/Chicago", "EST": "America/New_York", "EDT": "America/New_York",
    "CET": "Europe/Paris", "CEST": "Europe/Paris",
}  # fmt: skip
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_ZONE_RX = r"[A-Za-z][A-Za-z0-9_/+\-:]*|[+-]\d{1,2}(?::?\d{2})?"
_NAME_LIST = "|".join(_MONTHS + tuple(m[:3] for m in _MONTHS))
_DAY_LIST = "|".join(_DAYS + tuple(d[:3] for d in _DAYS))

PatternPart = str | tuple[str, int]


@lru_cache(maxsize=128)
def _pattern(pattern: str) -> tuple[PatternPart, ...]:
    """Split a date pattern into literal text and (letter, repeat count) fields; '' is a quote."""
    parts: list[PatternPart] = []
    i, size = 0, len(pattern)
    while i < size:
        ch = pattern[i]
        if ch == "'":
            if pattern.startswith("''", i):
                parts.append("'")
                i += 2
                continue
            close = pattern.find("'", i + 1)
            while close >= 0 and pattern.startswith("''", close):
                close = pattern.find("'", close + 2)
            if close < 0:
                raise ValueError("unterminated quote in date pattern")
            parts.append(pattern[i + 1 : close].replace("''", "'"))
            i = close + 1
        elif ch.isascii() and ch.isalpha():
            j = i
            while j < size and pattern[j] == ch:
                j += 1
            parts.append((ch, j - i))
            i = j
        else:
            parts.append(ch)
            i += 1
    return tuple(parts)


@lru_cache(maxsize=128)
def zone(name: str) -> tzinfo:
    """A time zone from an IANA name, UTC/GMT/Z, an offset (+01:00, UTC+1) or a common abbreviation."""
    upper = name.upper()
    if upper in ("UTC", "GMT", "UT", "Z"):
        return UTC
    for prefix in ("UTC", "GMT", "UT", ""):
        sign = upper[len(prefix) : len(prefix) + 1]
        if upper.startswith(prefix) and sign in ("+", "-"):
            body = upper[len(prefix) + 1 :].replace(":", "")
            if not (body.isascii() and body.isdigit()) or len(body) not in (1, 2, 4):
                raise ValueError(f"bad offset {name!r}")
            hours, minutes = (int(body), 0) if len(body) <= 2 else (int(body[:2]), int(body[2:]))
            offset = timedelta(hours=hours, minutes=minutes)
            return timezone(-offset if sign == "-" else offset)
    return ZoneInfo(_ABBREVIATIONS.get(upper, name))


def _format_field(letter: str, count: int, moment: datetime) -> str:
    if letter in "yYu":
        return f"{moment.year % 100:02d}" if count == 2 else f"{moment.year:0{count}d}"
    if letter == "M" and count >= 3:
        return _MONTHS[moment.month - 1] if count >= 4 else _MONTHS[moment.month - 1][:3]
    if letter == "E":
        return _DAYS[moment.weekday()] if count >= 4 else _DAYS[moment.weekday()][:3]
    if letter == "a":
        return "AM" if moment.hour < 12 else "PM"
    if letter == "G":
        return "AD"
    if letter == "S":
        return f"{moment.microsecond // 1000:03d}".ljust(count, "0")[:count]
    if letter == "z":
        return moment.tzname() or "UTC"
    if letter == "Z":
        if count >= 3:
            return str(moment.tzinfo)
        minutes = int((moment.utcoffset() or timedelta()).total_seconds()) // 60
        sign, minutes = ("-", -minutes) if minutes < 0 else ("+", minutes)
        return f"{sign}{minutes // 60:02d}{':' if count == 2 else ''}{minutes % 60:02d}"
    numbers = {
        "M": moment.month, "d": moment.day, "D": moment.timetuple().tm_yday, "H": moment.hour,
        "k": moment.hour or 24, "K": moment.hour % 12, "h": moment.hour % 12 or 12, "m": moment.minute,
        "s": moment.second, "e": moment.isoweekday(), "w": moment.isocalendar().week, "C": moment.year // 100,
    }  # fmt: skip
    if letter not in numbers:
        raise ValueError(f"unsupported pattern letter {letter!r}")
    return f"{numbers[letter]:0{count}d}"


def format_millis(pattern: str, millis: int, zone_name: str = "UTC") -> str:
    """parse_time(): epoch milliseconds formatted with a Joda-Time pattern in a time zone."""
    moment = (_EPOCH + millis * _ONE_MS).astimezone(zone(zone_name))
    return "".join(p if isinstance(p, str) else _format_field(p[0], p[1], moment) for p in _pattern(pattern))


@lru_cache(maxsize=128)
def _parser(pattern: str) -> tuple[re.Pattern[str], tuple[tuple[str, int], ...]]:
    rx: list[str] = []
    fields: list[tuple[str, int]] = []
    for part in _pattern(pattern):
        if isinstance(part, str):
            rx.append(re.escape(part))
            continue
        letter, count = part
        if letter in "yuY":
            field = r"\d{2}" if count == 2 else r"\d{4}" if count == 4 else r"[+-]?\d{1,9}"
        elif letter == "M" and count >= 3:
            field = f"(?i:{_NAME_LIST})"
        elif letter in "MdHhkKmsD":
            field = (r"\d{1,3}" if letter == "D" else r"\d{1,2}") if count == 1 else rf"\d{{{count}}}"
        elif letter in "SEaGzVOXxZ":
            field = {"S": rf"\d{{{count}}}", "E": f"(?i:{_DAY_LIST})", "a": "(?i:AM|PM)", "G": "(?i:AD|BC)"}.get(
                letter, _ZONE_RX
            )
        else:
            raise ValueError(f"unsupported pattern letter {letter!r}")
        rx.append(f"({field})")
        fields.append(part)
    return re.compile("".join(rx)), tuple(fields)


def parse_millis(text: str, pattern: str) -> int:
    """time_to_epoch(): a date string read with a java.time pattern, as epoch milliseconds (UTC by default)."""
    rx, fields = _parser(pattern)
    found = rx.fullmatch(text)
    if found is None:
        raise ValueError("text does not match the pattern")
    when = {"y": 1970, "M": 1, "d": 1, "H": 0, "m": 0, "s": 0}
    millis, half, pm, day_of_year = 0, -1, False, 0
    where: tzinfo = UTC
    for (letter, count), value in zip(fields, found.groups(), strict=True):
        if letter in "yuY":
            when["y"] = int(value) + (2000 if count == 2 else 0)
        elif letter == "M":
            when["M"] = int(value) if value.isdigit() else [m[:3].lower() for m in _MONTHS].index(value[:3].lower()) + 1
        elif letter in "dHms":
            when[letter] = int(value)
        elif letter == "k":
            when["H"] = int(value) % 24
        elif letter in "hK":
            half = int(value) % 12
        elif letter == "a":
            pm = value.upper() == "PM"
        elif letter == "S":
            millis = int(value[:3].ljust(3, "0"))
        elif letter == "D":
            day_of_year = int(value)
        elif letter not in "EG":
            where = zone(value)
    hour = half + (12 if pm else 0) if half >= 0 else when["H"]
    moment = datetime(when["y"], when["M"], when["d"], hour, when["m"], when["s"], tzinfo=where)
    if day_of_year:
        moment = moment.replace(month=1, day=1) + timedelta(days=day_of_year - 1)
    return (moment - _EPOCH) // _ONE_MS + millis
