"""Every API the tap reads. Adding an API: write its module, then list its SOURCE here."""

from tap_events.sources import alpaca, box, discue, socotra

SOURCES = (box.SOURCE, socotra.SOURCE, alpaca.SOURCE, discue.SOURCE)
