"""The scaling policy: a pure function from a pool snapshot and demand to a decision.

No AWS here. The evaluator gathers the inputs and applies the decision; the
simulator calls the same function. Every knob is in `PolicySettings`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

from chalicelib.schedule import ScheduleOverride, min_idle_at


@dataclass(frozen=True)
class PolicySettings:
    # Idle recorders kept at all times, whatever the forecast says: the first request of
    # a quiet period is served at once. 1 costs one instance around the clock.
    min_idle: int = 1
    # Probability that the idle buffer covers every arrival during the provisioning lead
    # time (Poisson). 0.995 is what "served immediately" targets; lower is cheaper.
    service_level: float = 0.995
    # A buffer recorder beyond the floor (`min_idle`, schedule) is kept only while it is
    # expected to serve at least this many requests an hour that would otherwise wait: the
    # k-th idle recorder serves the arrivals that find k-1 others already taken within one
    # lead time, rate x P(N = k-1). It costs an instance-hour per hour whatever the rate, so
    # in a busy hour it spares many waits and is kept, while at a few requests an hour a
    # second idle recorder spares one wait every two or three hours. 1 pays at most about an
    # instance-hour per spared wait of a warm start; 0 keeps whatever the service level asks.
    min_spared_per_hour: float = 1.0
    # Certainty with which the warm pool covers the warm starts asked for during one refill
    # (a cold launch). A little lower than the buffer's: every parked instance is a paid boot,
    # and one discarded when the pool shrinks is a boot wasted. Not much lower: a short pool
    # turns a replacement into a cold launch, and a burst then waits minutes (at 0.95 one
    # request of the 1,000-recording day trace waited 171 s; BENCHMARKS.md).
    warm_pool_service_level: float = 0.99
    # An idle recorder is drained only after being idle this long while the pool has
    # surplus. Holding it costs its price per second; replacing it later costs a launch
    # (about 240 s of billed boot, or a warm start plus refilling the pool), so holding
    # for about that long is the cheaper bet either way (the ski-rental break-even).
    scale_in_hold_seconds: float = 300.0
    # At most this many recorders are drained per evaluation, so a forecast dip never
    # empties the pool at once.
    max_scale_in_step: int = 2
    # Lead times used until enough launches have been observed (see demand tracking).
    default_cold_lead_seconds: float = 240.0
    default_warm_lead_seconds: float = 45.0
    # Warm pool: "auto" sizes it from the forecast, "off" keeps none, or a fixed number.
    warm_pool: str = "auto"
    # Extra time on top of the lead time over which booked and historical demand is
    # looked ahead, so capacity is idle when a booked meeting starts.
    lookahead_margin_seconds: float = 300.0
    # Decisions come once a minute: capacity asked for now is ready one lead time after
    # the next decision at worst, so the buffer covers the interval too.
    evaluation_interval_seconds: float = 60.0
    # True where the status service evaluates at once when a report moves a recorder to busy
    # and fewer idle recorders are left than the buffer target (EVALUATE_ON_BUSY, on by default
    # in a deployment; see status.EvaluateOnBusy): the arrival that takes an idle recorder then
    # asks for its replacement itself, so the buffer covers the lead time plus
    # `busy_reaction_seconds` instead of the lead time plus a whole evaluation interval. Leave
    # it False wherever that trigger is not wired.
    evaluate_on_busy: bool = False
    # The trigger itself takes seconds: the agent hears Jibri's webhook at once (or polls it
    # every 5 s), protects its instance and reports, and the run reads the pool; a request's
    # reservation takes its recorder a few seconds before Jibri reports BUSY. The rest is margin
    # for a rate estimate that trails a ramp (it averages the last 10 minutes): on the workday
    # trace 10 or 20 s let a burst on the morning ramp wait (3 of 400 requests instead of 2),
    # 30 s does not (BENCHMARKS.md).
    busy_reaction_seconds: float = 30.0
    schedule: tuple[ScheduleOverride, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class IdleRecorder:
    instance_id: str
    idle_since: float


@dataclass(frozen=True)
class PoolSnapshot:
    now: float
    desired: int
    minimum: int
    maximum: int
    idle: tuple[IdleRecorder, ...]
    busy: int  # busy and reserved: held by a recording or a ticket
    launching: int  # in the group, not yet ready: capacity already on its way
    leaving: int  # draining, terminating or unhealthy: in the group, serving nobody
    warm: int  # instances parked in the warm pool
    queued: int  # requests waiting for a recorder
    draining: int = 0  # already chosen for scale-in: each will take desired down by one


@dataclass(frozen=True)
class DemandStats:
    recent_rate_per_second: float  # arrivals per second lately
    peak_rate_per_second: float  # the busiest 10 minutes of the last hours: sizes the warm pool
    history_rate_per_second: float | None  # the same slot on previous days, when a pattern exists
    booked: int  # announced requests starting within the look-ahead window
    cold_lead_seconds: float
    warm_lead_seconds: float
    # More arrivals in the last half hour than in the half hour before (at least a few): demand
    # is climbing, so a recorder drained now would most likely be launched again within minutes.
    rising: bool = False


@dataclass(frozen=True)
class Decision:
    desired: int
    drain: tuple[str, ...]
    warm_pool_size: int
    buffer_target: int
    reason: str


def poisson_quantile(mean: float, level: float) -> int:
    """The smallest k with P(X <= k) >= level for X ~ Poisson(mean)."""
    if mean <= 0:
        return 0
    if mean > 100:
        # Summing terms from exp(-mean) underflows; at this size the normal approximation
        # (with continuity correction) is within one of the exact quantile.
        return math.ceil(mean + NormalDist().inv_cdf(level) * math.sqrt(mean) - 0.5)
    term = math.exp(-mean)
    k, total = 0, term
    while total < level and k < 10_000:
        k += 1
        term *= mean / k
        total += term
    return k


def poisson_pmf(mean: float, k: int) -> float:
    """P(X = k) for X ~ Poisson(mean), in logs so that large means do not overflow."""
    if k < 0:
        return 0.0
    if mean <= 0:
        return 1.0 if k == 0 else 0.0
    return math.exp(k * math.log(mean) - mean - math.lgamma(k + 1))


def reaction_seconds(settings: PolicySettings) -> float:
    """At worst, from an arrival taking an idle recorder to the decision that asks for its replacement."""
    if settings.evaluate_on_busy:
        return min(settings.busy_reaction_seconds, settings.evaluation_interval_seconds)
    return settings.evaluation_interval_seconds


def decide(snapshot: PoolSnapshot, demand: DemandStats, settings: PolicySettings) -> Decision:
    rate = demand.recent_rate_per_second
    why: list[str] = []
    if demand.history_rate_per_second is not None and demand.history_rate_per_second > rate:
        rate = demand.history_rate_per_second
        why.append("history of this time slot")
    # Launches come from the warm pool only while it lasts: a pool smaller than what the
    # buffer must absorb leaves the rest to cold launches.
    reaction = reaction_seconds(settings)
    warm_need = poisson_quantile(rate * (demand.warm_lead_seconds + reaction), settings.service_level)
    warm_pool_size = _warm_pool_size(max(rate, demand.peak_rate_per_second), demand, settings, warm_need)
    warm_enough = snapshot.warm > 0 and snapshot.warm >= warm_need
    launch = demand.warm_lead_seconds if warm_enough else demand.cold_lead_seconds
    lead = launch + reaction
    expected = rate * lead
    floor = max(settings.min_idle, min_idle_at(settings.schedule, snapshot.now))
    forecast = poisson_quantile(expected, settings.service_level)
    wanted = forecast
    while forecast > floor and _spared_per_hour(rate, expected, forecast) < settings.min_spared_per_hour:
        forecast -= 1
    buffer = max(floor, forecast) + demand.booked + snapshot.queued
    why.insert(
        0,
        f"buffer {buffer} = max(min_idle {floor}, forecast {forecast} for {expected:.2f} arrivals in {lead:.0f} s)"
        f" + booked {demand.booked} + queued {snapshot.queued}",
    )
    if forecast < wanted:
        spared = _spared_per_hour(rate, expected, forecast + 1)
        why.insert(
            1,
            f"idle recorder {forecast + 1} not kept: it would serve {spared:.2f} waiting requests an hour"
            f" (< min_spared_per_hour {settings.min_spared_per_hour:g})",
        )

    ready = len(snapshot.idle) + snapshot.launching
    desired = snapshot.desired
    drain: tuple[str, ...] = ()
    if ready < buffer:
        desired = max(desired, snapshot.busy + snapshot.leaving + buffer)
        why.append(f"scale out to {desired}: {ready} idle or launching < buffer {buffer}")
    elif ready > buffer:
        surplus = min(
            ready - buffer,
            len(snapshot.idle),
            settings.max_scale_in_step,
            max(0, snapshot.desired - snapshot.draining - snapshot.minimum),
        )
        # Holding pays only when an arrival is expected within the hold (the hold is about what a
        # replacement costs): with fewer, arrivals are memoryless, so a surplus recorder would most
        # likely idle past the hold anyway, and draining it after one evaluation interval (never in the
        # run that saw it come free) is the cheaper bet. While demand
        # climbs, a busy pool drains nothing: what is drained now would be launched again.
        busy_enough = rate * settings.scale_in_hold_seconds >= 1
        hold = (
            settings.scale_in_hold_seconds
            if busy_enough
            else min(settings.scale_in_hold_seconds, settings.evaluation_interval_seconds)
        )
        held = [r for r in snapshot.idle if snapshot.now - r.idle_since >= hold]
        held.sort(key=lambda r: (r.idle_since, r.instance_id))
        rising = demand.rising and busy_enough
        drain = () if rising else tuple(r.instance_id for r in held[:surplus])
        if drain:
            why.append(f"drain {len(drain)}: {ready} idle or launching > buffer {buffer}")
        elif rising:
            why.append(f"surplus of {ready - buffer} held: demand rising")
        else:
            why.append(f"surplus of {ready - buffer} held: none idle for {hold:.0f} s")
    else:
        why.append("at buffer")
    clamped = min(max(desired, snapshot.minimum), snapshot.maximum)
    if clamped != desired:
        why.append(f"clamped to [{snapshot.minimum}, {snapshot.maximum}]")
    return Decision(
        desired=clamped, drain=drain, warm_pool_size=warm_pool_size, buffer_target=buffer, reason="; ".join(why)
    )


def _spared_per_hour(rate: float, expected: float, k: int) -> float:
    """Requests an hour the k-th idle recorder serves that would otherwise wait: those arriving while k - 1
    others are taken within one lead time (`expected` arrivals in it)."""
    return rate * 3600 * poisson_pmf(expected, k - 1)


def _warm_pool_size(rate: float, demand: DemandStats, settings: PolicySettings, warm_need: int) -> int:
    if settings.warm_pool == "off":
        return 0
    if settings.warm_pool != "auto":
        return int(settings.warm_pool)
    # Enough stopped instances to cover what arrives while the pool refills (a cold launch), at
    # `warm_pool_service_level`, plus booked starts. Sized from the recent peak, so the pool is
    # not refilled after every lull: each refill is a paid cold launch.
    # Never fewer than the buffer needs parked to count on warm launches: a smaller pool would be paid for and
    # never counted on.
    covered = max(1, poisson_quantile(rate * demand.cold_lead_seconds, settings.warm_pool_service_level))
    return max(covered + demand.booked, warm_need)
