"""How Singer messages reach stdout."""

from __future__ import annotations

import sys

from singer_sdk.contrib.msgspec import MsgSpecWriter
from singer_sdk.singerlib import Message, RecordMessage


class BufferedRecordWriter(MsgSpecWriter):
    """msgspec encoding, flushed at every message that is not a RECORD.

    The SDK's writers flush stdout after each message: one system call per record. Flushing
    only after STATE, SCHEMA and the rest keeps what matters: a STATE reaches the target
    together with every record before it, so a target never commits a bookmark ahead of its
    rows, and a killed process loses only records that no STATE had covered yet.
    """

    def write_message(self, message: Message) -> None:
        sys.stdout.buffer.write(self.format_message(message))
        if not isinstance(message, RecordMessage):
            sys.stdout.flush()
