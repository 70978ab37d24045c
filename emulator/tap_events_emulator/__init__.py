"""A local emulator of every API the tap reads, for tests, the demo and the benchmarks.

`start_emulator()` runs it in a background thread; `tap-events-emulator` in the foreground;
`tap_config(server.url)` is a tap config pointing at it. The emulator is its own distribution
(`emulator/pyproject.toml`): it imports the tap, the tap never imports it. Adding an API: write
its module beside `box.py`, then list its class in `EMULATED_APIS` (docs/adding-an-api.md).
"""

from __future__ import annotations

import typing as t
from urllib.parse import urlsplit

from tap_events.sources import SOURCES
from tap_events_emulator.alpaca import AlpacaAPI
from tap_events_emulator.app import EmulatorApp, EmulatorServer
from tap_events_emulator.box import BoxAPI
from tap_events_emulator.discue import DiscueAPI
from tap_events_emulator.socotra import SocotraAPI

if t.TYPE_CHECKING:
    import ssl

    from tap_events.source import Source
    from tap_events_emulator.base import EmulatedAPI

EMULATED_APIS: dict[str, type[EmulatedAPI]] = {
    "box": BoxAPI,
    "socotra": SocotraAPI,
    "alpaca": AlpacaAPI,
    "discue": DiscueAPI,
}


def build_app(
    events: int | t.Mapping[str, int] = 1000,
    *,
    seed: int = 7,
    latency_ms: float = 0.0,
    response_cache_mb: float = 0.0,
    options: t.Mapping[str, t.Mapping[str, t.Any]] | None = None,
) -> EmulatorApp:
    """Every emulated API with `events` events each (or a count per API name)."""
    counts = events if isinstance(events, t.Mapping) else dict.fromkeys(EMULATED_APIS, events)
    options = options or {}
    apis = [
        api_class(events=counts.get(name, 0), seed=seed, **options.get(name, {}))
        for name, api_class in EMULATED_APIS.items()
    ]
    return EmulatorApp(apis, latency_ms=latency_ms, response_cache_mb=response_cache_mb)


def start_emulator(
    events: int | t.Mapping[str, int] = 1000,
    *,
    port: int = 0,
    ssl_context: ssl.SSLContext | None = None,
    **kwargs: t.Any,
) -> EmulatorServer:
    """Start the emulator on 127.0.0.1 (`port` 0 picks a free one) in a daemon thread; over
    https with `ssl_context`."""
    return EmulatorServer(build_app(events, **kwargs), port=port,
                          ssl_context=ssl_context).start()


def tap_config(server_url: str) -> dict[str, t.Any]:
    """A tap config pointing every API the tap reads at the emulator at `server_url`.

    Laid out by the tap's own sources (`tap_events.sources.SOURCES`), not by a copy of them:
    one key per source; its URL settings (`*_url`) at the emulator's mount of the API, which
    serves the real API's paths under `/<name>` (Box's default `https://api.box.com/2.0`
    becomes `<server_url>/box/2.0`); then the values the emulated API answers to
    (`EmulatedAPI.tap_settings`), which must be settings of that source and complete one of
    its credential sets.
    """
    return {source.name: emulated_settings(source, f"{server_url}/{source.name}")
            for source in SOURCES}


def emulated_settings(source: Source, api_url: str) -> dict[str, t.Any]:
    """`source`'s settings for the emulated API mounted at `api_url`."""
    api = EMULATED_APIS.get(source.name)
    if api is None:
        raise LookupError(f"the tap reads {source.label} ({source.name!r}) but no emulated API "
                          f"has that name: add one to EMULATED_APIS")
    properties = {prop.name: prop for prop in source.properties}
    unknown = sorted(set(api.tap_settings) - set(properties))
    if unknown:
        raise LookupError(f"{api.__name__}.tap_settings: {', '.join(unknown)} "
                          f"not among the tap's {source.name} settings")
    if not source.is_configured({source.name: api.tap_settings}):
        raise LookupError(f"{api.__name__}.tap_settings: none of the tap's credential "
                          f"sets is complete (set {source.credentials_hint()})")
    urls = {name: api_url + urlsplit(prop.default or "").path.rstrip("/")
            for name, prop in properties.items() if name.endswith("_url")}
    return {**urls, **api.tap_settings}
