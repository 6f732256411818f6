"""`python -m agent [--config PATH]`: run the agent until SIGTERM or SIGINT.

`python -m agent [--config PATH] spool list|show|retry|set-aside ...`: an operator's look at the spool, and
the decisions on it (agent.spool_cli), with the same config file as the service."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

from agent import log as agent_log
from agent import spool_cli
from agent.agent import Agent
from agent.config import DEFAULT_CONFIG_PATH, ConfigError, load_config

EXIT_CONFIG = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jibri-agent", description="Report Jibri's status to the autoscaler.")
    parser.add_argument("--config", help=f"INI file with an [agent] section (default {DEFAULT_CONFIG_PATH})")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", help="none: run the agent")
    spool_cli.configure(
        commands.add_parser(
            "spool",
            help="list, show, retry or set aside spooled sessions (run as root)",
            description="Look at the agent's spool, retry a session, or set one aside (see README).",
        )
    )
    args = parser.parse_args(argv)
    if args.command == "spool":
        return spool_cli.run(args)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"jibri-agent: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    agent_log.configure(config.log_level)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    Agent(config).run(stop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
