"""The demo's world: the control plane on the local stack, a simulated group, Jicofo replaying a scenario.

Threads, all stopped when `Demo.run` returns or raises:
- the main loop advances the group on the clock, starts each request when it is due, samples and prints;
- `machines` boots an instance's agent and fake Jibri when the group boots it, and stops them when the
  group parks or terminates it;
- `eventbridge` delivers each lifecycle action, as EventBridge's JSON, to the app's `on_lifecycle_action`;
- `schedule` invokes `evaluate_pool` with the scheduled event every simulated minute, the first time once
  the bookings made before the run are in;
- a request booked ahead (the scenario's announced_at_s) is first announced with `POST /v1/bookings` and
  the same Jitsi token, at its announcement (at the start when that is not after second 0), for one
  recorder in its room from the control plane's clock time of its request;
- one Jicofo thread per request: `POST /v1/requests` with a Jitsi token, waits in the queue if told
  to, starts the assigned Jibri (`startService`), and stops it (`stopService`) when the meeting ends;
  the fake Jibri then writes a recording and runs the real finalize script, and the real agent uploads it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from chalice.local import LambdaContext

from agent import log as agent_log
from agent.spool import Spool, SpoolError
from chalicelib import observability
from chalicelib.clock import iso
from sim import tokens
from sim.clock import ScaledClock
from sim.demo_group import GroupApi, LiveGroup, Notice
from sim.demo_report import check_invariants, summarize
from sim.demo_scenario import Scenario
from sim.events import lifecycle_action_event
from sim.stack import LocalStack, SimRecorder
from sim.whatif.model import Model

SECRET = "a-demo-secret-of-at-least-32-bytes-long"
TENANT = "acme"
JWT_SECRET_PARAMETER = "/jibri/demo/jwt-secret"
KIB = 1024
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only, never a proxy

# What the demo sets unless --set says otherwise. Simulated seconds: at 60x a 600 s stale limit is 10 s of
# wall time, room for agents that report every second on a busy machine.
DEMO_SETTINGS = {
    "JWT_ALGORITHM": "HS256",
    "JWT_ISSUER": "jitsi",
    "JWT_AUDIENCE": "jibri-autoscaler",
    "JWT_SECRET_PARAMETER": JWT_SECRET_PARAMETER,
    "POOL_TENANTS": TENANT,
    "MIN_IDLE": "2",
    "HEARTBEAT_STALE_SECONDS": "600",
    "LOST_AFTER_SECONDS": "1800",
    "REQUEST_LEASE_SECONDS": "600",
    "REQUEST_WAIT_SECONDS": "1200",
    "LAUNCH_TIMEOUT_SECONDS": "1800",
}


@dataclass
class DemoConfig:
    scenario: Scenario
    speed: float = 60.0
    settings: dict[str, str] = field(default_factory=dict)
    initial: int = 2  # instances in service when the scenario starts
    minimum: int = 1
    maximum: int = 40
    cold_launch_s: float = 240.0
    warm_start_s: float = 45.0
    tail_s: float = 600.0  # simulated seconds shown after the last recording ends (scale-in)
    sample_every_s: float = 60.0
    recording_kib: tuple[int, int] = (16, 256)
    seed: int = 1
    report_interval_s: float = 1.0  # wall seconds between an agent's reports
    wall_limit_s: float = 600.0
    verbose: bool = False
    out: TextIO = field(default_factory=lambda: sys.stdout)
    # The group, and the pool, table, bucket and topics named after it. moto's state lives as long as the
    # process, so a second run in one process needs a name of its own (else it sees the first one's pool).
    group_name: str = "jibri-demo"


@dataclass
class RequestRecord:
    index: int
    request_at: float  # simulated seconds from the scenario's start
    duration: float
    room: str
    request_id: str | None = None
    answer: int | None = None  # 201 or 202
    instance_id: str | None = None
    assigned_at: float | None = None
    started_at: float | None = None
    released_at: float | None = None
    session_id: str | None = None
    failure: str | None = None
    done: bool = False
    announced_at: float | None = None  # when it is booked ahead (simulated seconds, <= 0: before the run); None: not
    booking_id: str | None = None  # the booking the API made for it


@dataclass
class BookingMade:
    """One `POST /v1/bookings`: one recorder for a request announced ahead, from the request's time."""

    index: int  # the request it announces
    room: str
    announced_at: float  # simulated seconds from the scenario's start; made at the start when <= 0
    start_at: float  # simulated seconds: the request's request_at
    booking_id: str | None = None
    sent_at: float | None = None  # when the demo sent it (simulated seconds)
    made_at: float | None = None  # when the API answered; later than sent_at by the API's latency
    failure: str | None = None
    listed: bool = False  # seen in GET /v1/bookings while it was upcoming
    done: bool = False


@dataclass
class RecordingMade:
    session_id: str
    instance_id: str
    room: str
    files: dict[str, str]  # name -> SHA-256 of what the Jibri wrote
    size: int
    verified: bool = False
    problem: str | None = None


class Demo:
    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.clock = ScaledClock(config.speed)
        self.group_name = config.group_name
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._machines: queue.Queue[Notice | None] = queue.Queue()
        self._actions: queue.Queue[Notice | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._jicofo: ThreadPoolExecutor | None = None
        self.stack: LocalStack | None = None
        self.api: GroupApi | None = None
        self.group: LiveGroup | None = None
        self.start_epoch = 0.0  # the clock's time at the scenario's second 0
        self.requests = [
            RequestRecord(r.index, r.request_at, r.duration, f"room-{r.index:03d}", announced_at=r.announced_at)
            for r in config.scenario.requests
        ]
        self._by_index = {r.index: r for r in self.requests}
        self.bookings = [
            BookingMade(r.index, r.room, r.announced_at, r.request_at)
            for r in sorted(self.requests, key=lambda r: (r.announced_at or 0.0, r.index))
            if r.announced_at is not None
        ]
        self._before_run: list[Future[None]] = []  # the bookings made before the first evaluation
        self.decisions: dict[tuple[str, str], dict[str, Any]] = {}  # (at, trigger) -> as GET /v1/pool shows it
        self.recordings: dict[str, RecordingMade] = {}
        self.terminations: list[dict[str, Any]] = []
        self.refused_starts: list[dict[str, Any]] = []
        self.holding: dict[str, int] = {}  # instance id -> the request it is held for, as Jicofo knows it
        self.timeline: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.lifecycle_actions = 0
        self.evaluations = 0

    # -- running -----------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run the scenario to its end and return the report; everything started is stopped on the way out."""
        try:
            self._start()
            self._loop()
            return self._report()
        finally:
            self.close()

    def sim_now(self) -> float:
        return self.clock.now() - self.start_epoch

    def _start(self) -> None:
        config = self.config
        model = Model(
            cold_launch_s=config.cold_launch_s,
            warm_start_s=config.warm_start_s,
            minimum=config.minimum,
            maximum=config.maximum,
            seed=config.seed,
        )
        self.group = LiveGroup(self.group_name, self.clock, model, self._on_notice)
        self.api = GroupApi(self.group).start()
        settings = {
            **DEMO_SETTINGS,
            "COLD_LAUNCH_SECONDS": str(int(config.cold_launch_s)),
            "WARM_START_SECONDS": str(int(config.warm_start_s)),
            **config.settings,
        }
        self.stack = LocalStack(
            group_name=self.group_name,
            group_size=0,  # moto's group holds the definition; the simulated one runs the instances
            clock=self.clock,
            poll_interval_seconds=0.5,
            report_interval_seconds=config.report_interval_s,
            agent_log_level="INFO" if config.verbose else "WARNING",
            settings=settings,
            autoscaling=self.group,
            autoscaling_url=self.api.url,
        )
        self.stack.start()
        self.stack.session.client("ssm").put_parameter(
            Name=JWT_SECRET_PARAMETER, Value=SECRET, Type="SecureString", Overwrite=True
        )
        for name, target in (("machines", self._run_machines), ("eventbridge", self._run_eventbridge)):
            self._spawn(name, target)
        # One worker per request (each holds one for its recording) and a few for bookings, which are short.
        self._jicofo = ThreadPoolExecutor(max_workers=max(4, len(self.requests) + 4), thread_name_prefix="jicofo")
        self.group.start(config.initial)
        self._wait_for_idle(config.initial)
        self.start_epoch = self.clock.now()
        # Booked before the run: made at once, and the first evaluation waits for them.
        self._before_run = [self._jicofo.submit(self._book, b) for b in self.bookings if b.announced_at <= 0]
        self._spawn("schedule", self._run_schedule)

    def _wait_for_idle(self, count: int) -> None:
        assert self.stack is not None
        deadline = time.monotonic() + 60
        while self._pool_counts().get("idle", 0) < count:
            if time.monotonic() > deadline:
                raise RuntimeError("the first recorders did not report idle within a minute")
            self._stop.wait(0.1)

    def _loop(self) -> None:
        config = self.config
        assert self.group is not None and self._jicofo is not None
        due = sorted(self.requests, key=lambda r: r.request_at)
        announcements = [b for b in self.bookings if b.announced_at > 0]  # sorted by announcement
        next_sample = 0.0
        end_at = config.scenario.span + config.tail_s
        deadline = time.monotonic() + config.wall_limit_s
        header_every = 20
        while True:
            now = self.sim_now()
            self.group.advance()
            while announcements and announcements[0].announced_at <= now:
                self._jicofo.submit(self._book, announcements.pop(0))
            while due and due[0].request_at <= now:
                record = due.pop(0)
                self._jicofo.submit(self._serve, record)
            if now >= next_sample:
                sample = self._sample(now)
                if len(self.timeline) % header_every == 0:
                    self._print(self._header())
                self.timeline.append(sample)
                self._print(self._row(sample))
                next_sample += config.sample_every_s
            finished = not due and all(r.done for r in self.requests) and all(b.done for b in self.bookings)
            if finished and now >= end_at and self._uploads_in_flight() == 0:
                return
            if time.monotonic() > deadline:
                self.errors.append(f"the demo did not finish within {config.wall_limit_s:.0f} s of wall time")
                return
            self._stop.wait(0.05)

    def close(self) -> None:
        """Stop every thread, server and process the demo started; safe to call more than once."""
        self._stop.set()
        if self._jicofo is not None:
            self._jicofo.shutdown(wait=True, cancel_futures=True)
        self._machines.put(None)
        self._actions.put(None)
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads.clear()
        if self.stack is not None:
            self.stack.stop()
        if self.api is not None:
            self.api.stop()
        if not self.config.verbose:
            observability.metrics.clear_metrics()  # else the metrics held back are printed at exit

    def _spawn(self, name: str, target: Callable[[], None]) -> None:
        thread = threading.Thread(target=target, name=f"demo-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- the group's machines --------------------------------------------------------------------

    def _on_notice(self, notice: Notice) -> None:
        """Called with the group's lock held: check, queue, return."""
        if notice.kind == "action":
            self._actions.put(notice)
            return
        if notice.kind == "terminated":
            self._check_termination(notice.instance_id)
        self._machines.put(notice)

    def _check_termination(self, instance_id: str) -> None:
        assert self.stack is not None
        recorder = self.stack.recorders.get(instance_id)
        busy = recorder is not None and recorder.jibri.busy_status == "BUSY"
        spool_error: str | None = None
        try:
            uploads = _spool_count(recorder)
        except SpoolError as error:
            uploads, spool_error = 0, str(error)  # unknown: the checker counts it as broken
        with self._lock:
            assigned = instance_id in self.holding
        termination: dict[str, Any] = {
            "instance_id": instance_id,
            "at": self.sim_now(),
            "busy": busy,
            "uploads": uploads,
            "assigned": assigned,
        }
        if spool_error is not None:
            termination["spool_error"] = spool_error
        self.terminations.append(termination)

    def _run_machines(self) -> None:
        assert self.stack is not None
        while (notice := self._machines.get()) is not None:
            try:
                if notice.kind == "booted":
                    self._boot(notice.instance_id, notice.into_warm_pool)
                elif notice.kind in ("stopped", "terminated"):
                    recorder = self.stack.recorders.pop(notice.instance_id, None)
                    if recorder is not None:
                        recorder.shutdown()
            except Exception as error:
                self.errors.append(f"instance {notice.instance_id} ({notice.kind}): {error}")

    def _boot(self, instance_id: str, into_warm_pool: bool) -> None:
        assert self.stack is not None
        target = "Warmed:Stopped" if into_warm_pool else "InService"
        running = self.stack.recorders.get(instance_id)
        if running is not None:
            # It was already up, waiting on its launch action: it goes on running, now bound for service.
            running.imds.target_lifecycle_state = target
            return
        recorder = self.stack.add_recorder(instance_id, target)
        recorder.jibri.on_session_end = lambda body: self._finalize(recorder, body)

    def _run_eventbridge(self) -> None:
        assert self.stack is not None
        app_module = self.stack._app_module
        context = LambdaContext("jibri-autoscaler-demo-on_lifecycle_action", 512)
        while (notice := self._actions.get()) is not None:
            assert notice.event is not None
            try:
                app_module.on_lifecycle_action(lifecycle_action_event(notice.event), context)
                self.lifecycle_actions += 1
            except Exception as error:
                self.errors.append(f"on_lifecycle_action for {notice.instance_id}: {error}")

    def _run_schedule(self) -> None:
        assert self.stack is not None
        wait_for(self._before_run, timeout=60)
        next_at = 0.0
        while not self._stop.is_set():
            if self.sim_now() >= next_at:
                try:
                    self.stack.evaluate()
                    self.evaluations += 1
                except Exception as error:
                    self.errors.append(f"evaluate_pool: {error}")
                next_at += 60.0
            self._stop.wait(0.05)

    # -- Jicofo ----------------------------------------------------------------------------------

    def _book(self, booking: BookingMade) -> None:
        """Announce one booked request: one recorder of its kind, in its room, from its request's time."""
        body = {
            "start_at": iso(self.start_epoch + booking.start_at),
            "count": 1,
            "kind": "recording",
            "room": booking.room,
        }
        try:
            booking.sent_at = round(self.sim_now(), 1)
            status, reply = self._api("POST", "/v1/bookings", body)
            booking.made_at = round(self.sim_now(), 1)
            if status == 201 and isinstance(reply, dict) and reply.get("booking_id"):
                booking.booking_id = str(reply["booking_id"])
                self._by_index[booking.index].booking_id = booking.booking_id
            else:
                booking.failure = f"POST /v1/bookings answered {status}: {_problem(reply)}"
        except Exception as error:
            booking.failure = f"{type(error).__name__}: {error}"
        finally:
            if booking.failure is not None:
                self.errors.append(
                    f"booking for request {booking.index} ({booking.room}, starting at {booking.start_at:.0f} s,"
                    f" announced at {booking.announced_at:.0f} s) failed: {booking.failure}"
                )
            booking.done = True

    def _serve(self, record: RequestRecord) -> None:
        try:
            self._serve_one(record)
        except Exception as error:
            record.failure = record.failure or f"{type(error).__name__}: {error}"
        finally:
            if record.instance_id is not None and record.released_at is None and record.assigned_at is not None:
                record.released_at = self.sim_now()
            with self._lock:
                if record.instance_id is not None and self.holding.get(record.instance_id) == record.index:
                    del self.holding[record.instance_id]
            record.done = True

    def _serve_one(self, record: RequestRecord) -> None:
        status, body = self._api("POST", "/v1/requests", {"room": record.room, "kind": "recording"})
        if status not in (201, 202):
            record.failure = f"POST /v1/requests answered {status}"
            return
        record.answer, record.request_id = status, body["request_id"]
        while body.get("status") == "queued":
            if self._stop.wait(max(0.1, float(body.get("retry_after", 10)) / self.config.speed)):
                return
            status, body = self._api("GET", f"/v1/requests/{record.request_id}")
            if status != 200:
                record.failure = f"GET /v1/requests/{{id}} answered {status}"
                return
        if body.get("status") != "assigned":
            record.failure = f"request {body.get('status')}: {body.get('reason', 'no reason given')}"
            return
        instance_id = body["recorder"]["instance_id"]
        record.instance_id, record.assigned_at = instance_id, self.sim_now()
        with self._lock:
            self.holding[instance_id] = record.index
        assert self.stack is not None
        recorder = self.stack.recorders.get(instance_id)
        if recorder is None:
            record.failure = "the assigned recorder's instance is not running"
            return
        record.session_id = f"{record.room}-{uuid.uuid4().hex[:8]}"
        start = {
            "sessionId": record.session_id,
            "callParams": {"callUrlInfo": {"baseUrl": "https://meet.example.com", "callName": record.room}},
            "sinkType": "file",
        }
        code = _post(f"{recorder.jibri.http_url}/startService", start)
        if code == 412:
            self.refused_starts.append({"instance_id": instance_id, "index": record.index})
            record.failure = "the assigned Jibri was busy"
            return
        if code != 200:
            record.failure = f"startService answered {code}"
            return
        record.started_at = self.sim_now()
        ends_at = record.started_at + record.duration
        while not self._stop.is_set() and self.sim_now() < ends_at:
            self._stop.wait(min(0.25, max(0.01, (ends_at - self.sim_now()) / self.config.speed)))
        if self._stop.is_set():
            return
        code = _post(f"{recorder.jibri.http_url}/stopService", {})
        record.released_at = self.sim_now()
        if code != 200:
            record.failure = f"stopService answered {code}"

    def _finalize(self, recorder: SimRecorder, body: dict[str, Any]) -> None:
        """Jibri's finalize: a small recording of the session, then the real finalize script."""
        session_id = str(body.get("sessionId") or uuid.uuid4().hex)
        room = str(body.get("callParams", {}).get("callUrlInfo", {}).get("callName") or "room")
        rng = random.Random(session_id)
        low, high = self.config.recording_kib
        data = rng.randbytes(rng.randint(low, high) * KIB)
        name = recording_name(room, self.clock.now())
        made = RecordingMade(
            session_id, recorder.instance_id, room, {name: hashlib.sha256(data).hexdigest()}, len(data)
        )
        with self._lock:
            self.recordings[session_id] = made
        metadata = {
            "meeting_url": f"https://meet.example.com/{room}",
            "participants": [{"id": f"{room}@muc.meet.example.com/host", "name": "Host"}],
        }
        recorder.finish_recording(session_id, {name: data}, metadata)

    def _api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        assert self.stack is not None and self.stack.gateway is not None
        token = tokens.hs256(tokens.claims(tenant=TENANT), SECRET)
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.stack.gateway.url}{path}", data=data, headers=headers, method=method)
        try:
            with _OPENER.open(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    # -- watching --------------------------------------------------------------------------------

    def _pool_counts(self) -> dict[str, int]:
        """The pool's counts; the evaluator's latest decisions in the same view are kept for the report."""
        assert self.stack is not None
        view = self.stack.pool(limit="1")
        self._note_decisions(view.get("decisions") or [])
        return dict(view["counts"])

    def _note_decisions(self, decisions: list[dict[str, Any]]) -> None:
        if not self.start_epoch:
            return  # before the scenario's second 0; still among the latest at the next look
        for d in decisions:
            key = (str(d["at"]), str(d["trigger"]))
            if key in self.decisions:
                continue
            reason = str(d.get("reason", ""))
            booked = _BOOKED.search(reason)
            self.decisions[key] = {
                "t": round(_epoch(key[0]) - self.start_epoch, 1),
                "trigger": d["trigger"],
                "desired": d.get("desired"),
                "previous_desired": d.get("previous_desired"),
                "buffer_target": d.get("buffer_target"),
                "booked": int(booked.group(1)) if booked else 0,
                "idle": d.get("idle"),
                "busy": d.get("busy"),
                "queued": d.get("queued"),
                "reason": reason,
            }

    def _latest_booked(self) -> int:
        """The booked count in the evaluator's latest decision seen."""
        latest = max(self.decisions.values(), key=lambda d: float(d["t"]), default=None)
        return 0 if latest is None else int(latest["booked"])

    def _note_listed_bookings(self) -> None:
        """Mark the bookings `GET /v1/bookings` lists as upcoming."""
        status, reply = self._api("GET", "/v1/bookings")
        if status != 200:
            message = f"GET /v1/bookings answered {status}: {_problem(reply)}"
            if message not in self.errors:
                self.errors.append(message)
            return
        listed = {str(b.get("booking_id")) for b in reply.get("bookings", [])}
        for booking in self.bookings:
            if booking.booking_id is not None and booking.booking_id in listed:
                booking.listed = True

    def _uploads_in_flight(self) -> int:
        assert self.stack is not None
        total = 0
        for recorder in list(self.stack.recorders.values()):
            try:
                total += _spool_count(recorder)
            except SpoolError as error:
                message = f"instance {recorder.instance_id}: {error}"
                if message not in self.errors:
                    self.errors.append(message)
        return total

    def _sample(self, now: float) -> dict[str, Any]:
        assert self.group is not None
        counts = self._pool_counts()
        group = self.group.counts()
        recording = sum(1 for r in self.requests if r.started_at is not None and r.released_at is None)
        queued = sum(1 for r in self.requests if r.answer is not None and r.assigned_at is None and not r.done)
        if any(b.booking_id and not b.listed for b in self.bookings):
            self._note_listed_bookings()  # only while a booking made is not yet seen listed
        return {
            "t": round(now, 1),
            "desired": group["desired"],
            "in_service": group["in_service"],
            "pending": group["pending"],
            "warm": group["warm"],
            "idle": counts.get("idle", 0),
            "busy": counts.get("busy", 0),
            "reserved": counts.get("reserved", 0),
            "draining": counts.get("draining", 0),
            "queued": queued,
            "recording": recording,
            "demand": recording + queued,
            "uploads": self._uploads_in_flight(),
            "booked": self._latest_booked(),
        }

    def _header(self) -> str:
        return (
            f"{'time':>6} {'desired':>7} {'pending':>7} {'idle':>4} {'busy':>4} {'reserved':>8} "
            f"{'draining':>8} {'queued':>6} {'uploads':>7} {'warm':>4}" + (f" {'booked':>6}" if self.bookings else "")
        )

    def _row(self, s: dict[str, Any]) -> str:
        minutes = int(s["t"] // 60)
        return (
            f"{minutes // 60:>3d}:{minutes % 60:02d} {s['desired']:>7} {s['pending']:>7} {s['idle']:>4} "
            f"{s['busy']:>4} {s['reserved']:>8} {s['draining']:>8} {s['queued']:>6} {s['uploads']:>7} {s['warm']:>4}"
            + (f" {s['booked']:>6}" if self.bookings else "")
        )

    def _print(self, line: str) -> None:
        print(line, file=self.config.out, flush=True)

    # -- the end ---------------------------------------------------------------------------------

    def _report(self) -> dict[str, Any]:
        assert self.group is not None
        self._verify_recordings()
        try:
            self._pool_counts()  # the decisions since the last sample
        except Exception as error:
            self.errors.append(f"GET /v1/pool at the end: {error}")
        report: dict[str, Any] = {
            "scenario": self.config.scenario.name,
            "speed": self.config.speed,
            "settings": {**DEMO_SETTINGS, **self.config.settings},
            "simulated_seconds": round(self.sim_now(), 1),
            "start_epoch": round(self.start_epoch, 3),  # the control plane's clock at the scenario's second 0
            "requests": [vars(r) for r in self.requests],
            "bookings": [vars(b) for b in self.bookings],
            "decisions": sorted(self.decisions.values(), key=lambda d: (d["t"], d["trigger"])),
            "recordings": [vars(r) for r in self.recordings.values()],
            "terminations": self.terminations,
            "refused_starts": self.refused_starts,
            "timeline": self.timeline,
            "billing": self.group.billing(),
            "lifecycle_actions": self.lifecycle_actions,
            "evaluations": self.evaluations,
            "errors": self.errors,
        }
        report["summary"] = summarize(report)
        report["invariants_broken"] = check_invariants(report)
        return report

    def _verify_recordings(self) -> None:
        """Compare each file a Jibri wrote with its S3 object and with the manifest beside it."""
        assert self.stack is not None
        s3 = self.stack.session.client("s3")
        bucket = self.stack.recordings_bucket
        keys: list[str] = []
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys += [o["Key"] for o in page.get("Contents", [])]
        for made in self.recordings.values():
            mine = [k for k in keys if f"/{made.session_id}/" in k]
            manifest_keys = [k for k in mine if k.endswith("/manifest.json")]
            if not manifest_keys:
                made.problem = "no manifest in S3"
                continue
            manifest = json.loads(s3.get_object(Bucket=bucket, Key=manifest_keys[0])["Body"].read())
            listed = {f["name"]: f for f in manifest.get("files", [])}
            problems = []
            for name, digest in made.files.items():
                entry = listed.get(name)
                if entry is None or entry.get("sha256") != digest:
                    problems.append(f"{name}: manifest checksum differs")
                    continue
                stored = s3.get_object(Bucket=bucket, Key=entry["key"])["Body"].read()
                if hashlib.sha256(stored).hexdigest() != digest:
                    problems.append(f"{name}: S3 object checksum differs")
            made.verified = not problems
            made.problem = "; ".join(problems) or None


_BOOKED = re.compile(r"\bbooked (\d+)\b")


def _epoch(at: str) -> float:
    """An ISO-8601 time of the API (e.g. 2026-01-05T09:00:00.000Z) as seconds since the epoch."""
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def _problem(reply: Any) -> str:
    """What an API error body says: the control plane's {"error": {"code", "message"}}, else as it came."""
    if isinstance(reply, dict):
        error = reply.get("error")
        if isinstance(error, dict) and error.get("message"):
            return f"{error.get('code', 'error')}: {error['message']}"
        if reply.get("message"):
            return str(reply["message"])
    return json.dumps(reply)[:200]


def recording_name(room: str, at: float) -> str:
    """The file name Jibri gives a recording: the room and its start in the host's local time."""
    return f"{room}_{time.strftime('%Y-%m-%d-%H-%M-%S', time.localtime(at))}.mp4"


def _spool_count(recorder: SimRecorder | None) -> int:
    """Sessions on the recorder's disk not yet confirmed; SpoolError when the spool cannot be read."""
    return 0 if recorder is None else Spool(recorder.spool_dir).count()


def _post(url: str, body: Any) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with _OPENER.open(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def quiet_logs() -> None:
    """Only warnings from the control plane, no metrics lines."""
    import os

    os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
    # Disabled metrics are still held, and Powertools prints them once a metric has 100 values.
    observability.metrics.add_metric = _no_metric  # type: ignore[method-assign]
    observability.logger.setLevel("WARNING")
    # The finalize script configures logging for itself (a script of its own when Jibri runs it).
    logging.getLogger(agent_log.LOGGER_NAME).setLevel(logging.WARNING)


def _no_metric(*args: Any, **kwargs: Any) -> None:
    return None
