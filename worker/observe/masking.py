"""Untrusted content made fit for people and records: credentials masked, size and depth bounded,
control characters escaped.

One rule for the whole product: what the loyalty client records of its calls, every log line (the
structlog processor below), and everything operators are shown of a message (`recon dead`,
`recon audit rejected`, the audit page) pass through here. Imports nothing of ours, so every step
can use it without reaching into another.

A key is credential-like whatever its case and separators: ``X-Api-Key``, ``api_key``, ``apiKey``
and ``api key`` are one name. Its value is masked in parsed structures and in free text
(``password=...``, ``"token": "..."``, ``Authorization: Basic ...``, ``<secret>...</secret>``), and
so is the password of every URL in free text (``scheme://user:password@host``).
Hostile input cannot make this slow or crash it: text over ``MAX_PARSE_CHARS`` is not parsed
(its first characters are masked as text), nesting past ``MAX_DEPTH`` is cut, and the patterns run
in time linear in their input (bounded or possessive repetition, no nested quantifiers).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
from collections.abc import Mapping, MutableMapping
from decimal import Decimal
from typing import Any

MASK = "***"
CUT = "…"
EXCERPT_LIMIT = 2000
MAX_PARSE_CHARS = 65_536
MAX_DEPTH = 32

#: Normalised (lower case, letters and digits only) parts that make a key credential-like ...
_CONTAINS = (
    "password", "passwd", "passphrase", "secret", "token", "apikey", "accesskey", "privatekey",
    "authorization", "authorisation", "cookie", "credential",
)  # fmt: skip
#: ... and normalised keys that are credentials on their own (the OAuth body is {key, secret}).
_EXACT = frozenset({"key", "auth", "pwd", "pass"})
#: Keys whose every value is a credential: a vendor action's headers carry the vendor's own.
_CONTAINERS = frozenset({"apiheaders"})

# Free text: find a credential word, then what follows it (the rest of the key, a separator and
# a value, or an element's text). Searched forward only, each match resuming after the value.
_WORD = re.compile(
    r"(?i)pass(?:word|wd|phrase)|secret|token|api[ _.\-]?key|access[ _.\-]?key"
    r"|private[ _.\-]?key|authori[sz]ation|cookie|credential"
    r"|(?<![a-z0-9])(?:key|auth|pwd|pass)(?![a-z0-9])"
)
_AFTER = re.compile(
    r"""[A-Za-z0-9_.\-]{0,40}+(?:
        \\?["']?\s{0,8}[:=]\s{0,8}
        (?P<value>"(?:[^"\\\r\n]|\\.)*+"?          # "a JSON string"
                 |\\"(?:[^"\\\r\n]|\\[^"])*+(?:\\")?  # \"one inside a JSON string\"
                 |'[^'\r\n]*+'?                     # 'quoted'
                 |[^\r\n"',&}<>\[\]]++)             # the rest of the field or line
        |(?:\s[^<>]{0,200})?>(?P<element>[^<]*+)    # <secret>text</secret>
    )""",
    re.VERBOSE,
)
_SCHEME = re.compile(r"(?i)\b(basic|bearer|digest)\s+[A-Za-z0-9+/=._~\-]{6,}")
# A URL's password: scheme://user:password@host (database and broker URLs, each host of a list).
# RFC 3986 lets neither the user nor the password hold "/" or "@" unencoded.
_URL_PASSWORD = re.compile(r"(://[^\s:/?#@]{0,256}+:)[^\s/?#@]{1,512}+@")


#: Every credential word and scheme contains one of these: text with none of them is left alone
#: after one search, which keeps the log processor cheap.
_HINT = re.compile(r"(?i)pass|pwd|secret|token|key|auth|cookie|credential|basic|bearer|digest")
_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def _normal(key: str) -> str:
    return _NON_ALNUM.sub("", key[:128].lower())


@functools.lru_cache(maxsize=4096)
def _kind_of_key(key: str) -> int:
    """0 an ordinary key, 1 a credential, 2 a container of credentials (cached: keys repeat)."""
    name = _normal(key)
    if name in _EXACT or any(part in name for part in _CONTAINS):
        return 1
    return 2 if name in _CONTAINERS else 0


def is_credential_key(key: object) -> bool:
    """``X-Api-Key``, ``client_secret``, ``clientSecret``, ``Set-Cookie``, ``private key``..."""
    return isinstance(key, str) and _kind_of_key(key) == 1


def redact_text(text: str) -> str:
    """Free text with credential-looking values masked (``Basic xxx``, ``"password": "..."``)."""
    if "://" in text:
        text = _URL_PASSWORD.sub(lambda m: f"{m.group(1)}{MASK}@", text)
    if _HINT.search(text) is None:
        return text
    text = _SCHEME.sub(lambda m: f"{m.group(1)} {MASK}", text)
    pieces: list[str] = []
    done = 0
    position = 0
    while (word := _WORD.search(text, position)) is not None:
        after = _AFTER.match(text, word.end())
        if after is None:
            position = word.end()
            continue
        if after.group("value") is not None:
            start, end = after.span("value")
        elif _opens_element(text, word.start()):
            start, end = after.span("element")
        else:  # a closing tag, or a word followed by ">": nothing of its own to mask
            position = word.end()
            continue
        pieces += [text[done:start], MASK]
        done = position = max(end, word.end())
    return "".join(pieces) + text[done:] if pieces else text


def _opens_element(text: str, start: int) -> bool:
    """Whether the name the credential word is part of follows a ``<`` (bounded look-back)."""
    first = start
    while (
        first > 0
        and start - first < 40
        and (text[first - 1].isalnum() or text[first - 1] in "_.-:")
    ):
        first -= 1
    return first > 0 and text[first - 1] == "<"


def redact(value: Any, *, depth: int = 0) -> Any:
    """A copy of ``value`` with the values of credential-like keys masked, cut at ``MAX_DEPTH``.

    Strings are masked as free text, and strings that hold JSON (a vendor action's ``apiBody``
    template) are masked inside.
    """
    if depth >= MAX_DEPTH:
        return CUT
    if isinstance(value, str):
        return _redact_string(value, depth)
    if isinstance(value, int | float | None):
        return value  # the common leaves first: the Mapping check below is slow, logs are hot
    if isinstance(value, list | tuple):
        return [redact(item, depth=depth + 1) for item in value]
    if isinstance(value, Mapping):
        copy: dict[Any, Any] = {}
        for key, item in value.items():
            kind = _kind_of_key(key) if isinstance(key, str) else 0
            if kind == 1:
                copy[key] = MASK
            elif kind == 2:
                copy[key] = {name: MASK for name in item} if isinstance(item, Mapping) else MASK
            else:
                copy[key] = redact(item, depth=depth + 1)
        return copy
    return value


def _redact_string(text: str, depth: int) -> str:
    if text[:1] in ("{", "[") or text.lstrip()[:1] in ("{", "["):
        parsed = parse_json(text)
        if parsed is not NOT_JSON:
            cleaned = redact(parsed, depth=depth + 1)
            return text if cleaned == parsed else _dumps(cleaned)
    return redact_text(text)


NOT_JSON = object()
#: Deeper JSON is not parsed: the standard parser recurses (in C) once per level.
MAX_PARSE_NESTING = 256


def parse_json(text: str | bytes, *, exact: bool = True) -> Any:
    """JSON (non-integral numbers as ``Decimal`` when ``exact``), or ``NOT_JSON``: too long,
    malformed, or nested too deep.

    The nesting is measured first, in one linear pass, so the parser never meets a body 100,000
    levels deep, whatever the interpreter's recursion limit is at the time.
    """
    if len(text) > MAX_PARSE_CHARS:
        return NOT_JSON
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            return NOT_JSON
    if _nesting(text) > MAX_PARSE_NESTING:
        return NOT_JSON
    try:
        return json.loads(text, parse_float=Decimal if exact else float)
    except (ValueError, RecursionError):
        return NOT_JSON


def _nesting(text: str) -> int:
    """The deepest nesting of brackets outside strings (a bound: malformed text may read deeper)."""
    if text.count("[") + text.count("{") <= MAX_PARSE_NESTING:
        return 0  # cannot be deeper than that: no need to look closer
    deepest = level = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            level += 1
            deepest = max(deepest, level)
        elif char in "]}":
            level -= 1
    return deepest


#: ``json.dumps(text, ensure_ascii=False)`` without building an encoder per call (an excerpt
#: of one answer writes hundreds of strings; json.dumps with options makes a new encoder each time).
_string = json.encoder.encode_basestring


def _dumps(value: Any) -> str:
    """Compact JSON of a redacted value (so at most ``MAX_DEPTH`` deep); decimals exact."""
    if isinstance(value, str):
        return _string(value)
    if value is None or isinstance(value, bool):
        return "null" if value is None else ("true" if value else "false")
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, Decimal):
        return format(value, "f") if value.is_finite() else _string(str(value))
    if isinstance(value, Mapping):
        return "{" + ",".join(f"{_string(str(key))}:{_dumps(v)}" for key, v in value.items()) + "}"
    if isinstance(value, list | tuple):
        return "[" + ",".join(_dumps(item) for item in value) + "]"
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    if isinstance(value, dt.date | dt.time):
        value = value.isoformat()
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        return json.dumps(repr(value), ensure_ascii=False)


def excerpt(value: Any, limit: int = EXCERPT_LIMIT) -> str:
    """Masked text of a body (bytes, text or a parsed value), at most ``limit`` characters."""
    if value is None:
        return ""
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        if len(raw) > MAX_PARSE_CHARS:
            raw = raw[: limit * 4]  # not parsed: only what can be shown is decoded
        value = raw.decode("utf-8", errors="backslashreplace")
    parsed = parse_json(value) if isinstance(value, str) else value
    # Not JSON (or too big or deep to parse): only what can be shown is masked, as text.
    text = redact_text(value[: limit * 2]) if parsed is NOT_JSON else _dumps(redact(parsed))
    return text if len(text) <= limit else text[: limit - 1] + CUT


def printable(text: str, limit: int | None = None) -> str:
    """``text`` safe for a terminal or a page: control, format and unpaired surrogate characters
    (ESC, C1 controls, bidirectional overrides, NUL, newlines) shown as escapes, then cut."""
    if limit is not None:
        text = text[:limit]
    shown = "".join(
        char if char.isprintable() else char.encode("unicode_escape").decode("ascii")
        for char in text
    )
    return shown if limit is None or len(shown) <= limit else shown[: limit - 1] + CUT


def storable_text(body: bytes, limit: int) -> str:
    """The first ``limit`` bytes as text a person (and PostgreSQL) can read, unmasked: bad bytes
    and NUL as escapes. For rows that keep what arrived; show them through ``shown_excerpt``."""
    text = body[:limit].decode("utf-8", errors="backslashreplace")
    return text.replace("\x00", "\\x00")


def shown(value: Any, limit: int = 300) -> str:
    """One value of untrusted text for people: credentials masked, escaped, at most ``limit``."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        value = value[: limit * 4].decode("utf-8", errors="backslashreplace")
    return printable(redact_text(str(value)[: limit * 2]), limit)


def shown_excerpt(body: Any, limit: int) -> str:
    """A body for people: masked (parsed when it is JSON), escaped, at most ``limit``."""
    return printable(excerpt(body, limit), limit)


def redact_event_dict(
    logger: Any, method_name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask credentials anywhere in the event before it is rendered."""
    cleaned: MutableMapping[str, Any] = redact(event_dict)
    return cleaned
