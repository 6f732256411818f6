"""The evaluator: read the pool, decide with the policy, apply the decision.

Scale-out raises desired capacity. Scale-in never lowers desired capacity and
never lets the group choose: it moves chosen idle recorders to `draining`
(a conditional write; a lost race drains nothing), their agents take Jibri
out of service and report OFFLINE, and only then is each one terminated with
desired capacity decremented. One evaluation runs per pool at a time; a
trigger that arrives meanwhile is folded into a rerun.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace

from chalicelib.autoscaling import AutoScaling, GroupState
from chalicelib.clock import Clock
from chalicelib.control import ControlStore, DecisionRecord
from chalicelib.demand import DemandStore, demand_stats
from chalicelib.lifecycle import OFFLINE_CONFIRM_SECONDS, WARM_POOL, LifecycleService
from chalicelib.notifications import launch_backoff_seconds
from chalicelib.observability import logger
from chalicelib.policy import Decision, IdleRecorder, PolicySettings, PoolSnapshot, decide
from chalicelib.reconciler import Reconciler
from chalicelib.registry import Recorder, Registry, Written, transition
from chalicelib.states import HEARTBEAT_STATES, RecorderState

S = RecorderState
LEASE_SECONDS = 60.0
MAX_RERUNS = 3
TERMINATE_RETRY_SECONDS = 120.0
SCALE_IN = "scale-in"


@dataclass(frozen=True)
class PoolHealth:
    """What the operator's alarms watch, from the registry as this run read it."""

    stale: int  # recorders whose agent went silent (heartbeat older than the stale limit)
    min_disk_free_bytes: int | None  # the least free disk any live recorder reported
    pending_uploads: int  # recordings on instances' disks not yet confirmed in S3
    failed_uploads: int = 0  # of those, sessions the control plane refused: an operator must look


def pool_health(recorders: dict[str, Recorder], now: float, stale_after: float) -> PoolHealth:
    live = list(recorders.values())
    disks = [r.disk_free_bytes for r in live if r.disk_free_bytes is not None]
    return PoolHealth(
        stale=sum(1 for r in live if r.state in HEARTBEAT_STATES and r.is_stale(now, stale_after)),
        min_disk_free_bytes=min(disks) if disks else None,
        pending_uploads=sum(r.pending_uploads for r in live),
        failed_uploads=sum(r.failed_uploads for r in live),
    )


@dataclass(frozen=True)
class EvaluatorOptions:
    dry_run: bool = False
    stale_after: float = 90.0
    tombstone_seconds: int = 7 * 86_400
    decisions_kept_seconds: int = 7 * 86_400
    apply_warm_pool: bool = False  # the group's warm pool is sized only where one is configured
    offline_confirm_seconds: float = OFFLINE_CONFIRM_SECONDS


class Evaluator:
    def __init__(
        self,
        registry: Registry,
        autoscaling: AutoScaling,
        demand: DemandStore,
        control: ControlStore,
        clock: Clock,
        settings: PolicySettings,
        *,
        queued: Callable[[], int] = lambda: 0,
        booked: Callable[[float, float], int] = lambda start, end: 0,
        stale_after: float = 90.0,
        options: EvaluatorOptions | None = None,
        on_decision: Callable[[DecisionRecord], None] | None = None,
        on_health: Callable[[PoolHealth], None] | None = None,
        lifecycle: LifecycleService | None = None,
        reconciler: Reconciler | None = None,
        housekeeping: Callable[[], list[str]] | None = None,
    ) -> None:
        self._lifecycle = lifecycle
        self._housekeeping = housekeeping  # e.g. ending leases and serving the request queue
        self._reconciler = reconciler
        self._registry = registry
        self._autoscaling = autoscaling
        self._demand = demand
        self._control = control
        self._clock = clock
        self._settings = settings
        self._queued = queued
        self._booked = booked
        self._options = options or EvaluatorOptions(
            stale_after=stale_after, apply_warm_pool=settings.warm_pool != "off"
        )
        self._on_decision = on_decision or (lambda record: None)
        self._on_health = on_health or (lambda health: None)
        self._last_warm_pool: int | None = None

    def run(self, trigger: str = "schedule") -> Decision | None:
        """Evaluate once (plus folded reruns). None when another run held the lease: it reruns for us."""
        owner = uuid.uuid4().hex
        if not self._control.acquire_lease(owner, self._clock.now(), LEASE_SECONDS):
            return None
        decision: Decision | None = None
        try:
            for attempt in range(MAX_RERUNS + 1):
                decision = self._evaluate(trigger if attempt == 0 else "rerun")
                if self._control.release_lease(owner) or attempt == MAX_RERUNS:
                    break
        except BaseException:
            self._control.release_lease(owner)
            raise
        return decision

    def _evaluate(self, trigger: str) -> Decision:
        act = not self._options.dry_run
        if self._lifecycle is not None:  # even in dry run: holding a busy recorder's termination is not scaling
            for line in self._lifecycle.tick():
                logger.info("lifecycle", extra={"action": line})
        if act and self._housekeeping is not None:
            for line in self._housekeeping():
                logger.info("requests", extra={"action": line})
        now = self._clock.now()
        group = self._autoscaling.describe()
        paused = self._control.paused()
        recorders = self._reconcile(group, now, act)
        if act and self._reconciler is not None:
            for line in self._reconciler.run(group, recorders, now, replace=not paused):
                logger.info("reconciled", extra={"action": line})
        terminated = self._terminate_drained(group, recorders, now) if act and not paused else ()
        snapshot = self._snapshot(group, recorders, now, terminated)
        stats = demand_stats(self._demand, now, self._settings, self._booked)
        decision = decide(snapshot, stats, self._settings)
        drained: tuple[str, ...] = ()
        held_back = ""
        if decision.desired > group.size.desired:
            errors = self._control.launch_errors()
            until = errors[-1] + launch_backoff_seconds(len(errors)) if errors else 0.0
            if now < until:
                held_back = f"; scale-out held back {until - now:.0f} s more after {len(errors)} launch error(s)"
        withdrawn: tuple[str, ...] = ()
        if act and decision.desired > group.size.desired:
            # A recorder being drained whose Jibri is still in service is capacity at once; a launch is minutes.
            withdrawn = self._withdraw_drains(recorders, decision.desired - group.size.desired, now)
            if withdrawn:
                decision = replace(
                    decision,
                    desired=max(group.size.desired, decision.desired - len(withdrawn)),
                    reason=decision.reason + f"; withdrew the drain of {', '.join(withdrawn)}",
                )
        if act:
            if decision.desired > group.size.desired and not held_back:
                self._autoscaling.set_desired_capacity(decision.desired)
                # Register the launches now where the group shows them already, so their
                # lead time is measured from here rather than from the next run.
                self._reconcile(self._autoscaling.describe(), now, act)
            if not paused:
                drained = self._drain(decision.drain, now)
            if self._options.apply_warm_pool and decision.warm_pool_size != self._last_warm_pool:
                try:
                    self._autoscaling.put_warm_pool(decision.warm_pool_size)
                    self._last_warm_pool = decision.warm_pool_size
                except Exception:
                    # The decision is still recorded; the next run sizes the pool again.
                    logger.exception("sizing the warm pool failed", extra={"size": decision.warm_pool_size})
                    held_back += "; warm pool sizing failed, retried next run"
        reason = (
            decision.reason + held_back + ("; scale-in paused" if paused else "") + ("; dry run" if not act else "")
        )
        record = DecisionRecord(
            at=now,
            trigger=trigger,
            desired=decision.desired,
            previous_desired=group.size.desired,
            drained=drained,
            terminated=terminated,
            warm_pool_size=decision.warm_pool_size,
            buffer_target=decision.buffer_target,
            idle=len(snapshot.idle),
            busy=snapshot.busy,
            queued=snapshot.queued,
            reason=reason,
            acted=act and not paused,
        )
        self._control.append_decision(record, self._options.decisions_kept_seconds)
        self._on_decision(record)
        self._on_health(pool_health(recorders, now, self._options.stale_after))
        return decision

    def _reconcile(self, group: GroupState, now: float, act: bool) -> dict[str, Recorder]:
        """The live recorders, after registering new group instances and burying vanished ones."""
        # Listed: still the group's, even while a terminate hook holds it (Terminating:Wait): not buried.
        listed = {i.instance_id for i in group.instances if not _finished(i.lifecycle_state)}
        present = {i.instance_id: i for i in group.instances if not _gone(i.lifecycle_state)}
        live = {r.instance_id: r for r in self._registry.list_all() if r.state is not S.TERMINATED}
        if not act:
            return live
        for instance_id, instance in present.items():
            if instance_id in live:
                continue
            created = self._registry.create(
                Recorder(
                    pool=self._registry.pool,
                    instance_id=instance_id,
                    state=S.LAUNCHING,
                    created_at=now,
                    updated_at=now,
                    state_changed_at=now,
                    launch_kind="warm" if instance.from_warm_pool else "cold",
                )
            )
            if isinstance(created, Written):
                live[instance_id] = created.recorder
        for instance_id, recorder in list(live.items()):
            # A recorder written since the group was described may be newer than that description;
            # warm-pool instances are not among the group's instances.
            if instance_id in listed or recorder.state is S.WARM or recorder.updated_at >= now or _to_pool(recorder):
                continue
            expires = int(now) + self._options.tombstone_seconds
            if isinstance(
                self._registry.save(recorder, transition(recorder, S.TERMINATED, now, expires_at=expires)), Written
            ):
                del live[instance_id]
        return live

    def _terminate_drained(self, group: GroupState, recorders: dict[str, Recorder], now: float) -> tuple[str, ...]:
        in_service = {i.instance_id for i in group.instances if i.lifecycle_state == "InService"}
        done = []
        for recorder in list(recorders.values()):
            gone = recorder.gone_offline(now, self._options.offline_confirm_seconds) and recorder.pending_uploads == 0
            if not gone:
                continue
            if recorder.state is S.DRAINING:
                # The write fails if any report came in since we read it: then nothing is terminated.
                result = self._registry.save(recorder, transition(recorder, S.TERMINATING, now))
                if not isinstance(result, Written):
                    continue
                recorders[recorder.instance_id] = result.recorder
            elif not (
                recorder.state is S.TERMINATING
                and recorder.hook is None
                and recorder.instance_id in in_service
                and now - recorder.state_changed_at > TERMINATE_RETRY_SECONDS
            ):
                continue  # only a termination whose call failed earlier is tried again
            try:
                self._autoscaling.terminate(recorder.instance_id)
            except Exception:
                # e.g. it would take desired below the minimum: the recorder stays terminating and is
                # tried again on a later run.
                logger.exception("termination failed", extra={"instance_id": recorder.instance_id})
                continue
            done.append(recorder.instance_id)
        return tuple(done)

    def _withdraw_drains(self, recorders: dict[str, Recorder], wanted: int, now: float) -> tuple[str, ...]:
        """Take back up to `wanted` draining recorders whose agent has not yet been told to drain."""
        withdrawn: list[str] = []
        for recorder in sorted(recorders.values(), key=lambda r: r.state_changed_at, reverse=True):
            if len(withdrawn) == wanted:
                break
            ours = recorder.state is S.DRAINING and recorder.drain_reason == SCALE_IN  # not a Spot rebalance
            if not ours or recorder.busy_status != "IDLE" or recorder.health != "HEALTHY":
                continue
            # A report since the drain began was answered `drain`: its Jibri may be shutting down already.
            if (recorder.last_heartbeat_at or 0.0) > recorder.state_changed_at:
                continue
            # Conditional on the version read: a report that arrived meanwhile (say OFFLINE) wins.
            result = self._registry.save(recorder, transition(recorder, S.IDLE, now))
            if isinstance(result, Written):
                recorders[recorder.instance_id] = result.recorder
                withdrawn.append(recorder.instance_id)
        return tuple(withdrawn)

    def _drain(self, chosen: tuple[str, ...], now: float) -> tuple[str, ...]:
        drained = []
        for instance_id in chosen:
            current = self._registry.get(instance_id)
            if current is None or current.state is not S.IDLE:
                continue
            draining = transition(current, S.DRAINING, now, drain_reason=SCALE_IN)
            if isinstance(self._registry.save(current, draining), Written):
                drained.append(instance_id)
        return tuple(drained)

    def _snapshot(
        self, group: GroupState, recorders: dict[str, Recorder], now: float, terminated: tuple[str, ...] = ()
    ) -> PoolSnapshot:
        idle: list[IdleRecorder] = []
        busy = launching = leaving = draining = 0
        stale_after = self._options.stale_after
        for recorder in recorders.values():
            state = recorder.effective_state(now, stale_after)
            if state is S.IDLE:
                idle.append(IdleRecorder(recorder.instance_id, recorder.state_changed_at))
            elif state in (S.BUSY, S.RESERVED):
                busy += 1
            elif state is S.LAUNCHING and not _to_pool(recorder):
                launching += 1
            elif state in (S.DRAINING, S.UNHEALTHY):
                # Terminating recorders are not counted: their termination already took them out of
                # desired capacity (or the group replaces them itself).
                leaving += 1
                draining += state is S.DRAINING
        desired = group.size.desired - len(terminated)  # each termination this run decremented it
        # Desired capacity not yet backed by any instance is capacity on its way too.
        unstarted = max(0, desired - sum(1 for i in group.instances if not _gone(i.lifecycle_state)))
        return PoolSnapshot(
            now=now,
            desired=desired,
            minimum=group.size.minimum,
            maximum=group.size.maximum,
            idle=tuple(idle),
            busy=busy,
            launching=launching + unstarted,
            leaving=leaving,
            warm=group.warm_pool_size,
            queued=self._queued(),
            draining=draining,
        )


def _to_pool(recorder: Recorder) -> bool:
    """On its way into the warm pool: not capacity, and not among the group's instances."""
    heading = recorder.hook is not None and recorder.hook.destination == WARM_POOL
    return heading or (recorder.target_lifecycle_state or "").startswith("Warmed:")


def _gone(lifecycle_state: str) -> bool:
    """No longer capacity: on its way out of the group."""
    return lifecycle_state.startswith(("Terminat", "Detach"))


def _finished(lifecycle_state: str) -> bool:
    """Past any hook: the instance will not come back, its recorder can be buried."""
    return lifecycle_state.startswith(("Terminating:Proceed", "Terminated", "Detach"))
