"""Assigning recorders to Jitsi's requests: reserve one idle recorder atomically, or queue.

Capacity mode: an assigned ticket holds one recorder (`reserved`) for its lease, so
no other ticket and no scale-in takes it. The ticket is consumed when a recording
starts during its lease: on its own recorder, or (Jicofo chooses among idle Jibris
itself) on another one, oldest ticket first, which gives its own recorder back. A
reservation with no recording by the end of its lease returns the recorder to idle;
a queued ticket gives up after its wait.

Every step is a conditional write: a recorder goes idle -> reserved once, a ticket
queued -> assigned once, so no recorder is ever held for two tickets.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from chalicelib.clock import Clock, iso
from chalicelib.direct_start import DirectStarter
from chalicelib.errors import BadRequest, Conflict, NotFound
from chalicelib.observability import logger
from chalicelib.registry import Recorder, Registry, Written, transition
from chalicelib.states import RecorderState
from chalicelib.tickets import (
    ASSIGNED,
    CANCELLED,
    CONSUMED,
    EXPIRED,
    KEEP_CLOSED_SECONDS,
    QUEUED,
    Ticket,
    TicketStore,
)

S = RecorderState
KINDS = ("recording", "streaming")
_FIELDS = {"room", "kind", "meeting_url", "requester", "stream_key"}
_IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,128}$")


@dataclass(frozen=True)
class AssignmentSettings:
    lease_seconds: float = 90.0  # a reservation with no recording started returns to idle after this
    wait_seconds: float = 600.0  # a queued request gives up after this
    retry_after_seconds: int = 10  # what a queued caller is told to wait before asking again
    stale_after_seconds: float = 90.0  # an idle recorder silent this long is not handed out


@dataclass(frozen=True)
class RecorderRequest:
    room: str
    kind: str
    meeting_url: str | None
    requester: str | None
    stream_key: str | None = None  # used only for a direct start, never stored


def parse_request(body: Any) -> RecorderRequest:
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object with room and kind")
    unknown = sorted(set(body) - _FIELDS)
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_FIELDS))}")
    room = body.get("room")
    if not isinstance(room, str) or not room.strip() or len(room) > 256 or not room.isprintable():
        raise BadRequest("room must be the meeting's room name: 1 to 256 printable characters")
    kind = body.get("kind")
    if kind not in KINDS:
        raise BadRequest(f"kind is {'missing' if kind is None else repr(kind)}; expected one of {', '.join(KINDS)}")
    meeting_url = body.get("meeting_url")
    if meeting_url is not None and (
        not isinstance(meeting_url, str)
        or len(meeting_url) > 2048
        or urlsplit(meeting_url).scheme not in ("http", "https")
        or not urlsplit(meeting_url).netloc
    ):
        raise BadRequest("meeting_url must be an http(s) URL of at most 2048 characters")
    requester = body.get("requester")
    if requester is not None and (
        not isinstance(requester, str) or len(requester) > 256 or not requester.isprintable()
    ):
        raise BadRequest("requester must be at most 256 printable characters")
    stream_key = body.get("stream_key")
    if stream_key is not None and (not isinstance(stream_key, str) or not 1 <= len(stream_key) <= 256):
        raise BadRequest("stream_key must be 1 to 256 characters")
    return RecorderRequest(
        room=room.strip(), kind=str(kind), meeting_url=meeting_url, requester=requester, stream_key=stream_key
    )


def body_hash(body: Any) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class AssignmentService:
    def __init__(
        self,
        registry: Registry,
        tickets: TicketStore,
        clock: Clock,
        settings: AssignmentSettings | None = None,
        on_queued: Callable[[], object] | None = None,
        starter: DirectStarter | None = None,
        is_booked: Callable[[str, float], bool] | None = None,
    ) -> None:
        # Whether a request for this room arrives for a booking: such requests are served first.
        self._is_booked = is_booked or (lambda room, at: False)
        self._starter = starter  # set when direct start is on
        self._registry = registry
        self._tickets = tickets
        self._clock = clock
        self.settings = settings or AssignmentSettings()
        self._on_queued = on_queued or (lambda: None)  # start adding capacity now

    # -- the API ----------------------------------------------------------------------------------

    def create(self, body: Any, idempotency_key: str | None) -> tuple[int, dict[str, Any]]:
        request = parse_request(body)
        request_id = "req-" + uuid.uuid4().hex
        digest = body_hash(body)
        now = self._clock.now()
        if idempotency_key is not None:
            if not _IDEMPOTENCY_KEY.match(idempotency_key):
                raise BadRequest("the Idempotency-Key header must be 1 to 128 visible ASCII characters")
            known = self._tickets.claim_idempotency_key(idempotency_key, request_id, digest, now)
            if known is not None:
                if known[1] != digest:
                    raise Conflict("this Idempotency-Key was used with a different body")
                existing = self._tickets.get(known[0])
                if existing is not None:
                    return (201 if existing.seq == 0 else 202), self.view(existing)
                request_id = known[0]  # the first attempt stopped before storing its ticket
        for recorder in self._idle(now):
            reserved = self._reserve(recorder, request_id, now)
            if reserved is None:
                continue  # lost the race for this one: try the next
            ticket = self._new_ticket(request_id, request, now, idempotency_key, digest, seq=0)
            ticket = replace(
                ticket,
                status=ASSIGNED,
                instance_id=reserved.instance_id,
                private_ip=reserved.private_ip,
                lease_until=reserved.reserved_until,
            )
            self._tickets.create(ticket)
            reply = self.view(ticket)
            if self._starter is not None:
                reply["direct_start"] = self._starter.start(ticket, request.stream_key)
            return 201, reply
        ticket = self._new_ticket(request_id, request, now, idempotency_key, digest, seq=self._tickets.next_seq())
        ticket = replace(ticket, booked=self._is_booked(request.room, now))
        self._tickets.create(ticket)
        try:
            self._on_queued()
        except Exception:
            # The ticket is queued and the scheduled run scales out within a minute: a throttled or
            # failed Auto Scaling call must not turn the caller's 202 into a 500 (a retry without an
            # idempotency key would queue a second ticket).
            logger.exception("scale-out for a queued request failed; the scheduled run retries it")
        self.assign_queue(self._idle(self._clock.now()))  # a recorder may have come free meanwhile
        stored = self._tickets.get(request_id) or ticket
        return (201 if stored.status == ASSIGNED else 202), self.view(stored)

    def get(self, request_id: str) -> dict[str, Any]:
        return self.view(self._known(request_id))

    def cancel(self, request_id: str) -> dict[str, Any]:
        for _ in range(8):
            ticket = self._known(request_id)
            if ticket.status not in (QUEUED, ASSIGNED):
                return self.view(ticket)  # already over: cancelling again changes nothing
            if self._close(ticket, CANCELLED, "cancelled by the requester"):
                return self.view(self._known(request_id))
        raise RuntimeError(f"ticket {request_id} kept changing while it was cancelled")

    def view(self, ticket: Ticket) -> dict[str, Any]:
        body: dict[str, Any] = {
            "request_id": ticket.request_id,
            "status": ticket.status,
            "room": ticket.room,
            "kind": ticket.kind,
            "created_at": iso(ticket.created_at),
        }
        if ticket.status == QUEUED:
            mine = ticket.queue_order()
            body["position"] = 1 + sum(1 for t in self._tickets.list_status(QUEUED) if t.queue_order() < mine)
            body["retry_after"] = self.settings.retry_after_seconds
        if ticket.instance_id and ticket.status in (ASSIGNED, CONSUMED):
            body["recorder"] = {"instance_id": ticket.instance_id, "private_ip": ticket.private_ip}
        if ticket.status == ASSIGNED and ticket.lease_until is not None:
            body["lease_expires_at"] = iso(ticket.lease_until)
        if ticket.closed_reason:
            body["reason"] = ticket.closed_reason
        return body

    def queued_count(self) -> int:
        return len(self._tickets.list_status(QUEUED))

    # -- what recorders do ------------------------------------------------------------------------

    def assign_queue(self, idle: list[Recorder]) -> list[str]:
        """Give idle recorders to the oldest waiting tickets; returns the request ids assigned."""
        if not idle:
            return []
        waiting = sorted(self._tickets.list_status(QUEUED), key=Ticket.queue_order)
        assigned: list[str] = []
        now = self._clock.now()
        for recorder in idle:
            while waiting:
                ticket = waiting[0]
                if ticket.wait_until <= now:
                    self._close(waiting.pop(0), EXPIRED, "no recorder came free in time")
                    continue
                reserved = self._reserve(recorder, ticket.request_id, now)
                if reserved is None:
                    break  # this recorder was taken meanwhile: the ticket tries the next one
                taken = replace(
                    ticket,
                    status=ASSIGNED,
                    instance_id=reserved.instance_id,
                    private_ip=reserved.private_ip,
                    lease_until=reserved.reserved_until,
                )
                waiting.pop(0)
                if self._tickets.save(ticket, taken):
                    assigned.append(ticket.request_id)
                    break
                self._release(reserved, ticket.request_id)  # the ticket was cancelled or expired meanwhile
        return assigned

    def on_busy(self, before: Recorder | None, after: Recorder) -> bool:
        """A recording started: consume the ticket it serves. True when a ticket was consumed."""
        now = self._clock.now()
        if before is not None and before.reserved_for:
            ticket = self._tickets.get(before.reserved_for)
            if ticket is not None and ticket.status == ASSIGNED:
                return self._tickets.save(ticket, replace(ticket, status=CONSUMED), int(now) + KEEP_CLOSED_SECONDS)
            return False
        # Jicofo chose another idle Jibri: the oldest live reservation was for this recording.
        for ticket in sorted(self._tickets.list_status(ASSIGNED), key=lambda t: (t.created_at, t.seq)):
            if ticket.lease_until is not None and ticket.lease_until < now:
                continue
            if self._tickets.save(
                ticket,
                replace(ticket, status=CONSUMED, instance_id=after.instance_id, private_ip=after.private_ip),
                int(now) + KEEP_CLOSED_SECONDS,
            ):
                held = self._registry.get(ticket.instance_id) if ticket.instance_id else None
                if held is not None:
                    self._release(held, ticket.request_id)
                return True
        return False

    def on_reservation_lost(self, before: Recorder) -> bool:
        """A reserved recorder left `reserved` without starting a recording (its Jibri went offline,
        unhealthy or expired, its agent went silent, Spot took it): its request waits again, first in
        line, rather than naming a recorder that may later be handed to someone else."""
        if before.state is not S.RESERVED or not before.reserved_for:
            return False
        ticket = self._tickets.get(before.reserved_for)
        if ticket is None or not self._requeue(ticket, before.instance_id):
            return False
        self.assign_queue(self._idle(self._clock.now()))
        return True

    def tick(self) -> list[str]:
        """On every evaluator run: end leases and waits that ran out, then serve the queue."""
        done: list[str] = []
        now = self._clock.now()
        holding = {r.instance_id: r.reserved_for for r in self._registry.list_by_state(S.RESERVED)}
        for ticket in self._tickets.list_status(ASSIGNED):
            # A recorder that lost its reservation some other way (a crash between two writes): requeue.
            suspect = ticket.instance_id and holding.get(ticket.instance_id) != ticket.request_id
            if suspect and self._lost(ticket) and self._requeue(ticket, ticket.instance_id):
                done.append(f"{ticket.request_id}: {ticket.instance_id} was lost, waiting again")
                continue
            expired = ticket.lease_until is not None and ticket.lease_until < now
            if expired and self._close(ticket, EXPIRED, "no recording started within the lease"):
                done.append(f"{ticket.request_id}: lease expired")
        for ticket in self._tickets.list_status(QUEUED):
            if ticket.wait_until <= now and self._close(ticket, EXPIRED, "no recorder came free in time"):
                done.append(f"{ticket.request_id}: gave up waiting")
        # A reservation whose ticket is gone (a crash between the two writes) is released too.
        for recorder in self._registry.list_by_state(S.RESERVED):
            if recorder.reserved_until is not None and recorder.reserved_until < now:
                self._release(recorder, recorder.reserved_for)
        done.extend(f"{r}: assigned from the queue" for r in self.assign_queue(self._idle(now)))
        return done

    # -- inside -----------------------------------------------------------------------------------

    def _lost(self, ticket: Ticket) -> bool:
        """Its recorder (read afresh: the index may lag) is neither reserved for it nor recording."""
        held = self._registry.get(ticket.instance_id) if ticket.instance_id else None
        return held is not None and held.reserved_for != ticket.request_id and held.state is not S.BUSY

    def _requeue(self, ticket: Ticket, instance_id: str | None) -> bool:
        if ticket.status != ASSIGNED or ticket.instance_id != instance_id:
            return False
        waiting = replace(ticket, status=QUEUED, instance_id=None, private_ip=None, lease_until=None)
        return self._tickets.save(ticket, waiting)

    def _known(self, request_id: str) -> Ticket:
        ticket = self._tickets.get(request_id) if len(request_id) <= 64 else None
        if ticket is None:
            raise NotFound(f"no request {request_id!r} in this pool")
        return ticket

    def _idle(self, now: float) -> list[Recorder]:
        idle = [
            r
            for r in self._registry.list_by_state(S.IDLE)
            if r.effective_state(now, self.settings.stale_after_seconds) is S.IDLE
        ]
        random.shuffle(idle)  # concurrent requests rarely race for the same recorder
        return idle

    def _new_ticket(
        self, request_id: str, request: RecorderRequest, now: float, key: str | None, digest: str, seq: int
    ) -> Ticket:
        return Ticket(
            request_id=request_id,
            status=QUEUED,
            room=request.room,
            kind=request.kind,
            meeting_url=request.meeting_url,
            requester=request.requester,
            created_at=now,
            seq=seq,
            wait_until=now + self.settings.wait_seconds,
            idempotency_key=key,
            body_hash=digest,
        )

    def _reserve(self, recorder: Recorder, request_id: str, now: float) -> Recorder | None:
        if recorder.state is not S.IDLE:
            return None
        lease = now + self.settings.lease_seconds
        result = self._registry.save(
            recorder, transition(recorder, S.RESERVED, now, reserved_for=request_id, reserved_until=lease)
        )
        return result.recorder if isinstance(result, Written) else None

    def _release(self, recorder: Recorder, request_id: str | None) -> None:
        for _ in range(8):
            if recorder.state is not S.RESERVED or recorder.reserved_for != request_id:
                return
            result = self._registry.save(
                recorder,
                transition(recorder, S.IDLE, self._clock.now(), reserved_for=None, reserved_until=None),
            )
            if isinstance(result, Written) or result.current is None:
                return
            recorder = result.current

    def _close(self, ticket: Ticket, status: str, reason: str) -> bool:
        now = self._clock.now()
        if not self._tickets.save(
            ticket, replace(ticket, status=status, closed_reason=reason), int(now) + KEEP_CLOSED_SECONDS
        ):
            return False
        if ticket.status == ASSIGNED and ticket.instance_id:
            held = self._registry.get(ticket.instance_id)
            if held is not None:
                self._release(held, ticket.request_id)
        return True


def idempotency_key(headers: Mapping[str, str]) -> str | None:
    for name, value in headers.items():
        if name.lower() == "idempotency-key":
            return value
    return None
