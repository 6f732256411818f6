"""Demand tracking: arrivals in per-minute buckets and observed launch lead times.

Two adapters, in memory and DynamoDB, behind one port. `demand_stats` turns what
was observed into the policy's input.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol

from boto3.dynamodb.conditions import Key

from chalicelib.policy import DemandStats, PolicySettings

DAY = 86_400
# The rate is the last hour's, or the last 10 minutes' when they hold a surge: at least
# SURGE_ARRIVALS arrivals. Fewer than that in 10 minutes is noise at night, not a trend.
LONG_WINDOW, SHORT_WINDOW, SURGE_ARRIVALS = 3600, 600, 3
PEAK_LOOKBACK = 2 * 3600  # the warm pool is sized for the busiest 10 minutes of the last two hours
HISTORY_DAYS = 7
MIN_LEAD_OBSERVATIONS = 5  # launches seen before the learned lead time replaces the default
LEAD_KINDS = ("cold", "warm")


class DemandStore(Protocol):
    def record_arrival(self, at: float, count: int = 1) -> None: ...

    def arrivals(self, start: float, end: float) -> int:
        """Arrivals in the minutes from start (inclusive) to end (exclusive)."""
        ...

    def arrivals_by_minute(self, start: float, end: float) -> dict[int, int]:
        """Per minute (epoch minute number) with any arrivals, from start to end as in `arrivals`."""
        ...

    def had_arrivals_on_day(self, day_start: float) -> bool: ...

    def record_lead_time(self, kind: str, seconds: float, at: float) -> None: ...

    def lead_times(self, kind: str, limit: int = 50) -> list[float]:
        """The latest observations, newest first."""
        ...


def _minute(at: float) -> int:
    return int(at // 60)


class MemoryDemandStore:
    def __init__(self) -> None:
        self._minutes: dict[int, int] = defaultdict(int)
        self._days: dict[int, int] = defaultdict(int)
        self._leads: dict[str, list[tuple[float, float]]] = defaultdict(list)
        self._lock = threading.Lock()

    def record_arrival(self, at: float, count: int = 1) -> None:
        with self._lock:
            self._minutes[_minute(at)] += count
            self._days[int(at // DAY)] += count

    def arrivals(self, start: float, end: float) -> int:
        return sum(self.arrivals_by_minute(start, end).values())

    def arrivals_by_minute(self, start: float, end: float) -> dict[int, int]:
        first, last = _minute(start), _minute(end)
        with self._lock:
            if last - first < len(self._minutes):
                return {m: self._minutes[m] for m in range(first, last) if self._minutes.get(m)}
            return {m: n for m, n in self._minutes.items() if first <= m < last and n}

    def had_arrivals_on_day(self, day_start: float) -> bool:
        with self._lock:
            return self._days.get(int(day_start // DAY), 0) > 0

    def record_lead_time(self, kind: str, seconds: float, at: float) -> None:
        with self._lock:
            self._leads[kind].append((at, seconds))
            del self._leads[kind][:-200]

    def lead_times(self, kind: str, limit: int = 50) -> list[float]:
        with self._lock:
            return [s for _, s in sorted(self._leads[kind], reverse=True)[:limit]]


class DynamoDBDemandStore:
    """Items beside the registry: ARRIVALS#<minute> and LEAD#<kind>#<ms>, expiring by TTL."""

    KEEP_ARRIVALS_SECONDS = 15 * DAY
    KEEP_LEADS_SECONDS = 30 * DAY

    def __init__(self, table: Any, pool: str) -> None:
        self._table = table
        self._pk = f"POOL#{pool}"

    def record_arrival(self, at: float, count: int = 1) -> None:
        expires = int(at) + self.KEEP_ARRIVALS_SECONDS
        self._table.update_item(**arrival_update(self._pk, at, count, expires))

    def arrivals(self, start: float, end: float) -> int:
        return sum(self.arrivals_by_minute(start, end).values())

    def arrivals_by_minute(self, start: float, end: float) -> dict[int, int]:
        if _minute(end) <= _minute(start):
            return {}
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("PK").eq(self._pk)
            & Key("SK").between(f"ARRIVALS#{_minute(start):012d}", f"ARRIVALS#{_minute(end) - 1:012d}"),
            "ProjectionExpression": "SK, arrivals",
        }
        found: dict[int, int] = {}
        while True:
            page = self._table.query(**kwargs)
            for item in page.get("Items", []):
                found[int(item["SK"].split("#", 1)[1])] = int(item.get("arrivals", 0))
            if "LastEvaluatedKey" not in page:
                return found
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def had_arrivals_on_day(self, day_start: float) -> bool:
        page = self._table.query(
            KeyConditionExpression=Key("PK").eq(self._pk)
            & Key("SK").between(f"ARRIVALS#{_minute(day_start):012d}", f"ARRIVALS#{_minute(day_start + DAY) - 1:012d}"),
            ProjectionExpression="SK",
            Limit=1,
        )
        return bool(page.get("Items"))

    def record_lead_time(self, kind: str, seconds: float, at: float) -> None:
        self._table.put_item(
            Item={
                "PK": self._pk,
                "SK": f"LEAD#{kind}#{int(at * 1000):015d}",
                "seconds": math.ceil(seconds),
                "expires_at": int(at) + self.KEEP_LEADS_SECONDS,
            }
        )

    def lead_times(self, kind: str, limit: int = 50) -> list[float]:
        page = self._table.query(
            KeyConditionExpression=Key("PK").eq(self._pk) & Key("SK").begins_with(f"LEAD#{kind}#"),
            ScanIndexForward=False,
            Limit=limit,
        )
        return [float(item["seconds"]) for item in page.get("Items", [])]


def arrival_update(pk: str, at: float, count: int = 1, expires: int | None = None) -> dict[str, Any]:
    """The UpdateItem that counts arrivals in their minute; the ticket store puts it in its transaction."""
    return {
        "Key": {"PK": pk, "SK": f"ARRIVALS#{_minute(at):012d}"},
        "UpdateExpression": "ADD arrivals :n SET expires_at = :e",
        "ExpressionAttributeValues": {
            ":n": count,
            ":e": int(at) + DynamoDBDemandStore.KEEP_ARRIVALS_SECONDS if expires is None else expires,
        },
    }


def learned_lead(store: DemandStore, kind: str, default: float) -> float:
    """The 90th percentile of recent launches once enough were seen: a slow launch is the one that hurts."""
    seen = sorted(store.lead_times(kind))
    if len(seen) < MIN_LEAD_OBSERVATIONS:
        return default
    return seen[min(len(seen) - 1, math.ceil(0.9 * len(seen)) - 1)]


def demand_stats(
    store: DemandStore,
    now: float,
    settings: PolicySettings,
    booked: Callable[[float, float], int] = lambda start, end: 0,
) -> DemandStats:
    cold = learned_lead(store, "cold", settings.default_cold_lead_seconds)
    warm = learned_lead(store, "warm", settings.default_warm_lead_seconds)
    minutes = store.arrivals_by_minute(now - PEAK_LOOKBACK, now + 60)
    current = _minute(now)
    long_count = sum(n for m, n in minutes.items() if m > current - LONG_WINDOW // 60)
    short_count = sum(n for m, n in minutes.items() if m > current - SHORT_WINDOW // 60)
    recent = max(long_count / LONG_WINDOW, short_count / SHORT_WINDOW if short_count >= SURGE_ARRIVALS else 0.0)
    horizon = cold + settings.lookahead_margin_seconds
    return DemandStats(
        recent_rate_per_second=recent,
        peak_rate_per_second=max(recent, _peak_rate(minutes, window_minutes=SHORT_WINDOW // 60)),
        history_rate_per_second=_history_rate(store, now, horizon),
        booked=booked(now, now + horizon),
        cold_lead_seconds=cold,
        warm_lead_seconds=warm,
        rising=_rising(minutes, current),
    )


def _rising(minutes: dict[int, int], current: int) -> bool:
    """More arrivals in the last half hour than in the one before, and at least SURGE_ARRIVALS of them."""
    half = LONG_WINDOW // 120
    newer = sum(n for m, n in minutes.items() if current - half < m <= current)
    older = sum(n for m, n in minutes.items() if current - 2 * half < m <= current - half)
    return newer >= SURGE_ARRIVALS and newer > older


def _peak_rate(minutes: dict[int, int], window_minutes: int) -> float:
    """Arrivals per second in the busiest run of `window_minutes` minutes."""
    best = 0
    for start in minutes:
        best = max(best, sum(minutes.get(start + k, 0) for k in range(window_minutes)))
    return best / (window_minutes * 60)


def _history_rate(store: DemandStore, now: float, horizon: float) -> float | None:
    """The mean rate over the coming `horizon` on the previous days that saw any demand at all."""
    rates = []
    for days_back in range(1, HISTORY_DAYS + 1):
        then = now - days_back * DAY
        if store.had_arrivals_on_day(then - then % DAY):
            rates.append(store.arrivals(then, then + horizon) / horizon)
    return sum(rates) / len(rates) if rates else None
