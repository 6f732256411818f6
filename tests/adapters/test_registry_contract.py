"""One contract, two adapters: in-memory and DynamoDB (moto in server mode)."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable

import pytest

from chalicelib.bootstrap import ensure_table
from chalicelib.dynamodb_registry import DynamoDBRegistry
from chalicelib.memory_registry import MemoryRegistry
from chalicelib.registry import (
    BadPageToken,
    InvalidTransition,
    LifecycleHook,
    LostRace,
    Recorder,
    Registry,
    Written,
    transition,
)
from chalicelib.states import RecorderState

S = RecorderState
NOW = 1_790_000_000.0


@pytest.fixture(params=["memory", "dynamodb"])
def make_registry(request: pytest.FixtureRequest, unique: str) -> Callable[[str], Registry]:
    if request.param == "memory":
        return MemoryRegistry
    session = request.getfixturevalue("aws")
    table_name = f"registry-{unique}"
    ensure_table(session.client("dynamodb"), table_name)
    table = session.resource("dynamodb").Table(table_name)
    return lambda pool: DynamoDBRegistry(table, pool)


@pytest.fixture
def registry(make_registry: Callable[[str], Registry]) -> Registry:
    return make_registry("pool-a")


def recorder(instance_id: str, state: RecorderState = S.IDLE, pool: str = "pool-a", **extra: object) -> Recorder:
    return Recorder(
        pool=pool,
        instance_id=instance_id,
        state=state,
        created_at=NOW,
        updated_at=NOW,
        state_changed_at=NOW,
        last_heartbeat_at=NOW,
        **extra,  # type: ignore[arg-type]
    )


def written(result: object) -> Recorder:
    assert isinstance(result, Written), result
    return result.recorder


def test_create_then_get_round_trips_every_field(registry: Registry) -> None:
    original = recorder(
        "i-0000000000000001",
        busy_status="IDLE",
        health="HEALTHY",
        pending_uploads=2,
        last_report_sent_at=NOW - 0.25,
        launch_kind="warm",
        hook=LifecycleHook("jibri-terminate", "6f1c", "terminate", NOW - 9, "EC2", "AutoScalingGroup", NOW - 2, True),
        last_event_at=NOW - 9,
        stop_recording=True,
        target_lifecycle_state="Warmed:Stopped",
        replace_requested_at=NOW - 1,
        reserved_for="req-1",
        reserved_until=NOW + 90,
        private_ip="10.0.1.23",
        offline_since=NOW - 40,
        jibri={"status": {"busyStatus": "IDLE", "health": {"healthStatus": "HEALTHY", "details": {}}}, "n": 1.5},
    )
    stored = written(registry.create(original))
    assert stored.version == 1
    assert registry.get("i-0000000000000001") == dataclasses.replace(original, version=1)
    assert registry.get("i-0000000000000001").jibri == original.jibri  # type: ignore[union-attr]


def test_create_twice_loses_the_race_and_keeps_the_first(registry: Registry) -> None:
    first = written(registry.create(recorder("i-1", S.BUSY)))
    again = registry.create(recorder("i-1", S.IDLE))
    assert isinstance(again, LostRace)
    assert again.current == first
    assert registry.get("i-1").state is S.BUSY  # type: ignore[union-attr]


def test_get_unknown_is_none(registry: Registry) -> None:
    assert registry.get("i-missing") is None


def test_save_bumps_version_and_moves_between_state_lists(registry: Registry) -> None:
    idle = written(registry.create(recorder("i-1")))
    busy = written(registry.save(idle, transition(idle, S.BUSY, NOW + 5, busy_status="BUSY")))
    assert (busy.version, busy.state, busy.state_changed_at) == (2, S.BUSY, NOW + 5)
    assert [r.instance_id for r in registry.list_by_state(S.BUSY)] == ["i-1"]
    assert registry.list_by_state(S.IDLE) == []


def test_save_with_a_stale_version_is_a_lost_race_and_changes_nothing(registry: Registry) -> None:
    idle = written(registry.create(recorder("i-1")))
    busy = written(registry.save(idle, transition(idle, S.BUSY, NOW + 1)))
    late = registry.save(idle, transition(idle, S.DRAINING, NOW + 2))
    assert isinstance(late, LostRace)
    assert late.current == busy
    assert registry.get("i-1") == busy


def test_save_on_a_missing_recorder_is_a_lost_race(registry: Registry) -> None:
    ghost = recorder("i-ghost")
    result = registry.save(ghost, transition(ghost, S.BUSY, NOW))
    assert isinstance(result, LostRace) and result.current is None
    assert registry.get("i-ghost") is None


def test_a_transition_the_table_forbids_is_refused_before_any_write(registry: Registry) -> None:
    busy = written(registry.create(recorder("i-1", S.BUSY)))
    with pytest.raises(InvalidTransition):
        transition(busy, S.DRAINING, NOW)
    with pytest.raises(InvalidTransition):
        registry.save(busy, dataclasses.replace(busy, state=S.DRAINING))
    gone = written(registry.create(recorder("i-2", S.TERMINATED)))
    with pytest.raises(InvalidTransition):
        registry.save(gone, dataclasses.replace(gone, state=S.IDLE))
    assert registry.get("i-1") == busy


def test_many_threads_race_one_transition_and_exactly_one_wins(registry: Registry) -> None:
    idle = written(registry.create(recorder("i-race")))
    results: list[object] = []
    barrier = threading.Barrier(12)
    lock = threading.Lock()

    def contend(n: int) -> None:
        target = S.DRAINING if n % 2 else S.RESERVED
        barrier.wait()
        result = registry.save(idle, transition(idle, target, NOW + n, pending_uploads=n))
        with lock:
            results.append(result)

    threads = [threading.Thread(target=contend, args=(n,)) for n in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wins = [r for r in results if isinstance(r, Written)]
    assert len(wins) == 1 and len(results) == 12
    stored = registry.get("i-race")
    assert stored == wins[0].recorder and stored.version == 2  # type: ignore[union-attr]


def test_pools_do_not_see_each_other(make_registry: Callable[[str], Registry]) -> None:
    a, b = make_registry("pool-a"), make_registry("pool-b")
    written(a.create(recorder("i-1", pool="pool-a")))
    assert b.get("i-1") is None
    assert b.list_by_state(S.IDLE) == [] and list(b.list_all()) == []
    with pytest.raises(ValueError):
        b.create(recorder("i-2", pool="pool-a"))


def test_list_page_walks_every_live_recorder_once_and_skips_tombstones(registry: Registry) -> None:
    ids = [f"i-{n:04d}" for n in range(23)]
    for n, instance_id in enumerate(ids):
        written(registry.create(recorder(instance_id, S.TERMINATED if n % 5 == 0 else S.IDLE)))
    live = [i for n, i in enumerate(ids) if n % 5]
    seen: list[str] = []
    token: str | None = None
    for _ in range(30):
        page, token = registry.list_page(4, token)
        assert len(page) <= 4
        seen.extend(r.instance_id for r in page)
        if token is None:
            break
    assert seen == live
    assert len(list(registry.list_all())) == 23


def test_a_forged_page_token_is_refused(registry: Registry) -> None:
    with pytest.raises(BadPageToken):
        registry.list_page(5, "%%%not-a-token")


def test_any_json_from_jibri_round_trips(registry: Registry) -> None:
    deep: dict[str, object] = {"leaf": [1, 2.5, None, True, ""]}
    for level in range(40):
        deep = {f"l{level}": deep}
    odd = {"": "empty key", "big": 10**30, "tiny": 1e-300, "unicode": "ジブリ", "deep": deep}
    written(registry.create(recorder("i-json", jibri=odd)))
    assert registry.get("i-json").jibri == odd  # type: ignore[union-attr]
