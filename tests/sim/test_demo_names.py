"""The demo's fake Jibri names recordings as Jibri does, so the agent reads back when they started."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from agent.uploader import started_at_of
from sim.demo_world import recording_name

STARTED = 1_795_000_000.0  # 2026-11-17 08:26:40 UTC


@pytest.fixture(params=["UTC", "America/New_York", "Asia/Kolkata"])
def host_zone(request: pytest.FixtureRequest) -> Iterator[str]:
    before = os.environ.get("TZ")
    os.environ["TZ"] = request.param
    time.tzset()
    try:
        yield request.param
    finally:
        if before is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = before
        time.tzset()


def test_the_start_read_back_from_the_name_is_the_instant_it_started_whatever_the_host_zone(host_zone: str) -> None:
    name = recording_name("standup", STARTED)
    assert name.startswith("standup_") and name.endswith(".mp4")
    read = started_at_of([name])
    assert read is not None
    assert datetime.fromisoformat(read.replace("Z", "+00:00")) == datetime.fromtimestamp(STARTED, UTC)
