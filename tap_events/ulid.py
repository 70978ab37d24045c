"""ULIDs (github.com/ulid/spec): 48-bit millisecond time + 80 random bits, Crockford base32.

Alpaca's event ids are ULIDs. The tap reads the time out of a bookmark to start the next read
a little before it; the emulator mints them. 26 characters, and they sort as strings in time
order (within one millisecond, by the random part).
"""

from __future__ import annotations

import datetime
import re
import typing as t

ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_PATTERN = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")
_RANDOM_BITS = 80
#: The greatest random part: the last ULID of a millisecond.
MAX_RANDOMNESS = 2**_RANDOM_BITS - 1


def encode(milliseconds: int, randomness: int) -> str:
    """The ULID of a millisecond timestamp and an 80-bit random part."""
    if not 0 <= milliseconds < 2**48 or not 0 <= randomness < 2**_RANDOM_BITS:
        raise ValueError("ULID time must fit 48 bits and randomness 80 bits")
    number = (milliseconds << _RANDOM_BITS) | randomness
    return "".join(ALPHABET[(number >> shift) & 31] for shift in range(125, -1, -5))


def is_ulid(value: object) -> t.TypeGuard[str]:
    return isinstance(value, str) and bool(_PATTERN.fullmatch(value.upper()))


#: Crockford base32 reads these letters as the digits they look like.
_CROCKFORD_ALIASES = str.maketrans({"I": "1", "L": "1", "O": "0"})


def normalize(value: object) -> str | None:
    """The ULID `value` spells, per Crockford base32 (case-insensitive; I and L are 1, O is
    0), or None when it spells none."""
    if not isinstance(value, str):
        return None
    decoded = value.upper().translate(_CROCKFORD_ALIASES)
    return decoded if is_ulid(decoded) else None


def timestamp_ms(ulid: str) -> int:
    """The millisecond time a ULID carries."""
    if not is_ulid(ulid):
        raise ValueError(f"not a ULID: {ulid!r}")
    number = 0
    for char in ulid[:10].upper():
        number = number * 32 + ALPHABET.index(char)
    return number


def datetime_of(ulid: str) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(timestamp_ms(ulid) / 1000, datetime.UTC)


def milliseconds(moment: datetime.datetime) -> int:
    return int(moment.timestamp() * 1000)
