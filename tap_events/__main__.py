from tap_events.tap import TapEvents

TapEvents.cli()
