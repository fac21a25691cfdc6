"""Time ranges as researchers write them.

* quantpylib's ``YYYY-MM-DD:HH`` strings: whole hours, **both end hours included**
  (``2025-01-05:22`` to ``2025-01-06:02`` covers 22:00 on the 5th to 03:00 on the 6th).
* ISO datetimes (``2025-01-05T22:15``, ``2025-01-05 22:15:30Z``, offsets allowed), dates,
  ``datetime`` objects and integer nanoseconds: half-open ``[start, end)``.

Naive datetimes are UTC. The result is ``(start_ns, end_ns)`` with ``start < end``.
"""
from __future__ import annotations

import re
from datetime import date, datetime, timezone
from typing import Union

from actors.errors import TickarchiveError

from actors.storage.layout import HOUR_NS, NS

TimeLike = Union[str, datetime, date, int]
MAX_NS = 2**63 - 1                     # int64 nanoseconds: 2262-04-11T23:47:16Z
_QUANTPYLIB = re.compile(r"^(\d{4})-(\d{2})-(\d{2}):(\d{1,2})$")


class RangeError(TickarchiveError, ValueError):
    """A time or range that cannot be understood; the message says which and why."""


def _to_ns(value: TimeLike, what: str) -> tuple[int, bool]:
    """(ns, is_quantpylib_hour)."""
    if isinstance(value, bool):
        raise RangeError(f"{what}: {value!r} is not a time")
    if isinstance(value, int):
        return value, False
    if isinstance(value, datetime):
        dt = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return int(dt.timestamp()) * NS + dt.microsecond * 1000, False   # validated by parse_range
    if isinstance(value, date):
        return int(datetime(value.year, value.month, value.day, tzinfo=timezone.utc).timestamp()) * NS, False
    text = str(value).strip()
    if re.fullmatch(r"-?\d+", text):              # integer nanoseconds given as text (CLI)
        return int(text), False
    m = _QUANTPYLIB.match(text)
    if m:
        y, mo, d, h = (int(g) for g in m.groups())
        try:
            dt = datetime(y, mo, d, h, tzinfo=timezone.utc)
        except ValueError as exc:
            raise RangeError(f"{what}: {text!r} is not a valid YYYY-MM-DD:HH hour ({exc})") from None
        return int(dt.timestamp()) * NS, True
    try:
        dt = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RangeError(f"{what}: cannot read {text!r} (use YYYY-MM-DD:HH or an ISO datetime "
                         "like 2025-01-05T22:15:00Z)") from None
    return _to_ns(dt, what)


def parse_range(start: TimeLike, end: TimeLike) -> tuple[int, int]:
    """``(start_ns, end_ns)``, half-open; a quantpylib end hour is included whole."""
    start_ns, _ = _to_ns(start, "start")
    end_ns, end_is_hour = _to_ns(end, "end")
    if end_is_hour:
        end_ns += HOUR_NS
    for what, value, ns in (("start", start, start_ns), ("end", end, end_ns)):
        if not 0 <= ns <= MAX_NS:
            raise RangeError(f"{what}: {value!r} is outside the times an archive can hold "
                             "(1970-01-01 to 2262-04-11 UTC, nanosecond timestamps)")
    if start_ns >= end_ns:
        raise RangeError(f"start {start!r} is not before end {end!r}")
    return start_ns, end_ns


def hours_between(start_ns: int, end_ns: int) -> list[int]:
    """Start of every UTC hour that overlaps ``[start_ns, end_ns)``."""
    first = start_ns - start_ns % HOUR_NS
    return list(range(first, end_ns, HOUR_NS))


def hour_list(hours: list[int], limit: int = 12) -> str:
    """Hours (ns) as ``YYYY-MM-DD:HH, ...`` (the first ``limit``, then how many more)."""
    text = ", ".join(f"{datetime.fromtimestamp(h / NS, tz=timezone.utc):%Y-%m-%d:%H}" for h in hours[:limit])
    return text + (f" (+{len(hours) - limit} more)" if len(hours) > limit else "")
