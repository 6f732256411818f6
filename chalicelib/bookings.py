"""Bookings: demand announced ahead (a webinar series, a conference session), so that the
booked number of recorders is idle when it starts. The policy counts bookings that start
within the coming lead time plus its look-ahead margin (see demand.demand_stats).

Items beside the registry: BOOKING#<start ms>#<id>, expiring a day after the start.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from chalicelib.assignment import KINDS
from chalicelib.clock import iso
from chalicelib.errors import BadRequest, NotFound

_FIELDS = {"start_at", "count", "kind", "room"}
MAX_AHEAD_SECONDS = 90 * 86_400
KEEP_AFTER_START_SECONDS = 86_400


@dataclass(frozen=True)
class Booking:
    booking_id: str
    start_at: float
    count: int
    kind: str
    room: str | None
    created_at: float

    def view(self) -> dict[str, Any]:
        return {**asdict(self), "start_at": iso(self.start_at), "created_at": iso(self.created_at)}


class BookingStore(Protocol):
    def add(self, booking: Booking) -> None: ...

    def between(self, start: float, end: float) -> list[Booking]:
        """Bookings starting in [start, end), earliest first."""
        ...

    def cancel(self, booking_id: str) -> bool:
        """Remove it; False when there was no such booking."""
        ...


class MemoryBookingStore:
    def __init__(self) -> None:
        self._items: dict[str, Booking] = {}
        self._lock = threading.Lock()

    def add(self, booking: Booking) -> None:
        with self._lock:
            self._items[booking.booking_id] = booking

    def between(self, start: float, end: float) -> list[Booking]:
        with self._lock:
            return sorted((b for b in self._items.values() if start <= b.start_at < end), key=lambda b: b.start_at)

    def cancel(self, booking_id: str) -> bool:
        with self._lock:
            return self._items.pop(booking_id, None) is not None


class DynamoDBBookingStore:
    def __init__(self, table: Any, pool: str) -> None:
        self._table = table
        self._pk = f"POOL#{pool}"

    def add(self, booking: Booking) -> None:
        self._table.put_item(
            Item={
                "PK": self._pk,
                "SK": _sk(booking.start_at, booking.booking_id),
                "booking_id": booking.booking_id,
                "start_at": Decimal(repr(booking.start_at)),
                "count": booking.count,
                "kind": booking.kind,
                "created_at": Decimal(repr(booking.created_at)),
                "expires_at": int(booking.start_at) + KEEP_AFTER_START_SECONDS,
                **({"room": booking.room} if booking.room else {}),
            },
            ConditionExpression=Attr("PK").not_exists(),
        )

    def between(self, start: float, end: float) -> list[Booking]:
        if end <= start:
            return []
        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("PK").eq(self._pk)
            & Key("SK").between(f"BOOKING#{int(start * 1000):015d}#", f"BOOKING#{int(end * 1000) - 1:015d}#~"),
        }
        found: list[Booking] = []
        while True:
            page = self._table.query(**kwargs)
            found.extend(_booking(item) for item in page.get("Items", []))
            if "LastEvaluatedKey" not in page:
                return [b for b in found if start <= b.start_at < end]
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    def cancel(self, booking_id: str) -> bool:
        # The id carries its start time, so the item's key is known without a lookup.
        try:
            start_ms = int(booking_id.split("-", 2)[1])
        except (IndexError, ValueError):
            return False
        try:
            self._table.delete_item(
                Key={"PK": self._pk, "SK": f"BOOKING#{start_ms:015d}#{booking_id}"},
                ConditionExpression=Attr("PK").exists(),
            )
            return True
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            return False


def _sk(start_at: float, booking_id: str) -> str:
    return f"BOOKING#{int(start_at * 1000):015d}#{booking_id}"


def _booking(item: dict[str, Any]) -> Booking:
    return Booking(
        booking_id=str(item["booking_id"]),
        start_at=float(item["start_at"]),
        count=int(item["count"]),
        kind=str(item["kind"]),
        room=item.get("room"),
        created_at=float(item["created_at"]),
    )


class BookingService:
    def __init__(self, store: BookingStore, now: float, group_max: Callable[[], int]) -> None:
        # Read only when a booking is made: listing and cancelling need no Auto Scaling call.
        self._store = store
        self._now = now
        self._group_max = group_max

    def create(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object with start_at, count and kind")
        unknown = sorted(set(body) - _FIELDS)
        if unknown:
            raise BadRequest(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_FIELDS))}")
        start_at = _time(body.get("start_at"))
        if start_at <= self._now:
            raise BadRequest("start_at is in the past; a booking announces demand ahead")
        if start_at > self._now + MAX_AHEAD_SECONDS:
            raise BadRequest("start_at is more than 90 days ahead")
        count = body.get("count")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise BadRequest("count must be a whole number of recorders, at least 1")
        maximum = self._group_max()
        if count > maximum:
            raise BadRequest(f"count {count} is more than the group's maximum capacity {maximum}")
        kind = body.get("kind")
        if kind not in KINDS:
            raise BadRequest(f"kind is {'missing' if kind is None else repr(kind)}; expected one of {', '.join(KINDS)}")
        room = body.get("room")
        if room is not None and (not isinstance(room, str) or not room.strip() or len(room) > 256):
            raise BadRequest("room must be 1 to 256 characters")
        booking_id = f"bk-{int(start_at * 1000)}-{uuid.uuid4().hex[:12]}"
        booking = Booking(booking_id, start_at, count, str(kind), room, self._now)
        self._store.add(booking)
        return booking.view()

    def upcoming(self) -> dict[str, Any]:
        return {"bookings": [b.view() for b in self._store.between(self._now, self._now + MAX_AHEAD_SECONDS)]}

    def cancel(self, booking_id: str) -> dict[str, Any]:
        if len(booking_id) > 64 or not self._store.cancel(booking_id):
            raise NotFound(f"no booking {booking_id!r} in this pool")
        return {"booking_id": booking_id, "status": "cancelled"}


def booked_between(store: BookingStore) -> Any:
    """The evaluator's `booked(start, end)`: recorders booked to start in that window."""
    return lambda start, end: sum(b.count for b in store.between(start, end))


def _time(value: Any) -> float:
    expects = "an ISO-8601 time with a zone, e.g. 2026-12-01T09:00:00Z"
    if not isinstance(value, str) or len(value) > 40:
        raise BadRequest(f"start_at must be {expects}")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadRequest(f"start_at {value!r} is not {expects}") from None
    if parsed.tzinfo is None:
        raise BadRequest(f"start_at {value!r} has no zone; expected {expects}")
    return parsed.timestamp()


BOOKING_WINDOW_SECONDS = 1800  # a request counts as arriving for a booking of its room from 30 min before to after


def booked_room(store: BookingStore) -> Any:
    """The assignment's `is_booked(room, at)`: a booking for this room starts within the window around `at`."""
    return lambda room, at: any(
        b.room == room for b in store.between(at - BOOKING_WINDOW_SECONDS, at + BOOKING_WINDOW_SECONDS)
    )
