"""The agent's loop: poll Jibri, keep the instance protected while it matters, report, act on the reply."""

from __future__ import annotations

import os
import random
import re
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
from agent.imds import Imds, ImdsError
from agent.jibri import CommandStarter, JibriClient, JibriHealth, JibriTimeout
from agent.log import UTC, get_logger, set_instance_id
from agent.protection import ProtectionKeeper
from agent.reporter import Reply, Reporter, ReportRejected, StatusReport, TransientReportError
from agent.spool import Spool
from agent.uploader import Uploader
from agent.webhook import WebhookServer

log = get_logger("agent")

REPORT_BACKOFF_BASE_SECONDS = 1.0
REPORT_BACKOFF_CAP_SECONDS = 60.0
# Protection is what keeps a recording alive through a scale-in, so it is retried sooner than reports.
PROTECTION_BACKOFF_CAP_SECONDS = 15.0
IN_SERVICE = "InService"
WARMED_PREFIX = "Warmed:"
# What the control plane accepts as target_lifecycle_state; anything else is left out so the report is not refused.
_LIFECYCLE_STATE = re.compile(r"^[A-Za-z]+(:[A-Za-z]+)*$")
_MAX_LIFECYCLE_STATE_CHARS = 64


def _utc_now() -> datetime:
    return datetime.now(UTC)


def no_pending_uploads() -> int:
    return 0


@dataclass(frozen=True)
class _Identity:
    instance_id: str
    region: str
    asg_name: str
    private_ip: str | None = None


class Agent:
    """Build with its config and optional fakes, then `run(stop)` (or `setup()` and `tick()` step by step)."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        session: boto3.Session | None = None,
        jibri_starter: Callable[[], None] | None = None,
        jibri_restarter: Callable[[], None] | None = None,
        pending_uploads: Callable[[], int] | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = _utc_now,
        rng: Callable[[], float] = random.random,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.config = config
        self._session = session
        self._start_jibri = jibri_starter or CommandStarter(config.jibri_start_command)
        self._restart_jibri = jibri_restarter or CommandStarter(config.jibri_restart_command)
        # Recordings the finalize script spooled count as pending until the control plane confirms them.
        self._spool = Spool(config.spool_dir) if config.upload_enabled else None
        # Of the pending uploads, those waiting for an operator, from the same scan; None: not known.
        self._failed_uploads: int | None = None
        if pending_uploads is None:
            pending_uploads = self._scan_spool if self._spool is not None else no_pending_uploads
        self._pending_uploads_hook = pending_uploads
        self._uploader_thread: threading.Thread | None = None
        self._uploader: Uploader | None = None
        self._clock = clock
        self._now = now
        self._sleep = sleep
        self._wake = threading.Event()
        self._jibri = JibriClient(
            config.jibri_health_url,
            config.jibri_internal_url,
            config.request_timeout_seconds,
            http_url=config.jibri_http_base,
        )
        host, port = config.webhook_address
        self._webhook = WebhookServer(host, port, self._on_webhook)
        self._report_backoff = Backoff(REPORT_BACKOFF_BASE_SECONDS, REPORT_BACKOFF_CAP_SECONDS, rng)
        self._protection_backoff = Backoff(1.0, PROTECTION_BACKOFF_CAP_SECONDS, rng)
        self._setup_backoff = Backoff(REPORT_BACKOFF_BASE_SECONDS, REPORT_BACKOFF_CAP_SECONDS, rng)
        self._identity: _Identity | None = None
        self._imds: Imds | None = None
        self._reporter: Reporter | None = None
        self._protection: ProtectionKeeper | None = None
        self._last_reported: tuple[str, str, int, str | None] | None = None
        self._next_report_at = 0.0
        self._retry_report_at: float | None = None
        self._pending_uploads = 0
        self.last_reply: Reply | None = None
        self._drain_wanted = False
        self._drained = False
        self._restart_pending = False  # Jibri is to be started once it is gone (see _drive_start)
        self._start_reason = ""
        self._webhook_retry_at = float("-inf")
        # The last target lifecycle state IMDS answered: a round where IMDS is silent changes no decision.
        self._lifecycle: str | None = None
        self._lifecycle_unread = False
        self._pool_shutdown_asked = False  # asked since Jibri was last seen gone
        self._held_for_pool = False  # the agent took Jibri out of service for the warm pool
        self._stop_asked = False  # stopService sent for the current recording
        self._expired_handled = False  # this EXPIRED episode was acted on (or left to the control plane)
        self._expired_waiting = False

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

    @property
    def target_lifecycle_state(self) -> str | None:
        return self._lifecycle

    def _scan_spool(self) -> int:
        """Pending uploads, and the failed ones among them, from one read of the spool."""
        assert self._spool is not None
        self._failed_uploads = None  # unknown should the scan fail: the report then leaves it out
        scan = self._spool.scan()
        self._failed_uploads = scan.failed
        return scan.pending

    def _failed_of(self, pending: int) -> int | None:
        """Spooled sessions waiting for an operator (SpoolScan.failed): refused, with files no upload covers,
        recordings_dir out of reach, confirmed but not deleted, or an entry that cannot be read.

        Read in the scan that counted `pending` (clamped to it, should a later look have changed the count);
        None when the spool could not be read, which must never stop the report itself."""
        if self._spool is None or self._failed_uploads is None:
            return None
        return min(self._failed_uploads, pending)

    def _disk_free(self) -> int | None:
        """Free bytes where recordings land (the recordings directory, else the spool's file system)."""
        for path in (self.config.recordings_dir, self.config.spool_dir, "/"):
            if path and os.path.isdir(path):
                try:
                    stats = os.statvfs(path)
                except OSError:
                    return None
                return stats.f_bavail * stats.f_frsize
        return None

    def wake(self) -> None:
        """Report now, and look at the spool now (a recording may just have been handed off)."""
        self._wake.set()
        if self._uploader is not None:
            self._uploader.wake()

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
        self._identity = _Identity(instance_id, region, asg_name, _quietly(imds.local_ipv4))
        self._imds = imds
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
                self._ensure_uploader(stop)
                if stop.is_set():
                    break
                self._pause(delay)
        finally:
            self.close()
            if self._uploader_thread is not None:
                self._uploader_thread.join(timeout=self.config.request_timeout_seconds)
            log.info("agent stopped")

    def _ensure_uploader(self, stop: threading.Event) -> None:
        """Once the instance's identity is known, upload spooled recordings in a thread of their own."""
        if self._uploader_thread is not None or self._spool is None or self._reporter is None:
            return
        # A finished upload changes what the next report says: it wakes the reporting loop only.
        uploader = Uploader(self.config, self._spool, self._reporter.api.call, on_change=self._wake.set)
        self._uploader = uploader
        self._uploader_thread = threading.Thread(target=uploader.run, args=(stop,), name="uploader", daemon=True)
        self._uploader_thread.start()

    def tick(self) -> float:
        """One round: poll, protect, report when due, act on the reply. Returns the seconds until the next round."""
        self.setup()
        self._ensure_webhook()
        health = self._jibri.health()
        lifecycle = self._read_lifecycle()
        # Before the report: Jicofo must stop seeing a Jibri bound for the warm pool as soon as possible.
        health = self._keep_out_of_pool(health)
        pending = self._read_pending_uploads()
        # Before any report that says BUSY, so the instance is protected by the time anyone learns it is busy.
        self._settle_protection(health, pending)
        if self._report_due(health, pending, lifecycle):
            reply = self._report(health, pending, lifecycle)
            if reply is not None:
                self._settle_protection(health, pending)
                self._take_drain_order(reply)
        self._drive_drain(health)
        self._drive_stop_recording(health)
        self._drive_expired(health)
        self._drive_start(health)
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

    def _read_lifecycle(self) -> str | None:
        """This round's target lifecycle state, or None when IMDS does not answer it (the report then omits it)."""
        assert self._imds is not None
        try:
            state = self._imds.target_lifecycle_state()
        except ImdsError as exc:
            (log.debug if self._lifecycle_unread else log.warning)("no target lifecycle state from IMDS (%s)", exc)
            self._lifecycle_unread = True
            return None
        if len(state) > _MAX_LIFECYCLE_STATE_CHARS or not _LIFECYCLE_STATE.match(state):
            (log.debug if self._lifecycle_unread else log.warning)(
                "IMDS answered a target lifecycle state that is not Auto Scaling's (%r); leaving it out", state[:80]
            )
            self._lifecycle_unread = True
            return None
        self._lifecycle_unread = False
        if state != self._lifecycle:
            log.info("target lifecycle state is %s", state, extra={"previous": self._lifecycle})
            self._lifecycle = state
            if state == IN_SERVICE and self._held_for_pool:
                self._held_for_pool = False
                self._plan_start("the instance left the warm pool")
        return state

    @property
    def _warmed(self) -> bool:
        return (self._lifecycle or "").startswith(WARMED_PREFIX)

    def _keep_out_of_pool(self, health: JibriHealth) -> JibriHealth:
        """While the instance is bound for the warm pool, Jibri leaves the brewery; returns the health to report."""
        if health.offline:
            self._pool_shutdown_asked = False  # should something start it again while warmed, it is asked again
            return health
        if not self._warmed or self._pool_shutdown_asked:
            return health
        try:
            self._jibri.graceful_shutdown()
        except Exception as exc:
            log.warning("could not ask Jibri to shut down gracefully for the warm pool (%s); retrying next round", exc)
            return health
        self._held_for_pool = True
        log.info(
            "asked Jibri to shut down gracefully: the instance is bound for the warm pool",
            extra={"target_lifecycle_state": self._lifecycle, "busy_status": health.busy_status},
        )
        # An idle Jibri leaves at once: look again so that this round already reports it gone.
        after = self._jibri.health()
        self._pool_shutdown_asked = not after.offline
        return after

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
            elif fresh.busy_status in ("IDLE", "EXPIRED"):
                protection.ensure(False, "the control plane released it and Jibri is not busy")
            # Jibri not answering may be a slow check mid-recording: keep the protection. A drained
            # instance keeps it too; the control plane's termination does not need it lifted.

    def _report_due(self, health: JibriHealth, pending: int, lifecycle: str | None) -> bool:
        now = self._clock()
        if self._retry_report_at is not None:
            return now >= self._retry_report_at
        if (health.busy_status, health.health, pending, lifecycle) != self._last_reported:
            return True
        return now >= self._next_report_at

    def _report(self, health: JibriHealth, pending: int, lifecycle: str | None) -> Reply | None:
        assert self._reporter is not None
        key = (health.busy_status, health.health, pending, lifecycle)
        private_ip = self._identity.private_ip if self._identity else None
        report = StatusReport(
            health.busy_status,
            health.health,
            pending,
            self._now(),
            health.raw,
            lifecycle,
            private_ip,
            disk_free_bytes=self._disk_free(),
            failed_uploads=self._failed_of(pending),
        )
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
            "reported %s/%s, %d pending upload(s), target lifecycle state %s; "
            "control plane says state=%s protect=%s drain=%s stop_recording=%s",
            key[0],
            key[1],
            pending,
            lifecycle or "unknown",
            reply.state,
            reply.protect,
            reply.drain,
            reply.stop_recording,
        )
        return reply

    def _finish_report(self, key: tuple[str, str, int, str | None]) -> None:
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
            self._plan_start("the drain was withdrawn")

    def _drive_drain(self, health: JibriHealth) -> None:
        if self._drain_wanted and not self._drained and not health.offline:
            try:
                self._jibri.graceful_shutdown()
            except Exception as exc:
                log.warning("could not ask Jibri to shut down gracefully (%s); retrying next round", exc)
            else:
                self._drained = True
                log.info("asked Jibri to shut down gracefully (drain)", extra={"busy_status": health.busy_status})

    def _drive_stop_recording(self, health: JibriHealth) -> None:
        if health.busy_status in ("IDLE", "EXPIRED"):
            self._stop_asked = False  # that recording is over; a stop order applies afresh to the next one
            return
        reply = self.last_reply
        if health.busy_status != "BUSY" or reply is None or not reply.stop_recording or self._stop_asked:
            return
        try:
            self._jibri.stop_service()
        except JibriTimeout as exc:
            # Jibri may hold the call while it stops the recording: asking again could cut the next one.
            log.warning("%s; assuming it is stopping the recording and not asking again", exc)
        except Exception as exc:
            log.warning("could not ask Jibri to stop its recording (%s); retrying next round", exc)
            return
        else:
            log.warning(
                "asked Jibri to stop its recording now: the instance is about to be interrupted, and the finalize "
                "script hands the files off",
                extra={"pending_uploads": self._pending_uploads},
            )
        self._stop_asked = True

    def _drive_expired(self, health: JibriHealth) -> None:
        """Single-use mode leaves Jibri EXPIRED after each recording: restart it, or leave it to the control plane."""
        if health.busy_status in ("IDLE", "BUSY"):
            self._expired_handled = self._expired_waiting = False  # Jibri is fresh again: a new episode may come
            return
        if health.busy_status != "EXPIRED" or self._expired_handled:
            return
        if self.config.expired_action == "replace":
            self._expired_handled = True
            log.info(
                "Jibri is EXPIRED; leaving it to the control plane to replace the instance (expired_action = replace)"
            )
            return
        if self._warmed or self._drain_wanted:
            return  # leaving service anyway: a restart would only put it back in the brewery
        # Restarting the unit kills what runs in its cgroup, the upload the finalize script handed off included.
        if self._read_pending_uploads() > 0:
            if not self._expired_waiting:
                self._expired_waiting = True
                log.info("Jibri is EXPIRED; it is restarted once the pending uploads are done")
            return
        self._expired_handled = True
        try:
            self._restart_jibri()
        except Exception as exc:
            log.error("could not restart the EXPIRED Jibri (the control plane replaces it): %s", exc)
        else:
            log.info("restarted Jibri: single-use mode had left it EXPIRED after its recording")

    def _plan_start(self, reason: str) -> None:
        self._restart_pending = True
        self._start_reason = reason
        log.info("%s; Jibri will be started again once it has left", reason)

    def _drive_start(self, health: JibriHealth) -> None:
        # Never into a warm-bound instance, nor while the control plane wants it gone: the plan waits for both.
        if not self._restart_pending or not health.offline or self._warmed or self._drain_wanted:
            return
        self._restart_pending = False
        try:
            self._start_jibri()
        except Exception as exc:
            log.error("could not start Jibri again (%s): %s", self._start_reason, exc)
        else:
            log.info("started Jibri again: %s", self._start_reason)

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
