"""python -m sim.bench_requests: the request path's latency and DynamoDB calls on the local stack.

Jitsi's `POST /v1/requests` over real HTTP to the local gateway (JWT authorizer, the
deployed app), with moto in server mode as DynamoDB, Auto Scaling and SSM, all on
loopback. R recorders report IDLE through signed status calls. Each round sends R
requests, which take the R idle recorders (the fast path: 201), then a quarter as many
more, which find none and queue (202; each runs the evaluator, as deployed). The round
then cancels its tickets with DELETE, queued ones first, which gives every recorder back,
and the recorders report IDLE again; the next round measures the fast path anew. The
first request of each round carries an Idempotency-Key and is reported apart.

Latency is measured by the caller, per request, at the given concurrency; the gateway
runs one Lambda invocation at a time (one container), so concurrent requests wait for
each other there. DynamoDB calls are counted by a botocore `before-call.dynamodb`
handler on the client of the app's table, per `POST /v1/requests` invocation.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from typing import Any

from chalicelib import observability
from sim import tokens
from sim.client import signed_call
from sim.stack import LocalStack
from sim.whatif.metrics import percentile

SECRET = "a-benchmark-secret-of-at-least-32-bytes!"
TENANT = "acme"
JWT_SETTINGS = {
    "JWT_ALGORITHM": "HS256",
    "JWT_ISSUER": "jitsi",
    "JWT_AUDIENCE": "jibri-autoscaler",
    "POOL_TENANTS": TENANT,
}
ROUTE = "/v1/requests"
TARGET_CALLS_PER_ASSIGNMENT = 3
REQUEST_TIMEOUT_S = 30.0


# -- counting DynamoDB calls per invocation --------------------------------------------------------


class DynamoDBCalls:
    """DynamoDB calls made by each `POST /v1/requests` invocation, keyed by the request id it answers."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self.by_request: dict[str, list[str]] = {}

    def before_call(self, event_name: str, params: Any = None, **_: Any) -> None:
        calls: list[str] | None = getattr(self._local, "calls", None)
        if calls is not None:  # else not a POST /v1/requests: a status report or a cancellation
            calls.append(_label(event_name.rsplit(".", 1)[-1], params))

    def wrap(self, view: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self._local.calls = []
            try:
                response = view(*args, **kwargs)
            finally:
                calls, self._local.calls = self._local.calls, None
            body = getattr(response, "body", None)
            if isinstance(body, dict) and isinstance(body.get("request_id"), str):
                with self._lock:
                    self.by_request[body["request_id"]] = calls
            return response

        return counted


def _label(operation: str, params: Any) -> str:
    """The operation and the item kind it touches (the sort key's prefix, or the index queried)."""
    try:
        body = json.loads((params or {}).get("body") or b"{}")
    except (TypeError, ValueError, AttributeError):
        return operation
    if body.get("IndexName"):
        return f"{operation} {body['IndexName']}"
    item = body.get("Key") or body.get("Item") or {}
    sort_key = item.get("SK", {}).get("S") if isinstance(item.get("SK"), dict) else None
    if sort_key is None:
        for value in (body.get("ExpressionAttributeValues") or {}).values():
            text = value.get("S") if isinstance(value, dict) else None
            if isinstance(text, str) and "#" in text:
                sort_key = text
                break
    return f"{operation} {sort_key.split('#', 1)[0]}" if sort_key else operation


@contextmanager
def counting(stack: LocalStack) -> Iterator[DynamoDBCalls]:
    counter = DynamoDBCalls()
    app_module = stack._app_module
    events = app_module.runtime.table.meta.client.meta.events  # the table's resource is made on first use
    entry = app_module.app.routes[ROUTE]["POST"]
    view = entry.view_function
    events.register("before-call.dynamodb", counter.before_call, unique_id="bench-requests-count")
    entry.view_function = counter.wrap(view)
    try:
        yield counter
    finally:
        entry.view_function = view
        events.unregister("before-call.dynamodb", unique_id="bench-requests-count")


# -- one request -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    phase: str  # "fast" or "queued": what the round meant it to find
    keyed: bool
    status: int
    seconds: float
    request_id: str | None


def post_request(url: str, token: str, room: str, phase: str, key: str | None) -> Reply:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    data = json.dumps({"room": room, "kind": "recording"}).encode()
    request = urllib.request.Request(f"{url}{ROUTE}", data=data, headers=headers, method="POST")
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, raw = error.code, error.read()
    except OSError:
        status, raw = 0, b""  # no answer at all: counts as an error
    seconds = time.perf_counter() - started
    try:
        request_id = json.loads(raw).get("request_id")
    except (ValueError, AttributeError):
        request_id = None
    return Reply(phase, key is not None, status, seconds, request_id if isinstance(request_id, str) else None)


def cancel(url: str, token: str, request_id: str) -> int:
    request = urllib.request.Request(
        f"{url}{ROUTE}/{request_id}", headers={"Authorization": f"Bearer {token}"}, method="DELETE"
    )
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return error.code
    except OSError:
        return 0


def report_idle(stack: LocalStack, url: str) -> None:
    sent_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z"
    body = {"busy_status": "IDLE", "health": "HEALTHY", "pending_uploads": 0, "sent_at": sent_at}
    for instance_id in stack.instance_ids:
        creds = stack.issuer.role_session(stack.agent_role, instance_id)
        status, reply = signed_call("POST", f"{url}/v1/recorders/{instance_id}/status", creds, body)
        if status != 200:
            raise RuntimeError(f"the status report of {instance_id} was answered {status}: {reply}")


# -- the run ---------------------------------------------------------------------------------------


@dataclass
class Run:
    replies: list[Reply] = field(default_factory=list)
    calls: dict[str, list[str]] = field(default_factory=dict)
    rounds: int = 0
    seconds: float = 0.0
    cleanup_failures: int = 0


def run(requests: int, recorders: int, concurrency: int, max_seconds: float) -> Run:
    result = Run()
    # moto keeps its state per process: names of their own keep two runs in one process apart.
    name = f"jibri-bench-{uuid.uuid4().hex[:8]}"
    settings = {**JWT_SETTINGS, "JWT_SECRET_PARAMETER": f"/{name}/jwt-secret"}
    with quiet(), LocalStack(group_name=name, group_size=recorders, settings=settings) as stack:
        assert stack.gateway is not None
        url = stack.gateway.url
        stack.session.client("ssm").put_parameter(
            Name=settings["JWT_SECRET_PARAMETER"], Value=SECRET, Type="SecureString"
        )
        token = tokens.hs256(tokens.claims(tenant=TENANT, lifetime=max_seconds + 600), SECRET)
        queued_per_round = max(1, recorders // 4)
        started = time.perf_counter()
        with counting(stack) as counter, ThreadPoolExecutor(max_workers=concurrency) as pool:
            while len(result.replies) < requests and time.perf_counter() - started < max_seconds:
                report_idle(stack, url)
                n = result.rounds
                left = requests - len(result.replies)
                fast = min(recorders, left)
                queued = min(queued_per_round, left - fast)

                def fast_one(i: int, n: int = n) -> Reply:
                    key = f"bench-{n}-{i}" if i == 0 else None
                    return post_request(url, token, f"room-{n}-{i}", "fast", key)

                def queued_one(i: int, n: int = n) -> Reply:
                    return post_request(url, token, f"room-{n}-q{i}", "queued", None)

                fast_replies = list(pool.map(fast_one, range(fast)))
                queued_replies = list(pool.map(queued_one, range(queued)))
                result.replies += fast_replies + queued_replies
                # Queued tickets first, so a recorder given back is not handed to one of them.
                for reply in [*queued_replies, *fast_replies]:
                    if reply.request_id is not None and cancel(url, token, reply.request_id) != 200:
                        result.cleanup_failures += 1
                result.rounds += 1
            result.seconds = time.perf_counter() - started
            result.calls = dict(counter.by_request)
    return result


@contextmanager
def quiet() -> Iterator[None]:
    """Keep the app's info logs and EMF metrics (printed at each invocation) off the report."""
    saved_level = observability.logger.log_level
    observability.logger.setLevel("WARNING")
    try:
        with redirect_stdout(io.StringIO()):
            yield
    finally:
        observability.logger.setLevel(saved_level)


# -- the report ------------------------------------------------------------------------------------


def path_report(run: Run, phase: str, answered: int, keyed: bool) -> dict[str, Any]:
    sent = [r for r in run.replies if r.phase == phase and r.keyed == keyed]
    ok = [r for r in sent if r.status == answered]
    errors = sum(1 for r in sent if not 200 <= r.status < 300)
    ms = [r.seconds * 1000 for r in ok]
    counted = [run.calls[r.request_id] for r in ok if r.request_id in run.calls]
    counts = [len(calls) for calls in counted]
    sequences = Counter(tuple(calls) for calls in counted)
    operations: Counter[str] = Counter(label for calls in counted for label in calls)
    return {
        "sent": len(sent),
        "count": len(ok),
        "other_2xx": sum(1 for r in sent if 200 <= r.status < 300 and r.status != answered),
        "errors": errors,
        "error_rate": round(errors / len(sent), 4) if sent else 0.0,
        "p50_ms": round(percentile(ms, 50), 1) if ms else None,
        "p99_ms": round(percentile(ms, 99), 1) if ms else None,
        "max_ms": round(max(ms), 1) if ms else None,
        "dynamodb_calls": {
            "min": min(counts),
            "median": float(statistics.median(counts)),
            "max": max(counts),
        }
        if counts
        else None,
        # The most common sequence of calls, and each kind of call's mean count per request.
        "dynamodb_calls_typical": list(sequences.most_common(1)[0][0]) if sequences else [],
        "dynamodb_calls_mean": {label: round(n / len(counted), 2) for label, n in operations.items()},
    }


def report(run: Run, requests: int, recorders: int, concurrency: int) -> dict[str, Any]:
    fast = path_report(run, "fast", 201, keyed=False)
    calls = fast["dynamodb_calls"]
    return {
        "requests": requests,
        "sent": len(run.replies),
        "recorders": recorders,
        "concurrency": concurrency,
        "rounds": run.rounds,
        "seconds": round(run.seconds, 1),
        "fast": fast,
        "fast_with_idempotency_key": path_report(run, "fast", 201, keyed=True),
        "queued": path_report(run, "queued", 202, keyed=False),
        "cleanup_failures": run.cleanup_failures,
        "target_dynamodb_calls_per_assignment": TARGET_CALLS_PER_ASSIGNMENT,
        "target_met": calls is not None and calls["max"] <= TARGET_CALLS_PER_ASSIGNMENT,
    }


def as_text(summary: dict[str, Any]) -> str:
    lines = [
        f"POST /v1/requests: {summary['sent']} requests, {summary['recorders']} recorders,"
        f" concurrency {summary['concurrency']}, {summary['rounds']} rounds in {summary['seconds']} s",
        "",
        "| path | answered | sent | errors | error rate | p50 ms | p99 ms | max ms"
        " | DynamoDB calls min / median / max |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    titles = (
        ("fast", "fast (201)"),
        ("fast_with_idempotency_key", "fast, Idempotency-Key (201)"),
        ("queued", "queued (202)"),
    )
    for key, title in titles:
        p = summary[key]
        calls = p["dynamodb_calls"]
        counted = f"{calls['min']} / {calls['median']:g} / {calls['max']}" if calls else "-"
        cells = [title, p["count"], p["sent"], p["errors"], f"{100 * p['error_rate']:.1f} %"]
        cells += [_ms(p["p50_ms"]), _ms(p["p99_ms"]), _ms(p["max_ms"]), counted]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    lines.append("")
    for key, title in titles[:2]:
        typical = summary[key]["dynamodb_calls_typical"]
        lines.append(f"{title}, DynamoDB calls in order: {', '.join(typical) if typical else '-'}")
    means = ", ".join(f"{k} {v:g}" for k, v in summary["queued"]["dynamodb_calls_mean"].items())
    lines.append(f"queued (202), DynamoDB calls per request on average: {means or '-'}")
    calls = summary["fast"]["dynamodb_calls"]
    verdict = "met" if summary["target_met"] else "not met"
    most = calls["max"] if calls else "-"
    lines.append(
        f"target: at most {summary['target_dynamodb_calls_per_assignment']} DynamoDB calls per fast-path"
        f" assignment; at most {most} counted: {verdict}"
    )
    return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim.bench_requests",
        description="Latency and DynamoDB calls of POST /v1/requests on the local stack (loopback, moto).",
    )
    parser.add_argument("--requests", type=int, default=200, help="requests to send in all (default 200)")
    parser.add_argument("--recorders", type=int, default=20, help="idle recorders, re-idled each round (default 20)")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight at once (default 1)")
    parser.add_argument(
        "--max-seconds", type=float, default=300.0, help="start no new round after this long (default 300)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    args = parser.parse_args(argv)
    if not 1 <= args.requests <= 5000:
        parser.error("--requests must be from 1 to 5000")
    if not 1 <= args.recorders <= 100:
        parser.error("--recorders must be from 1 to 100")
    if not 1 <= args.concurrency <= 64:
        parser.error("--concurrency must be from 1 to 64")
    if not 0 < args.max_seconds <= 3600:
        parser.error("--max-seconds must be above 0 and at most 3600")
    result = run(args.requests, args.recorders, args.concurrency, args.max_seconds)
    summary = report(result, args.requests, args.recorders, args.concurrency)
    print(json.dumps(summary, indent=2) if args.json else as_text(summary))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
