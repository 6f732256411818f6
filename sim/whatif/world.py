"""The world around the group: Jibri on each instance, Jicofo, the requests and their queue.

A request takes the first idle Jibri in the brewery, in the order they joined it (as
Jicofo's JibriDetector.selectJibri does). When none is idle it waits in a FIFO queue
and gives up after the patience limit, or when its meeting ends, whichever is first.
A recording ends when its meeting ends (`request_at + duration`), so a late start
records less. An instance terminated under a recording kills it; one that waits in
`Terminating:Wait` still records, and kills its recording only once it terminates.

An instance's agent runs once it has booted, in service or still waiting on its launch
action (`Pending:Wait`). Its Jibri then joins the brewery, unless the instance is one of
`never_healthy`: there Jibri never comes up, and the controller hears `on_stuck`.

A policy plugs in as a `Controller`: the world tells it what Jibri and the requests
do; it acts on the group and may ask the world to drain a Jibri (graceful shutdown:
it leaves the brewery at once, finishes a recording it has, then is gone).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import partial

from chalicelib.lifecycle import LifecycleEvent
from sim.whatif.engine import Engine, Event, Phase
from sim.whatif.group import GroupListener, SimulatedGroup
from sim.whatif.model import Model
from sim.whatif.trace import TraceRequest

SAMPLE_SECONDS = 60.0


@dataclass
class RequestRecord:
    trace: TraceRequest
    started_at: float | None = None
    ended_at: float | None = None
    gave_up_at: float | None = None
    killed_at: float | None = None
    instance_id: str | None = None
    give_up: Event | None = field(default=None, repr=False)

    @property
    def wait(self) -> float:
        """Seconds from the request to its recording's start, or to giving up."""
        until = self.started_at if self.started_at is not None else self.gave_up_at
        return 0.0 if until is None else until - self.trace.request_at


@dataclass
class Jibri:
    instance_id: str
    joined_at: float
    recording: RequestRecord | None = None
    in_brewery: bool = True  # False once told to shut down gracefully
    gone: bool = False  # shut down: the instance runs, Jibri does not

    @property
    def idle(self) -> bool:
        return self.recording is None and self.in_brewery and not self.gone


@dataclass(frozen=True)
class Sample:
    at: float
    recording: int
    queued: int
    capacity: int  # instances in the group, booting or in service
    idle: int  # idle Jibris a request could take now
    warm_pool: int


class Controller:
    """What a policy hears from the world. Every hook does nothing unless overridden."""

    def start(self, world: World) -> None:
        """Schedule the policy's own loops; called once at time zero, before the initial instances come up."""

    def on_arrival(self, record: RequestRecord) -> None:
        """A request came in (before the world tries to serve it)."""

    def on_unserved(self, record: RequestRecord) -> None:
        """The request found no idle Jibri and joined the queue."""

    def on_ready(self, instance_id: str) -> None:
        """Jibri on a new instance is up, idle and in the brewery."""

    def on_busy(self, instance_id: str) -> None:
        """Jicofo handed this Jibri a recording."""

    def on_idle(self, instance_id: str) -> None:
        """This Jibri's recording ended and it is back in the brewery."""

    def on_gone(self, instance_id: str) -> None:
        """This Jibri shut down after a drain; the instance still runs."""

    def on_terminated(self, instance_id: str) -> None:
        """The group terminated this instance."""

    def on_lifecycle_action(self, event: LifecycleEvent) -> None:
        """Auto Scaling began a lifecycle action (only where the group has lifecycle hooks)."""

    def on_stuck(self, instance_id: str) -> None:
        """The instance's agent runs, but its Jibri never comes up: it never joins the brewery."""

    def on_prepared_for_pool(self, instance_id: str) -> None:
        """A new instance on its way into the warm pool booted; its agent took Jibri out of service."""


class World(GroupListener):
    def __init__(
        self,
        engine: Engine,
        group: SimulatedGroup,
        model: Model,
        trace: list[TraceRequest],
        never_healthy: Iterable[str] = (),
    ) -> None:
        self.engine = engine
        self.group = group
        self.model = model
        self.trace = trace
        self.records = [RequestRecord(r) for r in trace]
        self.jibris: dict[str, Jibri] = {}  # in the order they joined the brewery
        self.queue: deque[RequestRecord] = deque()
        self.samples: list[Sample] = []
        self.controller = Controller()
        self.recording_count = 0
        self._end_event: dict[str, Event] = {}
        self.never_healthy = set(never_healthy)  # instances whose Jibri never comes up
        self._agents_up: set[str] = set()
        group.listener = self

    @property
    def horizon(self) -> float:
        """The run ends when the last meeting does."""
        return max((r.ends_at for r in self.trace), default=0.0)

    def run(self, controller: Controller, initial: int | None = None) -> None:
        """Replay the trace; the group starts with `initial` instances in service (default: its minimum)."""
        self.controller = controller
        controller.start(self)
        self.group.start(self.model.minimum if initial is None else initial)
        for record in self.records:
            self.engine.at(record.trace.request_at, partial(self._arrive, record), Phase.REQUEST)
        self.engine.every(SAMPLE_SECONDS, self._sample, first=0.0)
        self.engine.run(self.horizon)
        self._sample()
        self.group.close()

    # --- asked by controllers --------------------------------------------------------------

    def drain(self, instance_id: str) -> None:
        """Graceful shutdown: out of the brewery now, gone once its recording (if any) ends."""
        jibri = self.jibris.get(instance_id)
        if jibri is None or not jibri.in_brewery:
            return
        jibri.in_brewery = False
        if jibri.recording is None:
            jibri.gone = True
            self.controller.on_gone(instance_id)

    def restart(self, instance_id: str) -> None:
        """A withdrawn drain: Jibri comes back into the brewery."""
        jibri = self.jibris.get(instance_id)
        if jibri is None or jibri.in_brewery:
            return
        jibri.in_brewery = True
        if jibri.gone:
            jibri.gone = False
            self._serve_queue()

    def idle_jibris(self) -> list[str]:
        return [j.instance_id for j in self.jibris.values() if j.idle]

    def terminate_instance_of(self, record: RequestRecord, decrement: bool = False) -> str:
        """An operator terminates the instance that records `record` (TerminateInstanceInAutoScalingGroup)."""
        if record.instance_id is None or record.started_at is None or record.ended_at is not None:
            raise ValueError(f"request {record.trace.index} is not recording")
        self.group.terminate(record.instance_id, decrement=decrement)
        return record.instance_id

    # --- group events -----------------------------------------------------------------------

    def on_in_service(self, instance_id: str) -> None:
        self._agent_up(instance_id)

    def on_booted_waiting(self, instance_id: str, into_warm_pool: bool) -> None:
        if into_warm_pool:
            self.controller.on_prepared_for_pool(instance_id)
        else:
            self._agent_up(instance_id)

    def on_lifecycle_action(self, event: LifecycleEvent) -> None:
        self.controller.on_lifecycle_action(event)

    def _agent_up(self, instance_id: str) -> None:
        if instance_id in self._agents_up:
            return  # up since it booted in Pending:Wait
        self._agents_up.add(instance_id)
        if instance_id in self.never_healthy:
            self.controller.on_stuck(instance_id)
            return
        self.jibris[instance_id] = Jibri(instance_id, self.engine.now())
        self.controller.on_ready(instance_id)
        self._serve_queue()

    def on_terminated(self, instance_id: str) -> None:
        self._agents_up.discard(instance_id)
        jibri = self.jibris.pop(instance_id, None)
        if jibri is not None and jibri.recording is not None:
            record = jibri.recording
            record.killed_at = self.engine.now()
            record.ended_at = self.engine.now()
            self.recording_count -= 1
            if record.give_up is not None:
                record.give_up.cancel()
            self._end_event.pop(instance_id).cancel()
        self.controller.on_terminated(instance_id)

    # --- requests -----------------------------------------------------------------------------

    def _arrive(self, record: RequestRecord) -> None:
        self.controller.on_arrival(record)
        if not self.queue:
            jibri = self._pick()
            if jibri is not None:
                self._start(record, jibri)
                return
        self.queue.append(record)
        patience = min(self.model.patience_s, record.trace.duration)
        record.give_up = self.engine.after(patience, lambda: self._give_up(record), Phase.REQUEST)
        self.controller.on_unserved(record)

    def _give_up(self, record: RequestRecord) -> None:
        record.give_up = None
        record.gave_up_at = self.engine.now()
        self.queue.remove(record)

    def _pick(self) -> Jibri | None:
        return next((j for j in self.jibris.values() if j.idle), None)

    def _serve_queue(self) -> None:
        while self.queue:
            jibri = self._pick()
            if jibri is None:
                return
            record = self.queue.popleft()
            if record.give_up is not None:
                record.give_up.cancel()
                record.give_up = None
            self._start(record, jibri)

    def _start(self, record: RequestRecord, jibri: Jibri) -> None:
        now = self.engine.now()
        record.started_at = now
        record.instance_id = jibri.instance_id
        jibri.recording = record
        self.recording_count += 1
        self._end_event[jibri.instance_id] = self.engine.at(
            max(now, record.trace.ends_at), lambda: self._end(jibri), Phase.RECORDING_END
        )
        self.controller.on_busy(jibri.instance_id)

    def _end(self, jibri: Jibri) -> None:
        record = jibri.recording
        assert record is not None
        del self._end_event[jibri.instance_id]
        record.ended_at = self.engine.now()
        jibri.recording = None
        self.recording_count -= 1
        if jibri.in_brewery:
            self.controller.on_idle(jibri.instance_id)
            self._serve_queue()
        else:
            jibri.gone = True
            self.controller.on_gone(jibri.instance_id)

    def _sample(self) -> None:
        self.samples.append(
            Sample(
                at=self.engine.now(),
                recording=self.recording_count,
                queued=len(self.queue),
                capacity=len(self.group.in_group()),
                idle=sum(1 for j in self.jibris.values() if j.idle),
                warm_pool=self.group.warm_pool_count(),
            )
        )
