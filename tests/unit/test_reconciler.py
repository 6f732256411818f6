"""The reconciler's repairs, each on a small hand-made pool."""

from __future__ import annotations

from chalicelib.autoscaling import GroupInstance, GroupSize, GroupState
from chalicelib.memory_registry import MemoryRegistry
from chalicelib.reconciler import Reconciler, ReconcilerSettings
from chalicelib.registry import Recorder
from chalicelib.states import RecorderState

S = RecorderState
NOW = 1_795_500_000.0


class Group:
    group_name = "pool"

    def __init__(self) -> None:
        self.health: list[str] = []
        self.protection: list[tuple[tuple[str, ...], bool]] = []

    def set_instance_health(self, instance_id: str, healthy: bool) -> None:
        assert not healthy
        self.health.append(instance_id)

    def set_instance_protection(self, instance_ids: list[str], protected: bool) -> None:
        self.protection.append((tuple(instance_ids), protected))


def setup(*recorders: Recorder, protected: tuple[str, ...] = (), lifecycle: str = "InService"):  # type: ignore[no-untyped-def]
    registry = MemoryRegistry("pool")
    for recorder in recorders:
        registry.create(recorder)
    group = Group()
    state = GroupState(
        GroupSize(len(recorders), 0, 50),
        tuple(GroupInstance(r.instance_id, lifecycle, protected=r.instance_id in protected) for r in recorders),
    )
    alerts: list[str] = []
    reconciler = Reconciler(
        registry,
        group,
        ReconcilerSettings(),  # type: ignore[arg-type]
        on_alert=lambda recorder, message: alerts.append(message),
    )
    live = {r.instance_id: registry.get(r.instance_id) for r in recorders}
    return reconciler, registry, group, state, live, alerts


def recorder(
    instance_id: str,
    state: RecorderState,
    *,
    seen: float = 10.0,
    since: float = 10.0,
    busy: str = "IDLE",
    pending: int = 0,
) -> Recorder:
    return Recorder(
        "pool",
        instance_id,
        state,
        NOW - 3600,
        NOW - since,
        NOW - since,
        last_heartbeat_at=NOW - seen,
        busy_status=busy,
        health="HEALTHY",
        pending_uploads=pending,
    )


def test_a_silent_idle_recorder_is_replaced_once() -> None:
    reconciler, registry, group, state, live, _ = setup(recorder("i-1", S.IDLE, seen=91))
    reconciler.run(state, live, NOW)
    assert group.health == ["i-1"] and registry.get("i-1").state is S.UNHEALTHY  # type: ignore[union-attr]
    reconciler.run(state, {"i-1": registry.get("i-1")}, NOW + 60)  # type: ignore[dict-item]
    assert group.health == ["i-1"]


def test_a_silent_busy_or_uploading_recorder_is_given_time_before_it_counts_as_lost() -> None:
    busy = recorder("i-1", S.BUSY, seen=600, busy="BUSY")
    uploading = recorder("i-2", S.IDLE, seen=600, pending=1)
    reconciler, _, group, state, live, _ = setup(busy, uploading, protected=("i-1", "i-2"))
    reconciler.run(state, live, NOW)
    assert group.health == []
    reconciler.run(state, live, NOW + 301)
    assert sorted(group.health) == ["i-1", "i-2"]


def test_a_launch_that_never_reports_is_replaced() -> None:
    launching = Recorder("pool", "i-1", S.LAUNCHING, NOW - 901, NOW - 901, NOW - 901)
    reconciler, _, group, state, live, _ = setup(launching, lifecycle="Pending")
    reconciler.run(state, live, NOW)
    assert group.health == ["i-1"]


def test_a_recorder_that_reported_meanwhile_is_not_replaced() -> None:
    reconciler, registry, group, state, live, _ = setup(recorder("i-1", S.IDLE, seen=91))
    stale_copy = live["i-1"]
    fresh = registry.get("i-1")
    assert fresh is not None and stale_copy is not None
    registry.save(fresh, fresh.__class__(**{**fresh.__dict__, "last_heartbeat_at": NOW}))
    reconciler.run(state, live, NOW)
    assert group.health == []


def test_protection_drift_is_corrected_both_ways() -> None:
    busy_unprotected = recorder("i-1", S.BUSY, busy="BUSY")
    idle_long_protected = recorder("i-2", S.IDLE, since=601)
    idle_recent_protected = recorder("i-3", S.IDLE, since=30)  # maybe an agent that just went busy
    reconciler, _, group, state, live, _ = setup(
        busy_unprotected, idle_long_protected, idle_recent_protected, protected=("i-2", "i-3")
    )
    reconciler.run(state, live, NOW)
    assert group.protection == [(("i-1",), True), (("i-2",), False)]


def test_paused_scale_in_replaces_nothing_but_still_protects() -> None:
    reconciler, _, group, state, live, _ = setup(recorder("i-1", S.IDLE, seen=91), recorder("i-2", S.BUSY, busy="BUSY"))
    reconciler.run(state, live, NOW, replace=False)
    assert group.health == [] and group.protection == [(("i-2",), True)]


def test_a_very_long_recording_raises_an_alert() -> None:
    reconciler, _, _, state, live, alerts = setup(
        recorder("i-1", S.BUSY, busy="BUSY", since=6 * 3600 + 1), protected=("i-1",)
    )
    reconciler.run(state, live, NOW)
    assert alerts and "6.0 h" in alerts[0]


def test_expired_jibri_is_replaced_only_when_configured() -> None:
    expired = recorder("i-1", S.UNHEALTHY, busy="EXPIRED")
    reconciler, _, group, state, live, _ = setup(expired)
    reconciler.run(state, live, NOW)
    assert group.health == []
    reconciler.settings = ReconcilerSettings(replace_expired=True)
    reconciler.run(state, live, NOW)
    assert group.health == ["i-1"]
