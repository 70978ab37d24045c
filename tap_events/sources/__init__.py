"""Every API the tap reads. Adding an API: write its module, then list its SOURCE here."""

from tap_events.sources import alpaca, box, socotra

SOURCES = (box.SOURCE, socotra.SOURCE, alpaca.SOURCE)
