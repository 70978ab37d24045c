"""What the tap knows about one API: its settings, its credentials and its streams.

Each module in `tap_events/sources/` builds one `Source`; `tap_events/sources/__init__.py`
lists them. The tap's config schema, discovery and the "is this API configured?" check are all
derived from these objects, so adding an API means adding one module and one line. A `Source`
is plain data: the tap hands each stream it builds its source (`EventStream(source=...)`).
"""

from __future__ import annotations

import functools
import typing as t
from dataclasses import dataclass, field

from singer_sdk import typing as th

if t.TYPE_CHECKING:
    import requests

    from tap_events.http import HttpClient

class StreamClass(t.Protocol):
    """A stream class of an API (a `client.EventStream` subclass), as the tap uses it: named
    here because the stream base imports this module, not the other way round."""

    @property
    def name(self) -> str: ...

    def for_settings(self, settings: t.Mapping[str, t.Any]) -> StreamClass:
        """The class to build for these API settings (one class per feed of a stream)."""
        ...

    def __call__(self, tap: t.Any, *, source: Source, run: t.Any) -> t.Any: ...


#: What authenticates a request (an SDK authenticator): called on each request before it is sent.
Auth = t.Callable[["requests.PreparedRequest"], "requests.PreparedRequest"]
#: Makes an API's authenticator from its settings and its HTTP client (for token requests).
AuthFactory = t.Callable[[t.Mapping[str, t.Any], "HttpClient"], Auth]


@dataclass(frozen=True)
class Source:
    """One API the tap reads from."""

    #: The config key holding this API's settings (`box` for `box.client_id`, ...).
    name: str
    #: How the API is named in log lines and errors.
    label: str
    #: The settings under `name`, each with its default (the SDK fills defaults only at the
    #: top level of the config, so nested defaults are applied by `settings()`).
    properties: tuple[th.Property, ...]
    #: Alternative sets of settings, any one of which is enough to run the streams.
    credential_sets: tuple[tuple[str, ...], ...]
    #: The authenticator, chosen from the settings; made once per run and shared by the
    #: API's streams (`RunContext.auth`).
    authenticator: AuthFactory
    #: The stream classes (`client.EventStream` subclasses) reading this API.
    streams: tuple[StreamClass, ...] = field(default=())
    #: Secret values computed from the settings (an HTTP Basic token is base64 of
    #: `key:secret`), so they are redacted like the secret settings themselves.
    derived_secrets: t.Callable[[t.Mapping[str, t.Any]], t.Iterable[str]] | None = None
    #: What is wrong with this API's settings (defaults filled in) beyond what the JSON
    #: schema can say, one line each: checked before any request.
    settings_errors: t.Callable[[t.Mapping[str, t.Any]], list[str]] | None = None

    @property
    def config_property(self) -> th.Property:
        return th.Property(
            self.name,
            th.ObjectType(*self.properties, additional_properties=False),
            description=f"{self.label} settings. Streams of {self.label} are skipped when "
            f"none of its credentials are set.",
        )

    @property
    def defaults(self) -> dict[str, t.Any]:
        schema = th.ObjectType(*self.properties).to_dict()
        return {
            key: prop["default"]
            for key, prop in schema["properties"].items()
            if "default" in prop
        }

    @functools.cached_property
    def secret_settings(self) -> tuple[str, ...]:
        schema = th.ObjectType(*self.properties).to_dict()
        return tuple(
            key for key, prop in schema["properties"].items() if prop.get("secret")
        )

    def settings(self, config: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
        """This API's settings from the tap config, defaults filled in."""
        given = config.get(self.name) or {}
        settings = {**self.defaults, **{k: v for k, v in given.items() if v is not None}}
        for key in self.secret_settings:
            # A secret file mounted into a variable keeps its newline, which no API expects
            # (and `requests` refuses in a header, quoting the whole value).
            if isinstance(settings.get(key), str):
                settings[key] = settings[key].strip()
        return settings

    def is_configured(self, config: t.Mapping[str, t.Any]) -> bool:
        given = config.get(self.name) or {}
        return any(all(given.get(key) for key in keys) for keys in self.credential_sets)

    def credentials_hint(self) -> str:
        """`box.access_token, or box.client_id + box.client_secret`: what to set."""
        return ", or ".join(
            " + ".join(f"{self.name}.{key}" for key in keys) for keys in self.credential_sets
        )
