"""Tickets: Jitsi's requests for a recorder, their FIFO queue, and the store behind them.

A ticket is `queued` until a recorder is reserved for it (`assigned`), then
`consumed` when a recording starts during its lease, or `expired`/`cancelled`.
Items beside the registry: TICKET#<id>, IDEMPOTENCY#<key>, CONTROL#ticket-seq.
Queued and assigned tickets are listed through the `by_state` index in arrival
order (GSI1SK is the zero-padded sequence number).
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

from chalicelib.demand import arrival_update
from chalicelib.dynamodb_registry import STATE_INDEX

QUEUED, ASSIGNED, CONSUMED, EXPIRED, CANCELLED = "queued", "assigned", "consumed", "expired", "cancelled"
OPEN = (QUEUED, ASSIGNED)
KEEP_CLOSED_SECONDS = 86_400  # a closed ticket can still be read for a day


@dataclass(frozen=True)
class Ticket:
    request_id: str
    status: str
    room: str
    kind: str
    created_at: float
    seq: int
    wait_until: float
    meeting_url: str | None = None
    requester: str | None = None
    instance_id: str | None = None
    private_ip: str | None = None
    lease_until: float | None = None
    idempotency_key: str | None = None
    body_hash: str | None = None
    closed_reason: str | None = None
    booked: bool = False  # it arrived for a booking: served before requests nobody announced
    version: int = 1

    def queue_order(self) -> tuple[int, int]:
        return (0 if self.booked else 1, self.seq)


class TicketStore(Protocol):
    def next_seq(self) -> int: ...

    def create(self, ticket: Ticket) -> None:
        """Store a new ticket and count its arrival in the demand statistics, in one write where possible."""
        ...

    def get(self, request_id: str) -> Ticket | None: ...

    def save(self, expected: Ticket, updated: Ticket, expires_at: int | None = None) -> bool:
        """Write `updated` if the stored ticket still has `expected`'s status and version."""
        ...

    def list_status(self, status: str, limit: int = 1000) -> list[Ticket]:
        """Open tickets of one status, oldest first."""
        ...

    def claim_idempotency_key(self, key: str, request_id: str, body_hash: str, now: float) -> tuple[str, str] | None:
        """Remember the key; None when new, else the (request_id, body_hash) it already names."""
        ...


class MemoryTicketStore:
    def __init__(self, on_arrival: Callable[[float], None] | None = None) -> None:
        self._on_arrival = on_arrival or (lambda at: None)
        self._tickets: dict[str, Ticket] = {}
        self._keys: dict[str, tuple[str, str]] = {}
        self._seq = 0
        self._lock = threading.Lock()

    def next_seq(self) -> int:
        with self._lock:
            self._seq += 1
            return self._seq

    def create(self, ticket: Ticket) -> None:
        with self._lock:
            if ticket.request_id in self._tickets:
                raise ValueError(f"ticket {ticket.request_id} exists")
            self._tickets[ticket.request_id] = ticket
        self._on_arrival(ticket.created_at)

    def get(self, request_id: str) -> Ticket | None:
        with self._lock:
            return self._tickets.get(request_id)

    def save(self, expected: Ticket, updated: Ticket, expires_at: int | None = None) -> bool:
        with self._lock:
            current = self._tickets.get(expected.request_id)
            if current is None or (current.status, current.version) != (expected.status, expected.version):
                return False
            self._tickets[expected.request_id] = dataclasses.replace(updated, version=expected.version + 1)
            return True

    def list_status(self, status: str, limit: int = 1000) -> list[Ticket]:
        with self._lock:
            found = sorted((t for t in self._tickets.values() if t.status == status), key=lambda t: t.seq)
        return found[:limit]

    def claim_idempotency_key(self, key: str, request_id: str, body_hash: str, now: float) -> tuple[str, str] | None:
        with self._lock:
            if key in self._keys:
                return self._keys[key]
            self._keys[key] = (request_id, body_hash)
            return None


class DynamoDBTicketStore:
    KEEP_IDEMPOTENCY_SECONDS = 86_400

    def __init__(self, table: Any, pool: str) -> None:
        self._table = table
        self._pool = pool
        self._pk = f"POOL#{pool}"

    def next_seq(self) -> int:
        reply = self._table.update_item(
            Key={"PK": self._pk, "SK": "CONTROL#ticket-seq"},
            UpdateExpression="ADD seq :one",
            ExpressionAttributeValues={":one": 1},
            ReturnValues="UPDATED_NEW",
        )
        return int(reply["Attributes"]["seq"])

    def create(self, ticket: Ticket) -> None:
        # One call for both: the request-path budget is a query, the reservation and this.
        # (The resource's own client serializes Python values, as the table methods do.)
        self._table.meta.client.transact_write_items(
            TransactItems=[
                {
                    "Put": {
                        "TableName": self._table.name,
                        "Item": self._item(ticket, None),
                        "ConditionExpression": "attribute_not_exists(PK)",
                    }
                },
                {"Update": {"TableName": self._table.name, **arrival_update(self._pk, ticket.created_at)}},
            ]
        )

    def get(self, request_id: str) -> Ticket | None:
        item = self._table.get_item(Key={"PK": self._pk, "SK": f"TICKET#{request_id}"}, ConsistentRead=True).get("Item")
        return _ticket(item) if item else None

    def save(self, expected: Ticket, updated: Ticket, expires_at: int | None = None) -> bool:
        try:
            self._table.put_item(
                Item=self._item(dataclasses.replace(updated, version=expected.version + 1), expires_at),
                ConditionExpression=Attr("status").eq(expected.status) & Attr("version").eq(expected.version),
            )
            return True
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            return False

    def list_status(self, status: str, limit: int = 1000) -> list[Ticket]:
        kwargs: dict[str, Any] = {
            "IndexName": STATE_INDEX,
            "KeyConditionExpression": Key("GSI1PK").eq(f"{self._pool}#ticket#{status}"),
        }
        found: list[Ticket] = []
        while len(found) < limit:
            page = self._table.query(**kwargs)
            found.extend(t for t in map(_ticket, page.get("Items", [])) if t.status == status)
            if "LastEvaluatedKey" not in page:
                break
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
        return found[:limit]

    def claim_idempotency_key(self, key: str, request_id: str, body_hash: str, now: float) -> tuple[str, str] | None:
        try:
            self._table.put_item(
                Item={
                    "PK": self._pk,
                    "SK": f"IDEMPOTENCY#{key}",
                    "request_id": request_id,
                    "body_hash": body_hash,
                    "expires_at": int(now) + self.KEEP_IDEMPOTENCY_SECONDS,
                },
                ConditionExpression=Attr("PK").not_exists(),
            )
            return None
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
        item = self._table.get_item(Key={"PK": self._pk, "SK": f"IDEMPOTENCY#{key}"}, ConsistentRead=True)["Item"]
        return str(item["request_id"]), str(item["body_hash"])

    def _item(self, ticket: Ticket, expires_at: int | None) -> dict[str, Any]:
        item: dict[str, Any] = {
            "PK": self._pk,
            "SK": f"TICKET#{ticket.request_id}",
            "kind_of_item": "ticket",
            **{k: _dec(v) for k, v in dataclasses.asdict(ticket).items() if v is not None},
        }
        if ticket.status in OPEN:  # only open tickets are listed through the index
            item["GSI1PK"] = f"{self._pool}#ticket#{ticket.status}"
            item["GSI1SK"] = f"{ticket.seq:020d}"
        if expires_at is not None:
            item["expires_at"] = expires_at
        return item


def _dec(value: Any) -> Any:
    return Decimal(repr(value)) if isinstance(value, float) else value


def _ticket(item: dict[str, Any]) -> Ticket:
    fields = {f.name for f in dataclasses.fields(Ticket)}
    values: dict[str, Any] = {}
    for name, value in item.items():
        if name not in fields:
            continue
        if isinstance(value, Decimal):
            value = int(value) if name in ("seq", "version") else float(value)
        values[name] = value
    return Ticket(**values)
