"""`make demo`: the control plane on an embedded AWS (moto), no account, no credentials.

Simulated Jibri instances run the real agent against the real app (behind the
local gateway, SigV4 checked) with moto as DynamoDB and Auto Scaling; the
evaluator Lambda is invoked with EventBridge's scheduled event. The story:
recorders register, every one starts recording and is protected first, the
evaluator scales out, the new instances register, a stranger is refused, the
recordings end, the surplus is drained (idle recorders only) and terminated
with desired capacity decremented.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable

from chalicelib import observability
from sim.client import signed_call
from sim.stack import LocalStack

HOLD_SECONDS = 10


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sim.demo", description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--recorders", type=int, default=2, help="how many Jibri instances at first (default 2)")
    parser.add_argument("--verbose", action="store_true", help="also print the control plane's and agents' logs")
    args = parser.parse_args(argv)
    if not 1 <= args.recorders <= 8:
        parser.error("--recorders must be from 1 to 8")
    if not args.verbose:
        os.environ["POWERTOOLS_METRICS_DISABLED"] = "true"
        observability.logger.setLevel("WARNING")

    print("Starting moto (server mode), the registry table, an Auto Scaling group and the API on loopback.")
    print("Time runs at 1x; the evaluator runs when the demo says so (every minute when deployed), and the")
    print(f"scale-in hold time is shortened to {HOLD_SECONDS} s so that scale-in shows within the demo.\n")
    with LocalStack(
        group_name="jibri-demo",
        group_size=args.recorders,
        report_interval_seconds=2.0,
        agent_log_level="INFO" if args.verbose else "WARNING",
        settings={"SCALE_IN_HOLD_SECONDS": str(HOLD_SECONDS), "MIN_IDLE": "1", "OFFLINE_CONFIRM_SECONDS": "0"},
    ) as stack:
        assert stack.gateway is not None
        stack.sync_recorders()

        step("Agents start and report; the control plane registers each group member")
        wait(lambda: stack.pool()["counts"]["idle"] == args.recorders)
        show(stack)

        busy = sorted(stack.recorders)[: args.recorders]
        step(f"Jicofo hands all {len(busy)} recorders a recording; each agent protects its instance first")
        for instance_id in busy:
            stack.recorders[instance_id].jibri.set_busy_status("BUSY")
        wait(lambda: stack.pool()["counts"]["busy"] == len(busy))
        show(stack)

        step("The evaluator runs: no idle recorder left, so it raises desired capacity for the buffer")
        stack.evaluate()
        started, _ = stack.sync_recorders()
        print(f"  {decision_line(stack)}")
        print(f"  new instances booted with the agent: {', '.join(started) or 'none'}")
        wait(lambda: stack.pool()["counts"]["idle"] >= len(started))
        show(stack)

        step("An agent reports as another instance: refused")
        creds = stack.issuer.role_session(stack.agent_role, busy[-1])
        status, body = signed_call(
            "POST",
            f"{stack.gateway.url}/v1/recorders/{busy[0]}/status",
            creds,
            {"busy_status": "IDLE", "health": "HEALTHY", "pending_uploads": 0, "sent_at": _now_iso()},
        )
        print(f"  HTTP {status}: {body['error']['message']}\n")

        step("The recordings end: Jibri IDLE, protection cleared; the pool now has a surplus")
        for instance_id in busy:
            stack.recorders[instance_id].jibri.set_busy_status("IDLE")
        wait(lambda: stack.pool()["counts"]["busy"] == 0)
        wait(lambda: not any(stack.protected(i) for i in busy))
        show(stack)

        step(f"After {HOLD_SECONDS} s idle, the evaluator drains the surplus: idle recorders only")
        time.sleep(HOLD_SECONDS)
        stack.evaluate()
        print(f"  {decision_line(stack)}")
        wait(
            lambda: (
                stack.pool()["counts"]["draining"] > 0
                and all(r["busy_status"] == "OFFLINE" for r in stack.pool(state="draining")["recorders"])
            )
        )
        show(stack)

        step("Their agents shut Jibri down gracefully and report OFFLINE; the next evaluation terminates them")
        stack.evaluate()
        print(f"  {decision_line(stack)}")
        _, stopped = stack.sync_recorders()
        print(f"  terminated by the control plane (desired capacity decremented): {', '.join(stopped) or 'none'}")
        show(stack)

        step("The next evaluation sees them gone from the group and keeps only a tombstone")
        stack.evaluate()
        show(stack)
    print("Done. Everything above ran on this machine: moto as AWS, the Chalice app behind a local API gateway.")
    return 0


def step(title: str) -> None:
    print(f"== {title}")


def decision_line(stack: LocalStack) -> str:
    latest = stack.pool()["decisions"][0]
    acted = "".join(f"; {what} {', '.join(latest[what])}" for what in ("drained", "terminated") if latest[what])
    return f"decision: desired {latest['previous_desired']} -> {latest['desired']}; {latest['reason']}{acted}"


def show(stack: LocalStack) -> None:
    pool = stack.pool(limit="100")
    counts = ", ".join(f"{state} {n}" for state, n in pool["counts"].items() if n)
    group = pool["group"]
    print(f"  group {group['name']}: desired {group['desired']} (min {group['min']}, max {group['max']}); {counts}")
    for recorder in pool["recorders"]:
        protected = "protected" if stack.protected(recorder["instance_id"]) else "-"
        print(f"  {recorder['instance_id']}  {recorder['state']:<11} jibri {recorder['busy_status']:<8} {protected}")
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
