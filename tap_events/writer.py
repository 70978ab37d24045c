"""How Singer messages reach stdout."""

from __future__ import annotations

import atexit
import datetime
import sys
import threading
import typing as t

from singer_sdk.contrib.msgspec import MsgSpecWriter, encoder
from singer_sdk.singerlib import Message, RecordMessage


class BufferedRecordWriter(MsgSpecWriter):
    """msgspec encoding; RECORD lines written to stdout in blocks, every other message at once.

    The SDK's writers write and flush stdout for each message: one system call per record,
    and with `PYTHONUNBUFFERED=1` (set in many container images, and by some schedulers)
    `sys.stdout.buffer` is not even buffered. Here RECORD lines collect in a block that is
    written once it reaches `BLOCK_BYTES`; a STATE (or SCHEMA, ...) is written together with
    every record before it, then flushed. A target therefore never sees a bookmark ahead of its
    rows, and a killed process loses only records no STATE had covered yet.
    """

    #: RECORD bytes held before one write to stdout.
    BLOCK_BYTES = 256 * 1024

    def __init__(self) -> None:
        super().__init__()
        self._block = bytearray()
        # The SDK's msgspec encoder reuses one module-level buffer, and a block is shared:
        # streams writing from several threads take turns.
        self._lock = threading.Lock()
        atexit.register(self.flush)

    def write_message(self, message: Message) -> None:
        with self._lock:
            self._block += self.format_message(message)
            if not isinstance(message, RecordMessage):
                self._write_block(flush=True)
            elif len(self._block) >= self.BLOCK_BYTES:
                self._write_block(flush=False)

    def write_record(
        self, stream: str, record: dict, version: int | None, time_extracted: datetime.datetime
    ) -> None:
        """A RECORD line, encoded straight into the block: the same JSON the SDK's
        `RecordMessage.to_dict()` gives, without building a message object per record."""
        line: dict[str, t.Any] = {"type": "RECORD", "stream": stream, "record": record}
        if version is not None:
            line["version"] = version
        line["time_extracted"] = time_extracted
        with self._lock:
            encoder.encode_into(line, self._block, -1)
            self._block += b"\n"
            if len(self._block) >= self.BLOCK_BYTES:
                self._write_block(flush=False)

    def flush(self) -> None:
        """Write out what is held (at exit: records after the last STATE)."""
        with self._lock:
            self._write_block(flush=True)

    def _write_block(self, *, flush: bool) -> None:
        if self._block:
            write_all(sys.stdout.buffer, self._block)
            self._block.clear()
        if flush:
            sys.stdout.flush()


def write_all(out: t.BinaryIO, data: bytearray) -> None:
    """Write every byte: an unbuffered stdout (a raw file) may take a block in parts."""
    with memoryview(data) as view:
        while view:
            view = view[out.write(view) or 0 :]
