"""A local emulator of every API the tap reads, for tests, the demo and the benchmarks.

`start_emulator()` runs it in a background thread; `tap-events-emulator` in the foreground.
Adding an API: write its module beside `box.py`, then list its class in `EMULATED_APIS`.
"""

from __future__ import annotations

import typing as t

from tap_events.emulator.alpaca import AlpacaAPI
from tap_events.emulator.app import EmulatorApp, EmulatorServer
from tap_events.emulator.box import BoxAPI
from tap_events.emulator.discue import DiscueAPI
from tap_events.emulator.socotra import SocotraAPI

if t.TYPE_CHECKING:
    import ssl

    from tap_events.emulator.base import EmulatedAPI

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
    """A tap config pointing every API at the emulator, with the emulator's credentials."""
    from tap_events.emulator import alpaca, box, discue, socotra

    return {
        "box": {
            "api_url": f"{server_url}/box/2.0",
            "token_url": f"{server_url}/box/oauth2/token",
            "client_id": box.CLIENT_ID,
            "client_secret": box.CLIENT_SECRET,
            "subject_type": "enterprise",
            "subject_id": "12345",
        },
        "socotra": {
            "api_url": f"{server_url}/socotra",
            "token": socotra.TOKEN,
            "tenant_locators": list(socotra.TENANTS),
            "policy_locators": list(socotra.POLICY_LOCATORS),
        },
        "alpaca": {
            "api_url": f"{server_url}/alpaca",
            "api_key": alpaca.API_KEY,
            "api_secret": alpaca.API_SECRET,
        },
        "discue": {
            "api_url": f"{server_url}/discue/v1",
            "api_key": discue.API_KEY,
        },
    }
