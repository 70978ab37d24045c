"""`tap-events-emulator`: run the API emulator in the foreground."""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys

from tap_events_emulator import EMULATED_APIS, build_app, tap_config
from tap_events_emulator.app import EmulatorServer


def parse_events(values: list[str]) -> int | dict[str, int]:
    """`--events 5000` for every API, or `--events box=5000 --events discue=100`."""
    if len(values) == 1 and "=" not in values[0]:
        return int(values[0])
    counts = dict.fromkeys(EMULATED_APIS, 0)
    for value in values:
        name, _, number = value.partition("=")
        if name not in EMULATED_APIS:
            raise SystemExit(f"--events: unknown API {name!r} (known: {', '.join(EMULATED_APIS)})")
        counts[name] = int(number)
    return counts


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="tap-events-emulator", description=__doc__)
    parser.add_argument("--port", type=int, default=8765, help="TCP port on 127.0.0.1 (0: any)")
    parser.add_argument("--events", action="append", default=None,
                        help="events per API: N, or API=N (repeatable); default 1000")
    parser.add_argument("--seed", type=int, default=7, help="seed of the generated data")
    parser.add_argument("--latency-ms", type=float, default=0.0,
                        help="added to every API response, to model a remote server")
    parser.add_argument("--response-cache-mb", type=float, default=0.0,
                        help="keep up to this many MB of answers to repeated identical "
                        "requests (benchmarks: measure the client, not event generation)")
    parser.add_argument("--print-config", action="store_true",
                        help="print a tap config for this emulator on stdout, then serve")
    args = parser.parse_args(argv)
    app = build_app(parse_events(args.events or ["1000"]), seed=args.seed,
                    latency_ms=args.latency_ms, response_cache_mb=args.response_cache_mb)
    server = EmulatorServer(app, port=args.port)
    if args.print_config:
        print(json.dumps(tap_config(server.url)), flush=True)
    print(f"tap-events emulator serving {', '.join(app.apis)} on {server.url}",
          file=sys.stderr, flush=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
