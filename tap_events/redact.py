"""Keep secrets out of every line the tap writes, and API text from forging lines.

A secret is masked in every form it is likely to be echoed in: as it is, URL-encoded,
base64 (at any offset of a longer base64 text, as in a Basic token), JSON-escaped (`\\/`,
`\\uXXXX`, upper or lower hex) and as Python prints it (`repr` of the text or of its bytes, as
in `Invalid header value b'…'`). Text that came from an API is made printable first
(`printable`), so a server cannot forge log lines or rewrite a terminal.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import re
import typing as t
import unicodedata
from urllib.parse import quote, quote_plus

MASK = "***"
#: Shorter values are not masked: masking "1" or "yes" would garble every line.
MIN_SECRET_LENGTH = 4

#: A credential in an Authorization header's form, wherever it is echoed (an error body, an
#: exception): also masks tokens the tap never saw as settings, like minted OAuth tokens.
#: Tokens are long and contain a digit, so "Basic settings" in prose stays readable.
AUTHORIZATION_VALUE = re.compile(
    r"\b(Bearer|Basic)(\s+)(?=[A-Za-z0-9\-._~+/]*[0-9])[A-Za-z0-9\-._~+/]{12,}=*", re.IGNORECASE
)
#: Unicode categories escaped by `printable`: controls (CR, ESC, NEL...), format characters
#: (bidi overrides that reorder a terminal line), line/paragraph separators, surrogates.
UNPRINTABLE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})

#: A JWT (base64url `{"` opens its header and its claims): a signed assertion the tap sent,
#: whole or cut short where a server quoted the request only in part.
JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?")


def secret_text(value: t.Any) -> list[str]:
    """A secret setting's value as the texts to mask: a value of the wrong JSON type (a
    number, a list, an object) is still a secret, and so is each item of it."""
    if value is None or value == "" or isinstance(value, bool):
        return []
    if isinstance(value, str):
        return [value, value.strip()] if value != value.strip() else [value]
    texts = [str(value)]
    with contextlib.suppress(TypeError, ValueError):
        texts.append(json.dumps(value, default=str))
    items = value.values() if isinstance(value, dict) else value if isinstance(
        value, list | tuple) else ()
    for item in items:
        texts += secret_text(item)
    return texts


@functools.lru_cache(maxsize=4096)
def forms(secret: str) -> tuple[str, ...]:
    """Every way `secret` is likely to be written out, each long enough to be masked."""
    if len(secret) < MIN_SECRET_LENGTH:
        return ()
    found = {secret, quote(secret, safe=""), quote_plus(secret), repr(secret)[1:-1]}
    raw = secret.encode("utf-8", "surrogatepass")
    found.add(repr(raw)[2:-1])
    for json_form in (json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]):
        upper_hex = re.sub(r"\\u([0-9a-f]{4})", lambda m: "\\u" + m.group(1).upper(), json_form)
        for variant in (json_form, upper_hex):
            found |= {variant, variant.replace("/", "\\/")}
    found |= base64_forms(raw)
    return tuple(sorted((f for f in found if len(f) >= MIN_SECRET_LENGTH), key=len,
                        reverse=True))


def base64_forms(raw: bytes) -> set[str]:
    """`raw` in base64 (standard and URL-safe) at each of the three offsets it can start at
    in a longer text: the characters that depend on `raw` alone."""
    found = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + raw).decode()
        # Characters mixing `raw` with its neighbours are dropped at both ends.
        start = -(-offset * 4 // 3) if offset else 0
        end = (offset + len(raw)) // 3 * 4
        core = encoded[start:end] if offset else encoded.rstrip("=")
        if offset == 0:
            found.add(encoded)
        if len(core) >= 2 * MIN_SECRET_LENGTH:
            found |= {core, core.replace("+", "-").replace("/", "_")}
    return found


def redact(text: str, secrets: t.Iterable[t.Any]) -> str:
    """`text` with every secret value, in every form, replaced by ***, longest first."""
    if not isinstance(text, str):
        text = str(text)
    every: set[str] = set()
    for secret in secrets:
        for value in secret_text(secret):
            every.update(forms(value))
    for form in sorted(every, key=len, reverse=True):
        if form in text:
            text = text.replace(form, MASK)
    text = JWT.sub(MASK, text)
    return AUTHORIZATION_VALUE.sub(rf"\1\2{MASK}", text)


def printable(text: str, *, keep: str = "") -> str:
    """`text` with control characters, line/paragraph separators and format characters
    escaped (`\\r`, `\\x1b`, `\\u2028`), so text from an API stays on one harmless line.
    Characters in `keep` (a traceback's newlines) are left as they are."""
    if text.isprintable():
        return text
    return "".join(
        char if char in keep or unicodedata.category(char) not in UNPRINTABLE_CATEGORIES
        else escaped(char) for char in text)


def escaped(char: str) -> str:
    """`\\r`, `\\x1b`, `\\u2028`: a character as a Python string literal writes it."""
    if char.isascii():
        return repr(char)[1:-1]
    return f"\\u{ord(char):04x}" if ord(char) <= 0xFFFF else f"\\U{ord(char):08x}"


def basic_credentials(username: str, password: str) -> str:
    """The token an HTTP Basic header carries, so it can be redacted too."""
    return base64.b64encode(f"{username}:{password}".encode()).decode()


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the final message of every record, and keeps
    each record on one printable line (a traceback, rendered here, keeps its newlines)."""

    def __init__(self, secrets: list[t.Any]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a record whose arguments do not fit its format: keep both
            message = f"{record.msg!s} {record.args!r}"
        keep = ""
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback here so a secret in an exception never reaches a handler.
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
            keep = "\n"
        record.msg, record.args = printable(redact(message, self.secrets), keep=keep), None
        return True
