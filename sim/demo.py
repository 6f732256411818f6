"""`make demo`: the control plane on an embedded AWS (moto), no account, no credentials.

Three simulated Jibri instances run the real agent against the real app (behind
the local gateway, SigV4 checked) with moto as DynamoDB and Auto Scaling. The
story: recorders register, one starts recording and is protected from scale-in
before the control plane hears of it, one is drained the way scale-in drains,
a stranger is refused, and the recording ends.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

from chalicelib import observability
from chalicelib.registry import transition
from chalicelib.states import RecorderState
from sim.client import signed_call
from sim.stack import LocalStack


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.demo", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--recorders", type=int, default=3, help="how many Jibri instances (default 3)")
    parser.add_argument("--verbose", action="store_true", help="also print the control plane's and agents' logs")
    args = parser.parse_args(argv)
    if not 2 <= args.recorders <= 10:
        parser.error("--recorders must be from 2 to 10")
    if not args.verbose:
        os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
        observability.logger.setLevel("WARNING")

    print("Starting moto (server mode), the registry table, an Auto Scaling group and the API on loopback;")
    print("time runs at 1x real time (agents report every 2 s, poll Jibri every 0.2 s).\n")
    with LocalStack(
        group_name="jibri-demo",
        group_size=args.recorders,
        report_interval_seconds=2.0,
        agent_log_level="INFO" if args.verbose else "WARNING",
    ) as stack:
        assert stack.gateway is not None
        registry = stack._app_module.runtime.registry
        ids = stack.instance_ids
        recorders = [stack.add_recorder(i) for i in ids]

        step("Agents start and report; the control plane registers each group member", stack)
        wait(lambda: stack.pool()["counts"]["idle"] == len(ids))
        show(stack)

        first, second = recorders[0], recorders[1]
        step(f"Jicofo hands {first.instance_id} a recording: Jibri turns BUSY", stack)
        first.jibri.set_busy_status("BUSY")
        wait(lambda: stack.pool()["counts"]["busy"] == 1)
        show(stack)

        step(f"Scale-in picks idle {second.instance_id}: it is marked draining and its agent shuts Jibri down", stack)
        idle = registry.get(second.instance_id)
        assert idle is not None
        registry.save(idle, transition(idle, RecorderState.DRAINING, time.time()))
        wait(lambda: not second.jibri.running)
        wait(lambda: _busy_status(stack, second.instance_id) == "OFFLINE")
        show(stack)

        step("An agent reports as another instance: refused", stack)
        creds = stack.issuer.role_session(stack.agent_role, ids[-1])
        status, body = signed_call(
            "POST",
            f"{stack.gateway.url}/v1/recorders/{first.instance_id}/status",
            creds,
            {"busy_status": "IDLE", "health": "HEALTHY", "pending_uploads": 0, "sent_at": _now_iso()},
        )
        print(f"  HTTP {status}: {body['error']['message']}\n")

        step(f"The recording on {first.instance_id} ends: Jibri IDLE, protection cleared", stack)
        first.jibri.set_busy_status("IDLE")
        wait(lambda: not stack.protected(first.instance_id))
        wait(lambda: stack.pool()["counts"]["busy"] == 0)
        show(stack)
    print("Done. Everything above ran on this machine: moto as AWS, the Chalice app behind a local API gateway.")
    return 0


def step(title: str, stack: LocalStack) -> None:
    print(f"== {title}")


def show(stack: LocalStack) -> None:
    pool = stack.pool(limit="100")
    counts = ", ".join(f"{state} {n}" for state, n in pool["counts"].items() if n)
    group = pool["group"]
    print(f"  group {group['name']}: desired {group['desired']} (min {group['min']}, max {group['max']}); {counts}")
    for recorder in pool["recorders"]:
        protected = "protected" if stack.protected(recorder["instance_id"]) else "-"
        print(f"  {recorder['instance_id']}  {recorder['state']:<10} jibri {recorder['busy_status']:<8} {protected}")
    print()


def wait(check: Callable[[], bool], seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise SystemExit("demo: the stack did not reach the expected state in time")
        time.sleep(0.1)


def _busy_status(stack: LocalStack, instance_id: str) -> str | None:
    return next(
        (r["busy_status"] for r in stack.pool(limit="100")["recorders"] if r["instance_id"] == instance_id), None
    )


def _now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


if __name__ == "__main__":
    sys.exit(main())
