"""Keep secrets out of every line the tap writes."""

from __future__ import annotations

import base64
import logging
import typing as t

MASK = "***"


def redact(text: str, secrets: t.Iterable[str]) -> str:
    """`text` with every secret value replaced by ***, longest first."""
    for secret in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


def basic_credentials(username: str, password: str) -> str:
    """The token an HTTP Basic header carries, so it can be redacted too."""
    return base64.b64encode(f"{username}:{password}".encode()).decode()


class RedactingFilter(logging.Filter):
    """A logging filter that masks secrets in the final message of every record."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback here so a secret in an exception never reaches a handler.
            message += "\n" + logging.Formatter().formatException(record.exc_info)
            record.exc_info = None
            record.exc_text = None
        record.msg, record.args = redact(message, self.secrets), None
        return True
