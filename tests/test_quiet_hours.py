"""Quiet hours on the recipient's wall clock (notify.policy.quiet_until) across the 2026
daylight-saving changes: America/New_York 2026-03-08 02:00 → 03:00 and 2026-11-01 02:00 → 01:00,
Europe/Berlin 2026-03-29 02:00 → 03:00 and 2026-10-25 03:00 → 02:00, and Asia/Seoul (none).

The rule under test: quiet hours that hold at ``now`` end at the first instant the recipient's
clock reads the window's end; an end the clock skips releases at the change itself, an end the
clock reads twice releases at the first reading (and the second pass is not held again).
"""

from __future__ import annotations

import datetime as dt

import pytest

from notify import policy
from notify.policy import quiet_until

UTC = dt.timezone.utc
MINUTE = dt.timedelta(minutes=1)


def utc(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=UTC)


# (zone, window, an instant inside it (UTC), the release (UTC))
CASES = [
    # New York, spring forward 2026-03-08 07:00 UTC (02:00 EST → 03:00 EDT).
    ("America/New_York", "22:00-07:00", "2026-03-08 03:00", "2026-03-08 11:00"),  # ends at 07:00 EDT
    ("America/New_York", "22:00-02:30", "2026-03-08 06:59", "2026-03-08 07:00"),  # end skipped: at the change
    ("America/New_York", "22:00-02:00", "2026-03-08 05:00", "2026-03-08 07:00"),  # end is the gap's start
    ("America/New_York", "22:00-03:00", "2026-03-08 06:30", "2026-03-08 07:00"),  # end is the gap's end
    ("America/New_York", "01:00-02:30", "2026-03-08 06:05", "2026-03-08 07:00"),  # same-day window into the gap
    # New York, fall back 2026-11-01 06:00 UTC (02:00 EDT → 01:00 EST): 01:xx is read twice.
    ("America/New_York", "22:00-01:30", "2026-11-01 05:10", "2026-11-01 05:30"),  # first reading of 01:30 EDT
    ("America/New_York", "22:00-08:00", "2026-11-01 04:00", "2026-11-01 13:00"),  # 08:00 EST, an hour longer
    ("America/New_York", "23:00-01:00", "2026-11-01 04:30", "2026-11-01 05:00"),  # 01:00 EDT, the first one
    # Berlin, spring forward 2026-03-29 01:00 UTC (02:00 CET → 03:00 CEST).
    ("Europe/Berlin", "23:00-02:30", "2026-03-29 00:30", "2026-03-29 01:00"),
    ("Europe/Berlin", "22:00-07:00", "2026-03-28 22:00", "2026-03-29 05:00"),  # 07:00 CEST
    ("Europe/Berlin", "00:00-02:00", "2026-03-28 23:30", "2026-03-29 01:00"),
    # Berlin, fall back 2026-10-25 01:00 UTC (03:00 CEST → 02:00 CET): 02:xx is read twice.
    ("Europe/Berlin", "22:00-02:30", "2026-10-25 00:10", "2026-10-25 00:30"),  # 02:30 CEST
    ("Europe/Berlin", "22:00-07:00", "2026-10-24 21:00", "2026-10-25 06:00"),  # 07:00 CET
    ("Europe/Berlin", "23:00-02:00", "2026-10-24 23:59", "2026-10-25 00:00"),  # 02:00 CEST, the first one
    # Seoul: UTC+9 all year.
    ("Asia/Seoul", "22:00-08:00", "2026-03-08 14:00", "2026-03-08 23:00"),
    ("Asia/Seoul", "22:00-08:00", "2026-10-25 13:00", "2026-10-25 23:00"),
    ("Asia/Seoul", "12:00-13:30", "2026-11-01 03:10", "2026-11-01 04:30"),
]


@pytest.mark.parametrize("zone,window,inside,release", CASES)
def test_release_just_before_at_and_after_the_end(zone, window, inside, release):
    inside, release = utc(inside), utc(release)
    assert quiet_until(inside, zone, window) == release
    # A minute before the end the window still holds and ends at the same instant ...
    assert quiet_until(release - MINUTE, zone, window) == release
    assert quiet_until(release - dt.timedelta(seconds=1), zone, window) == release
    # ... and at and after the end it no longer does.
    assert quiet_until(release, zone, window) is None
    assert quiet_until(release + MINUTE, zone, window) is None


@pytest.mark.parametrize("zone,window,inside,release", CASES)
def test_every_minute_between_is_held_until_the_same_release(zone, window, inside, release):
    inside, release = utc(inside), utc(release)
    now = inside
    while now < release:
        assert quiet_until(now, zone, window) == release, now
        now += MINUTE


def test_new_york_spring_forward_release_is_the_change_not_an_hour_late():
    # 02:30 does not exist on 2026-03-08; the naive reading (02:30 EDT = 06:30 UTC is before the
    # change, 02:30 EST = 07:30 UTC is 03:30 EDT, an hour late) are both wrong.
    release = quiet_until(utc("2026-03-08 06:00"), "America/New_York", "22:00-02:30")
    assert release == utc("2026-03-08 07:00")
    assert release.astimezone(policy.zone("America/New_York")).strftime("%H:%M %Z") == "03:00 EDT"


def test_fall_back_second_reading_of_the_end_is_not_held_again():
    ny = "America/New_York"
    # 01:10 EST (06:10 UTC) is the second reading of 01:10; quiet hours ended at 01:30 EDT.
    assert quiet_until(utc("2026-11-01 06:10"), ny, "22:00-01:30") is None
    assert quiet_until(utc("2026-11-01 06:29"), ny, "22:00-01:30") is None
    berlin = "Europe/Berlin"
    # 02:10 CET (01:10 UTC) is the second reading of 02:10; quiet hours ended at 02:30 CEST.
    assert quiet_until(utc("2026-10-25 01:10"), berlin, "22:00-02:30") is None
    # A window ending after the repeated hour holds through both readings until its end.
    assert quiet_until(utc("2026-10-25 01:10"), berlin, "22:00-03:00") == utc("2026-10-25 02:00")
    assert quiet_until(utc("2026-10-25 00:10"), berlin, "22:00-03:00") == utc("2026-10-25 02:00")


def test_outside_the_window_is_not_held():
    assert quiet_until(utc("2026-03-08 02:59"), "America/New_York", "22:00-07:00") is None  # 21:59 EST
    assert quiet_until(utc("2026-03-08 03:00"), "America/New_York", "22:00-07:00") == utc("2026-03-08 11:00")
    assert quiet_until(utc("2026-06-01 03:00"), "Asia/Seoul", "22:00-08:00") is None  # 12:00 KST
    assert quiet_until(utc("2026-06-01 02:00"), "Asia/Seoul", "12:00-13:30") is None  # 11:00 KST
    assert quiet_until(utc("2026-06-01 03:00"), "Asia/Seoul", "12:00-13:30") == utc("2026-06-01 04:30")


def test_start_is_inclusive_and_end_exclusive_in_any_offset_of_now():
    start = dt.datetime(2026, 6, 1, 22, 0, tzinfo=policy.zone("Asia/Seoul"))
    assert quiet_until(start, "Asia/Seoul", "22:00-08:00") == utc("2026-06-01 23:00")
    # The same instant given in another offset is the same answer.
    assert quiet_until(start.astimezone(dt.timezone(dt.timedelta(hours=-7))), "Asia/Seoul",
                       "22:00-08:00") == utc("2026-06-01 23:00")
    assert quiet_until(start - dt.timedelta(microseconds=1), "Asia/Seoul", "22:00-08:00") is None


def test_no_window_never_holds():
    now = utc("2026-03-08 06:30")
    for window in ("", policy.NO_QUIET_HOURS, "03:00-03:00"):
        assert quiet_until(now, "America/New_York", window) is None


def test_unknown_zone_reads_the_window_in_utc():
    assert quiet_until(utc("2026-06-01 23:00"), "Mars/Olympus_Mons", "22:00-08:00") == utc("2026-06-02 08:00")


@pytest.mark.parametrize("value,parsed", [
    ("22:00-08:00", (dt.time(22), dt.time(8))),
    ("00:00-23:59", (dt.time(0), dt.time(23, 59))),
    ("", None), ("none", None), ("07:00-07:00", None),
])
def test_parse_quiet_hours(value, parsed):
    assert policy.parse_quiet_hours(value) == parsed


@pytest.mark.parametrize("value", ["22:00", "24:00-08:00", "22:60-08:00", "7:00-08:00", "22:00-08:00 ",
                                   "22:00-08:00\n", "22.00-08.00", "None", "always"])
def test_parse_quiet_hours_refuses_anything_else(value):
    with pytest.raises(ValueError):
        policy.parse_quiet_hours(value)


def test_precedence_recipient_over_category_over_app():
    assert policy.quiet_hours_of("21:00-07:00", "22:00-08:00", "23:00-09:00") == "21:00-07:00"
    assert policy.quiet_hours_of("", "22:00-08:00", "23:00-09:00") == "22:00-08:00"
    assert policy.quiet_hours_of("", "", "23:00-09:00") == "23:00-09:00"
    assert policy.quiet_hours_of("", "", "") == ""
    # "none" stops the search: the recipient (or the category) opts out of the defaults.
    assert policy.quiet_hours_of("none", "22:00-08:00", "23:00-09:00") == "none"
    assert policy.quiet_hours_of("", "none", "23:00-09:00") == "none"
    assert quiet_until(utc("2026-06-01 23:30"), "UTC", policy.quiet_hours_of("none", "", "23:00-09:00")) is None
