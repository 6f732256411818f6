"""The classic recipe, on traces small enough to check by hand."""

from __future__ import annotations

from whatif_helpers import trace, world

from sim.whatif.model import Model
from sim.whatif.policies.classic import ClassicConfig, ClassicController


def test_a_recording_that_started_after_the_last_protection_cron_can_be_terminated() -> None:
    # Two idle recorders at 0: the cron publishes free = 2 for the minute from 0.
    # 10 s: A takes the first; the 60 s cron protects it. 65 s: B takes the second, unprotected
    # until the next cron. 70 s: the alarm sees free = 2 > 1 for the minute from 0 and scales in;
    # the only unprotected instance is B's.
    w = world(trace((10, 3600), (65, 3600)), Model(minimum=1))
    classic = ClassicController(ClassicConfig(scale_in_above=1, scale_in_periods=1))
    w.run(classic, initial=2)
    a, b = w.records
    assert a.killed_at is None
    assert b.killed_at == 70
    assert classic.alarm_actions[0] == (70, "in")


def test_scale_out_adds_one_per_alarm_and_waits_for_the_launch_and_the_cooldown() -> None:
    # One recorder, busy from 10 s on: free = 0 from the minute at 60 on.
    w = world(trace((10, 7200)), Model(minimum=1, cold_launch_s=240))
    classic = ClassicController(ClassicConfig(scale_out_below=1, cooldown_s=300, scale_in_above=99))
    w.run(classic)
    outs = [at for at, kind in classic.alarm_actions if kind == "out"]
    # The minute from 60 closes at 120; evaluated 10 s later. The new instance is in service at
    # 130 + 240 = 370, and a new recorder is free from the 420 cron on: with one idle, no alarm.
    assert outs == [130]


def test_still_short_after_the_cooldown_it_scales_out_again() -> None:
    w = world(trace((10, 7200), (400, 7200)), Model(minimum=1, cold_launch_s=240))
    classic = ClassicController(ClassicConfig(scale_out_below=1, cooldown_s=300, scale_in_above=99))
    w.run(classic)
    outs = [at for at, kind in classic.alarm_actions if kind == "out"]
    # Launched at 130, in service at 370 and taken by the 400 request; cooldown until 670.
    assert outs == [130, 670]


def test_surplus_scales_in_once_per_cooldown_and_spares_the_protected() -> None:
    w = world(trace((0, 2000)), Model(minimum=1))
    config = ClassicConfig(scale_out_below=0, scale_in_above=0, scale_in_periods=1, cooldown_s=300)
    classic = ClassicController(config)
    w.run(classic, initial=3)
    assert [at for at, kind in classic.alarm_actions if kind == "in"] == [70, 370]
    assert w.records[0].killed_at is None  # busy since 0, protected by the 0 s cron
    assert len(w.group.in_group()) == 1
