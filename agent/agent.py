"""The agent's loop: poll Jibri, keep the instance protected while it matters, report, act on the reply."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import boto3

from agent.aws import AutoScaling, NotInGroup, instance_session
from agent.backoff import Backoff
from agent.config import AgentConfig
from agent.imds import Imds
from agent.jibri import CommandStarter, JibriClient, JibriHealth
from agent.log import UTC, get_logger, set_instance_id
from agent.protection import ProtectionKeeper
from agent.reporter import Reply, Reporter, ReportRejected, StatusReport, TransientReportError
from agent.webhook import WebhookServer

log = get_logger("agent")

REPORT_BACKOFF_BASE_SECONDS = 1.0
REPORT_BACKOFF_CAP_SECONDS = 60.0
# Protection is what keeps a recording alive through a scale-in, so it is retried sooner than reports.
PROTECTION_BACKOFF_CAP_SECONDS = 15.0


def _utc_now() -> datetime:
    return datetime.now(UTC)


def no_pending_uploads() -> int:
    return 0


@dataclass(frozen=True)
class _Identity:
    instance_id: str
    region: str
    asg_name: str


class Agent:
    """Build with its config and optional fakes, then `run(stop)` (or `setup()` and `tick()` step by step)."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        session: boto3.Session | None = None,
        jibri_starter: Callable[[], None] | None = None,
        pending_uploads: Callable[[], int] = no_pending_uploads,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utc_now,
        rng: Callable[[], float] = random.random,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self._session = session
        self._start_jibri = jibri_starter or CommandStarter(config.jibri_start_command)
        self._pending_uploads_hook = pending_uploads
        self._clock = clock
        self._now = now
        self._sleep = sleep
        self._wake = threading.Event()
        self._jibri = JibriClient(config.jibri_health_url, config.jibri_internal_url, config.request_timeout_seconds)
        host, port = config.webhook_address
        self._webhook = WebhookServer(host, port, self._on_webhook)
        self._report_backoff = Backoff(REPORT_BACKOFF_BASE_SECONDS, REPORT_BACKOFF_CAP_SECONDS, rng)
        self._protection_backoff = Backoff(1.0, PROTECTION_BACKOFF_CAP_SECONDS, rng)
        self._setup_backoff = Backoff(REPORT_BACKOFF_BASE_SECONDS, REPORT_BACKOFF_CAP_SECONDS, rng)
        self._identity: _Identity | None = None
        self._reporter: Reporter | None = None
        self._protection: ProtectionKeeper | None = None
        self._last_reported: tuple[str, str, int] | None = None
        self._next_report_at = 0.0
        self._retry_report_at: float | None = None
        self._pending_uploads = 0
        self.last_reply: Reply | None = None
        self._drain_wanted = False
        self._drained = False
        self._restart_pending = False
        self._webhook_retry_at = float("-inf")

    # -- what tests and the command line see -------------------------------------------------------------------

    @property
    def instance_id(self) -> str | None:
        return self._identity.instance_id if self._identity else None

    @property
    def asg_name(self) -> str | None:
        return self._identity.asg_name if self._identity else None

    @property
    def protected(self) -> bool | None:
        return self._protection.protected if self._protection else None

    @property
    def webhook_url(self) -> str:
        return self._webhook.url

    def wake(self) -> None:
        self._wake.set()

    def setup(self) -> None:
        """Learn who this instance is (IMDS), its group and protection, and start listening for Jibri's webhook."""
        if self._identity is not None:
            return
        timeout = self.config.request_timeout_seconds
        imds = Imds(self.config.imds_url, timeout)
        instance_id = imds.instance_id()
        set_instance_id(instance_id)
        region = self.config.region or imds.region()
        session = self._session or instance_session(self.config.imds_url, region, timeout)
        autoscaling = AutoScaling.from_session(session, instance_id, region, self.config.aws_endpoint_url, timeout)
        protected: bool | None
        try:
            membership = autoscaling.membership()
            asg_name, protected = membership.asg_name, membership.protected
        except NotInGroup:
            if not self.config.asg_name:
                raise
            asg_name, protected = self.config.asg_name, None
        if self.config.asg_name and self.config.asg_name != asg_name:
            log.warning(
                "asg_name %s is set but the instance is in %s; using the setting", self.config.asg_name, asg_name
            )
            asg_name, protected = self.config.asg_name, None
        self._protection = ProtectionKeeper(autoscaling, asg_name, protected, self._protection_backoff, self._clock)
        self._reporter = Reporter(self.config.api_url, instance_id, region, session.get_credentials, timeout)
        self._identity = _Identity(instance_id, region, asg_name)
        self._ensure_webhook()
        log.info(
            "agent started",
            extra={
                "asg_name": asg_name,
                "region": region,
                "protected": protected,
                "api_url": self._reporter.url,
                "target_lifecycle_state": _quietly(imds.target_lifecycle_state),
            },
        )

    def close(self) -> None:
        self._webhook.stop()

    def run(self, stop: threading.Event) -> None:
        """Loop until `stop` is set; no single failure ends it."""
        threading.Thread(target=self._wake_on, args=(stop,), name="agent-stop", daemon=True).start()
        try:
            while not stop.is_set():
                delay = self._tick_safely()
                if stop.is_set():
                    break
                self._pause(delay)
        finally:
            self.close()
            log.info("agent stopped")

    def tick(self) -> float:
        """One round: poll, protect, report when due, act on the reply. Returns the seconds until the next round."""
        self.setup()
        self._ensure_webhook()
        health = self._jibri.health()
        pending = self._read_pending_uploads()
        # Before any report that says BUSY, so the instance is protected by the time anyone learns it is busy.
        self._settle_protection(health, pending)
        if self._report_due(health, pending):
            reply = self._report(health, pending)
            if reply is not None:
                self._settle_protection(health, pending)
                self._take_drain_order(reply)
        self._drive_drain(health)
        return self._next_delay()

    # -- the round's parts -----------------------------------------------------------------------------------

    def _tick_safely(self) -> float:
        try:
            delay = self.tick()
        except Exception as exc:
            delay = self._setup_backoff.next_delay()
            if self._identity is None:
                log.error("could not start (%s: %s); retrying in %.1f s", type(exc).__name__, exc, delay)
            else:
                log.exception("round failed; retrying in %.1f s", delay)
            return delay
        self._setup_backoff.reset()
        return delay

    def _ensure_webhook(self) -> None:
        if self._webhook.running or self._clock() < self._webhook_retry_at:
            return
        try:
            self._webhook.start()
        except OSError as exc:
            # Polling still sees every change, only later: report on, and try to listen again now and then.
            self._webhook_retry_at = self._clock() + self.config.report_interval_seconds
            log.error(
                "cannot listen for Jibri's webhook on %s (%s); relying on polling", self.config.webhook_listen, exc
            )
        else:
            log.info("listening for Jibri's webhook", extra={"webhook": self._webhook.url})

    def _read_pending_uploads(self) -> int:
        try:
            count = int(self._pending_uploads_hook())
        except Exception:
            # Keep the last count: a broken hook must not make pending uploads look finished.
            log.exception("pending uploads hook failed; keeping %d", self._pending_uploads)
            return self._pending_uploads
        self._pending_uploads = max(0, count)
        return self._pending_uploads

    def _settle_protection(self, health: JibriHealth, pending: int) -> None:
        protection = self._protection
        assert protection is not None
        wanted = self.last_reply.protect if self.last_reply else None
        if health.busy_status == "BUSY" or pending > 0:
            protection.ensure(True, "Jibri is BUSY" if health.busy_status == "BUSY" else "uploads pending")
        elif wanted is True:
            protection.ensure(True, "the control plane asked")
        elif wanted is False and protection.protected is not False:
            # Look again right before letting go: Jibri may have taken a recording since this round's poll.
            fresh = self._jibri.health()
            if fresh.busy_status == "BUSY" or self._read_pending_uploads() > 0:
                protection.ensure(True, "Jibri is BUSY")
            else:
                protection.ensure(False, "the control plane released it and Jibri is not busy")

    def _report_due(self, health: JibriHealth, pending: int) -> bool:
        now = self._clock()
        if self._retry_report_at is not None:
            return now >= self._retry_report_at
        if (health.busy_status, health.health, pending) != self._last_reported:
            return True
        return now >= self._next_report_at

    def _report(self, health: JibriHealth, pending: int) -> Reply | None:
        assert self._reporter is not None
        key = (health.busy_status, health.health, pending)
        report = StatusReport(health.busy_status, health.health, pending, self._now(), health.raw)
        try:
            reply = self._reporter.send(report)
        except TransientReportError as exc:
            delay = self._report_backoff.next_delay()
            self._retry_report_at = self._clock() + delay
            self.last_reply = None  # the control plane's wishes are unknown until it answers again
            log.warning("status report failed (%s); retrying in %.1f s", exc, delay, extra={"busy_status": key[0]})
            return None
        except ReportRejected as exc:
            self._finish_report(key)
            self.last_reply = None
            log.error(
                "status API rejected the report with HTTP %d %s: %s. This is a configuration problem "
                "(api_url, the instance role, or the recorder's registration); reporting again in %.0f s",
                exc.status,
                exc.code,
                exc.message,
                self.config.report_interval_seconds,
                extra={"http_status": exc.status, "error_code": exc.code, "api_url": self._reporter.url},
            )
            return None
        changed = key != self._last_reported or reply != self.last_reply
        self._finish_report(key)
        self._report_backoff.reset()
        self.last_reply = reply
        (log.info if changed else log.debug)(
            "reported %s/%s, %d pending upload(s); control plane says state=%s protect=%s drain=%s",
            key[0],
            key[1],
            pending,
            reply.state,
            reply.protect,
            reply.drain,
        )
        return reply

    def _finish_report(self, key: tuple[str, str, int]) -> None:
        self._last_reported = key
        self._retry_report_at = None
        self._next_report_at = self._clock() + self.config.report_interval_seconds

    def _take_drain_order(self, reply: Reply) -> None:
        if reply.drain:
            self._drain_wanted = True
            return
        self._drain_wanted = False
        if self._drained:
            # Jibri cannot take back a graceful shutdown: it leaves anyway, so it is started again once gone.
            self._drained = False
            self._restart_pending = True
            log.info("drain withdrawn; Jibri will be started again once it has left")

    def _drive_drain(self, health: JibriHealth) -> None:
        if self._drain_wanted and not self._drained and not health.offline:
            try:
                self._jibri.graceful_shutdown()
            except Exception as exc:
                log.warning("could not ask Jibri to shut down gracefully (%s); retrying next round", exc)
            else:
                self._drained = True
                log.info("asked Jibri to shut down gracefully (drain)", extra={"busy_status": health.busy_status})
        if self._restart_pending and health.offline:
            self._restart_pending = False
            try:
                self._start_jibri()
            except Exception as exc:
                log.error("could not start Jibri again after the drain was withdrawn: %s", exc)
            else:
                log.info("started Jibri again after the drain was withdrawn")

    def _next_delay(self) -> float:
        now = self._clock()
        deadlines = [now + self.config.poll_interval_seconds]
        deadlines.append(self._retry_report_at if self._retry_report_at is not None else self._next_report_at)
        if self._protection is not None and self._protection.retry_at is not None:
            deadlines.append(self._protection.retry_at)
        return max(0.0, min(deadlines) - now)

    def _pause(self, delay: float) -> None:
        if self._sleep is not None:
            self._sleep(delay)
        else:
            self._wake.wait(delay)
        self._wake.clear()

    def _wake_on(self, stop: threading.Event) -> None:
        stop.wait()
        self._wake.set()

    def _on_webhook(self, body: dict[str, Any]) -> None:
        status = body.get("status")
        busy = status.get("busyStatus") if isinstance(status, dict) else None
        log.debug("Jibri webhook", extra={"jibri_id": body.get("jibriId"), "jibri_busy_status": busy})
        self._wake.set()


def _quietly(read: Callable[[], str]) -> str | None:
    try:
        return read()
    except Exception:
        return None
