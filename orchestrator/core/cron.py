"""When a schedule fires: pure functions over cron expressions, time zones and a cursor.

`to_fire(schedule, cursor, now)` is the whole policy: the instants after `cursor` (the last
instant handled) up to `now`, reduced by the catch-up policy after downtime:
  none    fire nothing that was missed while down, only an instant due now (within a tick)
  latest  fire the most recent missed instant only (the default)
  all     fire every missed instant, the most recent `max_catchup` of them
Instants are epoch seconds; cron is evaluated in the schedule's time zone (DST included).
"""

from __future__ import annotations

import datetime as dt
import zoneinfo

from croniter import croniter

from orchestrator.core.spec import Schedule

# How late an instant may be and still count as "due now" rather than "missed".
ON_TIME_S = 5.0
_SCAN_LIMIT = 100_000


def instants_between(schedule: Schedule, after: float, until: float, limit: int) -> list[float]:
    """Fire instants in (after, until], oldest first, at most `limit` (the latest ones)."""
    tz = zoneinfo.ZoneInfo(schedule.timezone)
    cursor = croniter(schedule.cron, dt.datetime.fromtimestamp(after, tz))
    found: list[float] = []
    for _ in range(_SCAN_LIMIT):
        instant = float(cursor.get_next(float))
        if instant > until:
            break
        found.append(instant)
        if len(found) > limit:
            found.pop(0)
    return found


def next_instants(schedule: Schedule, after: float, count: int) -> list[float]:
    tz = zoneinfo.ZoneInfo(schedule.timezone)
    cursor = croniter(schedule.cron, dt.datetime.fromtimestamp(after, tz))
    return [float(cursor.get_next(float)) for _ in range(count)]


def to_fire(schedule: Schedule, cursor: float, now: float) -> list[float]:
    """The instants to start runs for, given the last instant handled (`cursor`)."""
    missed = instants_between(schedule, cursor, now, schedule.max_catchup)
    if not missed:
        return []
    if schedule.catchup == "all":
        return missed
    if schedule.catchup == "latest":
        return missed[-1:]
    return [t for t in missed if now - t <= ON_TIME_S][-1:]


def iso(instant: float, timezone: str = "UTC") -> str:
    return dt.datetime.fromtimestamp(instant, zoneinfo.ZoneInfo(timezone)).isoformat()
