"""One-line failures: the error type the tap prints, and the words every message starts with.

A failing stream is reported as one line naming the API, the stream, what went wrong and what
to check (the setting at fault); tracebacks only at debug level. Every message about a stream
starts with `prefix(...)`, so a reader can grep a run's log for one stream.
"""

from __future__ import annotations

import typing as t

import requests
from singer_sdk.exceptions import FatalAPIError, RetriableAPIError

from tap_events.redact import redact

#: Marks the setting a failed request's URL came from, on the exception (PEP 678 notes), so a
#: network failure names the setting to check however far up it is reported.
SETTING_NOTE = "tap-events setting: "


class TapEventsError(FatalAPIError):
    """A failure explained in one line: API, stream, HTTP status, the API's words, what to check.

    Raised instead of a bare traceback; the tap prints `str(error)` and exits non-zero.
    """

    def __init__(self, message: str, response: requests.Response | None = None) -> None:
        # Like RetriableAPIError: the response is an attribute, so `str(error)` stays the
        # one-line message (FatalAPIError alone would print the args tuple).
        super().__init__(message)
        self.response = response


def subject(label: str, stream: str) -> str:
    """`Box stream 'box_events'`: how every message names one stream."""
    return f"{label} stream '{stream}'"


def prefix(label: str, stream: str) -> str:
    """`Box stream 'box_events': `: how every message about one stream begins."""
    return subject(label, stream) + ": "


def note_setting(error: BaseException, setting: str) -> None:
    """Remember on `error` which setting the failed request's URL came from."""
    if setting_of(error) is None:
        error.add_note(SETTING_NOTE + setting)


def setting_of(error: BaseException) -> str | None:
    """The setting `note_setting` attached, if any."""
    for note in getattr(error, "__notes__", ()):
        if note.startswith(SETTING_NOTE):
            return note.removeprefix(SETTING_NOTE)
    return None


def describe_failure(error: BaseException, *, label: str, stream: str, api: str, tries: int,
                     secrets: t.Iterable[str]) -> str:
    """One line for a failure that ended a stream; stack traces only with --log-level debug."""
    lead = prefix(label, stream)
    if isinstance(error, TapEventsError):
        text = str(error)
        # Errors raised outside a stream's own code (a token shared by an API's streams)
        # do not know which stream hit them.
        if f"stream '{stream}'" not in text:
            text = lead + text
        return redact(text, secrets)
    if isinstance(error, RetriableAPIError):
        # Already one line naming the API, the stream and the response.
        return redact(f"{error}; gave up after {tries} tries", secrets)
    text = f"{type(error).__name__}: {error}".replace("\n", " ")
    setting = setting_of(error)
    if setting is None and isinstance(error, requests.exceptions.RequestException):
        setting = f"{api}.api_url"
    if setting is not None:
        return redact(f"{subject(label, stream)} failed after retries: {text} "
                      f"(check {setting} and the network)", secrets)
    return redact(
        f"{subject(label, stream)} failed: {text} (the API sent data the tap cannot read; "
        "TAP_EVENTS_LOGLEVEL=DEBUG shows the traceback)",
        secrets,
    )


def shape(body: t.Any) -> str:
    """`a JSON string`, `a JSON array`: what a body is, for an error line."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return f"a JSON {names.get(type(body), 'number')}"
