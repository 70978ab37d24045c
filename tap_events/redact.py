"""Keep secrets out of every line the tap writes."""

from __future__ import annotations

import base64
import logging
import re
import typing as t

MASK = "***"

#: A credential in an Authorization header's form, wherever it is echoed (an error body, an
#: exception): also masks tokens the tap never saw as settings, like minted OAuth tokens.
#: Tokens are long and contain a digit, so "Basic settings" in prose stays readable.
AUTHORIZATION_VALUE = re.compile(
    r"\b(Bearer|Basic)(\s+)(?=[A-Za-z0-9\-._~+/]*[0-9])[A-Za-z0-9\-._~+/]{12,}=*", re.IGNORECASE
)

#: A JWT (base64url `{"` opens its header and its claims): a signed assertion the tap sent,
#: whole or cut short where a server quoted the request only in part.
JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*)?")


def redact(text: str, secrets: t.Iterable[str]) -> str:
    """`text` with every secret value replaced by ***, longest first."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    text = JWT.sub(MASK, text)
    return AUTHORIZATION_VALUE.sub(rf"\1\2{MASK}", text)


def basic_credentials(username: str, password: str) -> str:
    """The token an HTTP Basic header carries, so it can be redacted too."""
    return base64.b64encode(f"{username}:{password}".encode()).decode()


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the final message of every record."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback here so a secret in an exception never reaches a handler.
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = redact(message, self.secrets), None
        return True
