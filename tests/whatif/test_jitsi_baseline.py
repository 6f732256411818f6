"""Jitsi's autoscaler, on traces small enough to check by hand.

The single recorder is idle at 0 and busy from 1 s on; its sidecar reports at 0, 30,
60, ... and the jobs run at 0, 30, 60, ... just after the reports.
"""

from __future__ import annotations

from whatif_helpers import trace, world

from sim.whatif.model import Model
from sim.whatif.policies.jitsi import JitsiConfig, JitsiController


def run(config: JitsiConfig, *rows: tuple[float, float], initial: int = 1) -> JitsiController:
    w = world(trace(*rows), Model(minimum=1, cold_launch_s=240))
    jitsi = JitsiController(config)
    w.run(jitsi, initial=initial)
    return jitsi


def test_one_period_below_the_threshold_is_enough_with_one_period() -> None:
    # Idle reports at 0..120, busy from 150. At 150 the newest period (90, 150] holds 1 and 0.
    jitsi = run(JitsiConfig(scale_up_periods=1), (121, 3600))
    assert jitsi.desired_changes[0] == (150, 2)


def test_it_waits_for_every_one_of_the_consecutive_periods() -> None:
    # With two periods the older one must be below too: at 150 and 180 it holds only idle
    # reports (available 1); at 210 it holds 120 and 150 (0.5).
    jitsi = run(JitsiConfig(scale_up_periods=2), (121, 3600))
    assert jitsi.desired_changes[0] == (210, 2)


def test_a_period_without_reports_counts_as_nothing_available() -> None:
    # As in its source: at 30 the older period is empty, so its sum is 0.
    jitsi = run(JitsiConfig(scale_up_periods=2), (1, 3600))
    assert jitsi.desired_changes[0] == (30, 2)


def test_the_grace_period_holds_the_next_change() -> None:
    jitsi = run(JitsiConfig(scale_up_periods=1, grace_period_s=480), (1, 3600), (2, 3600), (300, 3600))
    first, second = jitsi.desired_changes[:2]
    assert first == (30, 2)
    assert second[0] >= 30 + 480


def test_scale_down_shuts_down_an_idle_jibri_and_spares_the_busy_one() -> None:
    # Three recorders; the first is busy from 1 s. At 60 both periods are above 1 available
    # (2 and 3): desired 3 -> 2. The launcher marks an idle one; its sidecar sees the
    # command at its next poll (120), shuts Jibri down and ends the instance.
    w = world(trace((1, 3000)), Model(minimum=1))
    config = JitsiConfig(scale_down_threshold=1, scale_down_periods=2, scale_up_threshold=0)
    jitsi = JitsiController(config)
    w.run(jitsi, initial=3)
    (record,) = w.records
    assert jitsi.desired_changes == [(60, 2)]
    assert record.killed_at is None and record.ended_at == 3001
    ended = [(s.instance_id, s.end) for s in w.group.segments if s.end < 3001]
    assert len(ended) == 1 and ended[0][0] != record.instance_id and ended[0][1] == 120
    assert record.instance_id in w.group.in_group()


def test_a_missing_report_is_filled_from_the_older_period() -> None:
    jitsi = JitsiController()
    jitsi._metrics.extend([(10.0, "a", 1), (70.0, "b", 1), (130.0, "a", 0), (135.0, "b", 1)])
    # Periods from 180: (120, 180], (60, 120], (0, 60]. "a" has no report in (60, 120] but
    # reported on both sides: the older one (1 at 10) fills in. "b" began at 70: nothing to fill.
    assert jitsi.available_per_period(180, 3) == [1.0, 2.0, 1.0]
