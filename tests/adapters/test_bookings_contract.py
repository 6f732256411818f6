"""Bookings: the store on both adapters, the service's checks, and what the policy sees."""

from __future__ import annotations

from typing import Any

import pytest

from chalicelib.bookings import (
    BookingService,
    BookingStore,
    DynamoDBBookingStore,
    MemoryBookingStore,
    booked_between,
    booked_room,
)
from chalicelib.bootstrap import ensure_table
from chalicelib.errors import BadRequest, NotFound

NOW = 1_795_500_000.0  # 2026-11-24T...


@pytest.fixture(params=["memory", "dynamodb"])
def store(request: pytest.FixtureRequest, unique: str) -> BookingStore:
    if request.param == "memory":
        return MemoryBookingStore()
    session = request.getfixturevalue("aws")
    ensure_table(session.client("dynamodb"), f"bookings-{unique}")
    return DynamoDBBookingStore(session.resource("dynamodb").Table(f"bookings-{unique}"), "pool-a")


def at(offset_s: float) -> str:
    from chalicelib.clock import iso

    return iso(NOW + offset_s)


def test_bookings_are_listed_in_time_order_and_counted_for_the_policy(store: BookingStore) -> None:
    service = BookingService(store, NOW, group_max=lambda: 20)
    late = service.create({"start_at": at(7200), "count": 3, "kind": "recording", "room": "conference-2"})
    early = service.create({"start_at": at(600), "count": 5, "kind": "streaming"})
    assert [b["booking_id"] for b in service.upcoming()["bookings"]] == [early["booking_id"], late["booking_id"]]
    is_booked = booked_room(store)
    assert is_booked("conference-2", NOW + 7200 - 1200) and not is_booked("conference-2", NOW)
    assert not is_booked("other-room", NOW + 7200)
    booked = booked_between(store)
    assert booked(NOW, NOW + 540) == 0 and booked(NOW, NOW + 601) == 5 and booked(NOW, NOW + 7201) == 8
    assert service.cancel(early["booking_id"])["status"] == "cancelled"
    assert booked(NOW, NOW + 7201) == 3
    with pytest.raises(NotFound):
        service.cancel(early["booking_id"])
    with pytest.raises(NotFound):
        service.cancel("bk-nonsense")


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"start_at": at(-60), "count": 1, "kind": "recording"}, "in the past"),
        ({"start_at": at(100 * 86_400), "count": 1, "kind": "recording"}, "90 days"),
        ({"start_at": "tomorrow", "count": 1, "kind": "recording"}, "start_at"),
        ({"start_at": "2026-12-01T09:00:00", "count": 1, "kind": "recording"}, "no zone"),
        ({"start_at": at(600), "count": 0, "kind": "recording"}, "count"),
        ({"start_at": at(600), "count": True, "kind": "recording"}, "count"),
        ({"start_at": at(600), "count": 21, "kind": "recording"}, "maximum capacity 20"),
        ({"start_at": at(600), "count": 1, "kind": "party"}, "kind"),
        ({"start_at": at(600), "count": 1, "kind": "recording", "room": ""}, "room"),
        ({"start_at": at(600), "count": 1, "kind": "recording", "seats": 4}, "unknown field"),
        ([], "JSON object"),
    ],
)
def test_bad_bookings_are_refused_and_store_nothing(body: Any, named: str) -> None:
    store = MemoryBookingStore()
    with pytest.raises(BadRequest, match=named):
        BookingService(store, NOW, group_max=lambda: 20).create(body)
    assert store.between(NOW - 86_400, NOW + 200 * 86_400) == []
