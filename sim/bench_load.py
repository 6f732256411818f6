"""Load on the local stack: the request endpoint and the status endpoint at a sustained rate.

Loopback only, bounded in count and in time. Each endpoint gets `--rate` calls per second
for `--seconds` (open loop: calls start on schedule whether or not earlier ones finished,
with at most `--workers` in flight), and the run reports p50/p99 latency and the error rate.
Queued requests are cancelled as they come so the queue stays short.

    .venv/bin/python -m sim.bench_load --rate 20 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sim import tokens
from sim.client import sign_headers
from sim.stack import LocalStack

SECRET = "a-load-test-secret-of-at-least-32-bytes"
JWT = {
    "JWT_ALGORITHM": "HS256",
    "JWT_ISSUER": "jitsi",
    "JWT_AUDIENCE": "jibri-autoscaler",
    "JWT_SECRET_PARAMETER": "/jibri/load-secret",
}
MAX_CALLS = 5_000
MAX_SECONDS = 120


@dataclass
class Samples:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    statuses: dict[int, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, status: int, seconds: float) -> None:
        with self.lock:
            self.latencies.append(seconds)
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status >= 400:
                self.errors += 1

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        count = len(ordered)
        return {
            "calls": count,
            "p50_ms": round(1000 * statistics.median(ordered), 1) if ordered else None,
            "p99_ms": round(1000 * ordered[min(count - 1, int(0.99 * count))], 1) if ordered else None,
            "error_rate": round(self.errors / count, 4) if count else None,
            "statuses": dict(sorted(self.statuses.items())),
        }


def _send(url: str, method: str, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body or None, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


def run(rate: float, seconds: float, workers: int, group_size: int) -> dict[str, Any]:
    calls = int(rate * seconds)
    if calls > MAX_CALLS or seconds > MAX_SECONDS:
        raise SystemExit(f"bounded: at most {MAX_CALLS} calls per endpoint and {MAX_SECONDS} s")
    with LocalStack(group_name="jibri-load", group_size=group_size, settings=JWT) as stack:
        stack.session.client("ssm").put_parameter(Name="/jibri/load-secret", Value=SECRET, Type="SecureString")
        assert stack.gateway is not None
        base = stack.gateway.url
        token = tokens.hs256(tokens.claims(lifetime=3600), SECRET)
        jitsi = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        agents = [(i, stack.issuer.role_session(stack.agent_role, i)) for i in stack.instance_ids]
        requests_seen, reports_seen = Samples(), Samples()

        def ask(n: int) -> None:
            body = json.dumps({"room": f"load-{n}", "kind": "recording"}).encode()
            started = time.perf_counter()
            status, reply = _send(f"{base}/v1/requests", "POST", jitsi, body)
            requests_seen.add(status, time.perf_counter() - started)
            if isinstance(reply, dict) and reply.get("request_id"):  # give the recorder or the place back
                _send(f"{base}/v1/requests/{reply['request_id']}", "DELETE", jitsi, b"")

        def report(n: int) -> None:
            instance_id, creds = agents[n % len(agents)]
            sent_at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1e6) % 1_000_000:06d}Z"
            body = json.dumps(
                {"busy_status": "IDLE", "health": "HEALTHY", "pending_uploads": n % 2, "sent_at": sent_at}
            )
            url = f"{base}/v1/recorders/{instance_id}/status"
            headers = sign_headers("POST", url, creds, body.encode())
            started = time.perf_counter()
            status, _ = _send(url, "POST", headers, body.encode())
            reports_seen.add(status, time.perf_counter() - started)

        for n in range(len(agents)):  # every agent known before the clock starts
            report(n)
        reports_seen.__init__()  # type: ignore[misc]
        begin = time.perf_counter()
        with ThreadPoolExecutor(max_workers=workers) as pool:
            for n in range(calls):
                delay = begin + n / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(ask, n)
                pool.submit(report, n)
        elapsed = time.perf_counter() - begin
        return {
            "rate_per_endpoint": rate,
            "seconds": round(elapsed, 1),
            "group_size": group_size,
            "requests": requests_seen.summary(),
            "status_reports": reports_seen.summary(),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=20.0, help="calls per second per endpoint")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=10)
    args = parser.parse_args()
    print(json.dumps(run(args.rate, args.seconds, args.workers, args.group_size), indent=2))


if __name__ == "__main__":
    main()
