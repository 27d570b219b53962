"""Time arithmetic in users' timezones: the next time of day, quiet hours, schedule fire times.

All results are aware UTC datetimes, so states, timers and outputs never depend on the machine's
zone. Local wall times go through zoneinfo: a time of day that does not exist on a spring-forward
day (02:30 in Berlin on the last Sunday of March) means the first moment after the gap, when the
clock jumps past it (03:00 summer time); one that happens twice in autumn means the first of the two.

Schedule fire times come from APScheduler's CronTrigger (the daemon and the dry-run both take
them from `next_fire`, so they agree on every fire time). The trigger runs on the wall clock (as if
the zone were UTC) and each wall-clock fire becomes an instant by the DST rule above, so a schedule
fires once per matching wall time: APScheduler 3 with a DST zone fires a time that happens twice
twice, and at the autumn change can return the same fire time again and again.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

UTC = timezone.utc
_DOW = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


@lru_cache(maxsize=1024)
def zone(name: str | None) -> tzinfo | None:
    """The zone for an IANA name; None for None, a non-string or an unknown name (also one the
    file system refuses to look up: too long for a file name)."""
    if not isinstance(name, str) or not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def local_moment(day: date, minute: int, tz: tzinfo) -> datetime:
    """`day` at `minute` past midnight on the wall clock of `tz`, as UTC (see the module's DST rule)."""
    wall = datetime.combine(day, time(minute // 60, minute % 60))
    moment = wall.replace(tzinfo=tz).astimezone(UTC)  # fold=0: the first of two, or past a gap
    if moment.astimezone(tz).replace(tzinfo=None) == wall:
        return moment
    # In a spring-forward gap fold=0 reads the wall time with the offset from before the change,
    # which lands as far past the change as the wall time is into the gap (03:30 for 02:30). The
    # change itself lies between the readings with the offsets from after and before it: find the
    # first second whose wall time is at or past `wall`.
    lo = wall.replace(tzinfo=tz, fold=1).astimezone(UTC)  # the offset from after: before the change
    hi = moment
    while hi - lo > timedelta(seconds=1):
        mid = lo + (hi - lo) / 2
        mid = mid.replace(microsecond=0)
        if mid.astimezone(tz).replace(tzinfo=None) >= wall:
            hi = mid
        else:
            lo = mid
    return hi


def next_time_of_day(now: datetime, minute: int, tz: tzinfo) -> datetime:
    """The first moment at or after `now` when the clock of `tz` shows `minute` past midnight."""
    today = now.astimezone(tz).date()
    for offset in range(3):  # today, tomorrow; a third day covers odd DST rules
        moment = local_moment(today + timedelta(days=offset), minute, tz)
        if moment >= now:
            return moment
    raise AssertionError("unreachable: a time of day recurs within two days")


def quiet_until(now: datetime, start: int, end: int, tz: tzinfo) -> datetime | None:
    """When quiet hours `start`-`end` (minutes of the day; `end < start` spans midnight) end, if
    `now` is inside them, else None. Inside means start <= local time < end."""
    if start == end:
        return None
    local = now.astimezone(tz)
    m = local.hour * 60 + local.minute + (local.second + local.microsecond / 1e6) / 60
    inside = start <= m < end if start < end else (m >= start or m < end)
    if not inside:
        return None
    return next_time_of_day(now, end, tz)


# ---------------------------------------------------------------------------------- schedules


def _weekday_field(field: str) -> str:
    """A standard cron weekday field (0 and 7 are Sunday) in APScheduler 3's terms.

    APScheduler 3 numbers weekdays from Monday = 0, so `from_crontab("0 10 * * 1")` would fire on
    Tuesdays; names mean the same in both, so numbers become names. Ranges and steps are expanded
    in standard cron semantics first (`0-2` is Sunday to Tuesday; `*/2` Sunday, Tuesday, ...)."""
    if field == "*" or not any(c.isdigit() for c in field):
        return field
    days: set[int] = set()
    for part in field.split(","):
        base, _, step_text = part.partition("/")
        step = int(step_text) if step_text else 1
        if base == "*":
            lo, hi = 0, 6
        elif "-" in base:
            a, b = base.split("-", 1)
            lo, hi = _day_number(a), _day_number(b)
            if hi < lo:  # e.g. fri-sun written as 5-0
                hi += 7
        else:
            lo = _day_number(base)
            hi = 6 if step_text else lo
        days.update(d % 7 for d in range(lo, hi + 1, step))
    return ",".join(_DOW[d] for d in sorted(days))


def _day_number(token: str) -> int:
    token = token.strip().lower()
    if token.isdigit():
        return int(token) % 7
    return _DOW.index(token[:3])


def aps_crontab(cron: str) -> str:
    """A standard 5-field crontab as APScheduler 3 reads it (weekday numbers fixed, see above)."""
    fields = cron.split()
    if len(fields) == 5:
        fields[4] = _weekday_field(fields[4])
    return " ".join(fields)


@lru_cache(maxsize=256)
def _trigger(cron: str):
    from apscheduler.triggers.cron import CronTrigger  # only projects with schedules pay for the import

    return CronTrigger.from_crontab(aps_crontab(cron), timezone=UTC)


_LOOKBACK = timedelta(hours=3)  # more than any DST shift: wall times behind `after` that may still be ahead


def next_fire(cron: str, tz_name: str, after: datetime) -> datetime | None:
    """The first fire time of `cron` in `tz_name` strictly after `after`, as UTC.

    Wall-clock fires (from the trigger in UTC, standing for the wall clock) are mapped to instants
    with `local_moment`, which never decreases as the wall time grows; the first that lands after
    `after` is the answer. The search starts a little behind `after`'s wall time because in the
    repeated hour of an autumn change the wall clock is behind times it showed before."""
    tz = ZoneInfo(tz_name)
    trigger = _trigger(cron)
    cursor = after.astimezone(tz).replace(tzinfo=UTC) - _LOOKBACK
    while True:
        wall = trigger.get_next_fire_time(None, cursor)
        if wall is None:
            return None
        moment = local_moment(wall.date(), wall.hour * 60 + wall.minute, tz)
        if moment > after:
            return moment
        cursor = wall + timedelta(minutes=1)


def previous_fire(cron: str, tz_name: str, at: datetime) -> datetime | None:
    """The last fire time of `cron` in `tz_name` at or before `at`, as UTC (None when there is
    none within 800 days): the moment a training or a firing that runs late stands for.

    Found with `next_fire` itself, so that both agree on every moment: a window behind `at` that
    doubles until it holds a fire, then walked forward to the last fire in it."""
    window = timedelta(minutes=2)
    while window <= timedelta(days=800):
        fire = next_fire(cron, tz_name, at - window)
        if fire is not None and fire <= at:
            while (later := next_fire(cron, tz_name, fire)) is not None and later <= at:
                fire = later
            return fire
        window *= 2
    return None
