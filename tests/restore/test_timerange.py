from datetime import datetime, timezone

import pytest

from actors.storage.layout import NS
from actors.restore.timerange import RangeError, hours_between, parse_range


def ns(*args):
    return int(datetime(*args, tzinfo=timezone.utc).timestamp()) * NS


def test_quantpylib_hours_include_both_ends():
    start, end = parse_range("2025-01-05:22", "2025-01-06:02")
    assert start == ns(2025, 1, 5, 22) and end == ns(2025, 1, 6, 3)
    assert len(hours_between(start, end)) == 5


def test_iso_is_half_open_and_naive_is_utc():
    start, end = parse_range("2025-01-05T22:15", "2025-01-06T00:30:00+01:00")
    assert start == ns(2025, 1, 5, 22, 15) and end == ns(2025, 1, 5, 23, 30)
    with pytest.raises(RangeError):  # 23:00+01:00 is 22:00 UTC, before the start
        parse_range("2025-01-05T22:15", "2025-01-05T23:00:00+01:00")
    start, end = parse_range("2025-01-05T22:15:00Z", datetime(2025, 1, 5, 22, 25))
    assert end - start == 10 * 60 * NS
    assert hours_between(start, end) == [ns(2025, 1, 5, 22)]


@pytest.mark.parametrize("start,end,needle", [
    ("2025-01-06:02", "2025-01-05:22", "not before"),
    ("2025-13-01:00", "2025-12-01:00", "not a valid"),
    ("yesterday", "2025-01-01:00", "cannot read 'yesterday'"),
])
def test_bad_ranges_are_clear(start, end, needle):
    with pytest.raises(RangeError, match=needle):
        parse_range(start, end)


@pytest.mark.parametrize("start, end", [("1970-01-01:00", "9999-01-01:00"), ("2262-05-01:00", "2262-06-01:00"),
                                        ("1969-12-31T23:00", "1970-01-01T01:00")])
def test_ranges_outside_nanosecond_timestamps_are_refused(start, end):
    with pytest.raises(RangeError, match="outside the times an archive can hold"):
        parse_range(start, end)


def test_integer_nanoseconds_as_text():
    assert parse_range("0", "3600000000000") == (0, 3_600_000_000_000)
