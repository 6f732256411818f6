"""Wiring: settings, adapters and services, built lazily on first use.

Nothing here touches AWS at import, so a cold start pays only for the clients
the invoked handler uses; tests replace parts with `Runtime(...)`.
"""

from __future__ import annotations

from typing import Any

import boto3
from aws_lambda_powertools.metrics import MetricUnit
from botocore.config import Config

from chalicelib.assignment import AssignmentService
from chalicelib.autoscaling import AutoScaling, Boto3AutoScaling
from chalicelib.bookings import BookingService, BookingStore, DynamoDBBookingStore, booked_between, booked_room
from chalicelib.clock import Clock, SystemClock
from chalicelib.config import Settings
from chalicelib.control import ControlStore, DynamoDBControlStore
from chalicelib.demand import DemandStore, DynamoDBDemandStore
from chalicelib.direct_start import DirectStarter
from chalicelib.dynamodb_registry import DynamoDBRegistry
from chalicelib.evaluator import Evaluator, EvaluatorOptions
from chalicelib.instance_events import InstanceEventService
from chalicelib.lifecycle import LifecycleService
from chalicelib.notifications import NotificationService
from chalicelib.observability import (
    metrics,
    record_alert,
    record_asg_alert,
    record_decision,
    record_pool_health,
    record_recording_complete,
    record_recording_rejected,
    record_transition,
    record_webhook_error,
)
from chalicelib.reconciler import Reconciler
from chalicelib.recording_ready import Announcer
from chalicelib.recording_store import DynamoDBRecordingStore
from chalicelib.recordings import RecordingService, require_configured
from chalicelib.registry import Registry
from chalicelib.s3_storage import S3Storage
from chalicelib.secrets import SecretReader
from chalicelib.status import EvaluateOnBusy, StatusService
from chalicelib.tickets import DynamoDBTicketStore, TicketStore

# Every AWS client: bounded retries with backoff for throttling and transient errors
# (botocore's standard mode), and timeouts well inside a Lambda's run time.
AWS_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 5}, connect_timeout=5, read_timeout=15, tcp_keepalive=True
)
# Presigned part URLs carry the part's SHA-256 as a signed header: that takes SigV4.
S3_CONFIG = AWS_CONFIG.merge(Config(signature_version="s3v4"))


class Runtime:
    def __init__(
        self,
        settings: Settings | None = None,
        registry: Registry | None = None,
        autoscaling: AutoScaling | None = None,
        clock: Clock | None = None,
        demand: DemandStore | None = None,
        control: ControlStore | None = None,
        tickets: TicketStore | None = None,
        bookings: BookingStore | None = None,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._autoscaling = autoscaling
        self._demand = demand
        self._control = control
        self._tickets = tickets
        self._bookings = bookings
        self._secrets: SecretReader | None = None
        self._table: Any = None
        self._s3: Any = None
        self._sns: Any = None
        self.clock: Clock = clock or SystemClock()

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    @property
    def table(self) -> Any:
        if self._table is None:
            self._table = boto3.resource("dynamodb", config=AWS_CONFIG).Table(self.settings.table_name)
        return self._table

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = DynamoDBRegistry(self.table, self.settings.pool_name)
        return self._registry

    @property
    def demand(self) -> DemandStore:
        if self._demand is None:
            self._demand = DynamoDBDemandStore(self.table, self.settings.pool_name)
        return self._demand

    @property
    def tickets(self) -> TicketStore:
        if self._tickets is None:
            self._tickets = DynamoDBTicketStore(self.table, self.settings.pool_name)
        return self._tickets

    @property
    def bookings(self) -> BookingStore:
        if self._bookings is None:
            self._bookings = DynamoDBBookingStore(self.table, self.settings.pool_name)
        return self._bookings

    def booking_service(self) -> BookingService:
        return BookingService(self.bookings, self.clock.now(), lambda: self.autoscaling.group_size().maximum)

    def assignment(self) -> AssignmentService:
        return AssignmentService(
            self.registry,
            self.tickets,
            self.clock,
            self.settings.assignment(),
            on_queued=lambda: self.evaluator().run("request"),
            starter=self._starter(),
            is_booked=booked_room(self.bookings),
        )

    def _starter(self) -> DirectStarter | None:
        settings = self.settings.direct()
        if not settings.enabled:
            return None
        if self._secrets is None:
            self._secrets = SecretReader()
        secrets = self._secrets
        return DirectStarter(settings, read_secret=lambda name: secrets.parameter(name).reveal())

    @property
    def control(self) -> ControlStore:
        if self._control is None:
            self._control = DynamoDBControlStore(self.table, self.settings.pool_name)
        return self._control

    @property
    def autoscaling(self) -> AutoScaling:
        if self._autoscaling is None:
            settings = self.settings
            self._autoscaling = Boto3AutoScaling(
                boto3.client("autoscaling", config=AWS_CONFIG),
                settings.asg_name,
                warm_pool_state=settings.warm_pool_state,
            )
        return self._autoscaling

    def recordings(self) -> RecordingService:
        settings = self.settings.recordings()
        require_configured(settings)
        if self._s3 is None:
            self._s3 = boto3.client("s3", config=S3_CONFIG)
        announce = Announcer(
            self._sns_client, settings.topic_arn, settings.webhook_url, on_webhook_error=record_webhook_error
        )
        return RecordingService(
            DynamoDBRecordingStore(self.table, self.settings.pool_name),
            S3Storage(self._s3, settings),
            self.clock,
            settings,
            self.settings.pool_name,
            announce=announce,
            on_complete=record_recording_complete,
            on_rejected=record_recording_rejected,
        )

    def _sns_client(self) -> Any:
        if self._sns is None:
            self._sns = boto3.client("sns", config=AWS_CONFIG)
        return self._sns

    def lifecycle(self) -> LifecycleService:
        return LifecycleService(
            self.registry, self.autoscaling, self.clock, self.settings.lifecycle(), on_alert=record_alert
        )

    def notifications(self) -> NotificationService:
        settings = self.settings
        return NotificationService(
            self.registry,
            self.control,
            self.clock,
            settings.asg_name,
            settings.tombstone_days * 86_400,
            on_alert=record_asg_alert,
        )

    def instance_events(self) -> InstanceEventService:
        assignment = self._queue()
        return InstanceEventService(
            self.registry,
            self.clock,
            self.settings.tombstone_days * 86_400,
            on_reservation_lost=assignment.on_reservation_lost,
        )

    def status_service(self) -> StatusService:
        assignment = self.assignment()
        # The policy sizes its buffer for this trigger when EVALUATE_ON_BUSY is on (Settings.policy()).
        on_started = (
            EvaluateOnBusy(self.registry, self.control, lambda: self.evaluator().run("busy"))
            if self.settings.evaluate_on_busy
            else None
        )
        return StatusService(
            self.registry,
            self.autoscaling,
            self.clock,
            on_transition=record_transition,
            demand=self.demand,
            settle=self.lifecycle().settle,
            on_idle=lambda recorder: assignment.assign_queue([recorder]),
            on_busy=assignment.on_busy,
            on_reservation_lost=assignment.on_reservation_lost,
            on_started=on_started,
            on_started_error=lambda error: metrics.add_metric(
                name="BusyEvaluationErrors", unit=MetricUnit.Count, value=1
            ),
        )

    def _queue(self) -> AssignmentService:
        """The request queue as the event handlers serve it: without on_queued, since they run (or are)
        the evaluator and must not start it again, and without direct start."""
        return AssignmentService(self.registry, self.tickets, self.clock, self.settings.assignment())

    def evaluator(self) -> Evaluator:
        settings = self.settings
        assignment = self._queue()
        options = EvaluatorOptions(
            dry_run=settings.dry_run,
            stale_after=float(settings.heartbeat_stale_seconds),
            tombstone_seconds=settings.tombstone_days * 86_400,
            apply_warm_pool=settings.warm_pool != "off",
            offline_confirm_seconds=float(settings.offline_confirm_seconds),
        )
        return Evaluator(
            self.registry,
            self.autoscaling,
            self.demand,
            self.control,
            self.clock,
            settings.policy(),
            queued=assignment.queued_count,
            booked=booked_between(self.bookings),
            options=options,
            on_decision=record_decision,
            on_health=lambda health: record_pool_health(
                health.stale, health.min_disk_free_bytes, health.pending_uploads, health.failed_uploads
            ),
            lifecycle=self.lifecycle(),
            reconciler=Reconciler(
                self.registry,
                self.autoscaling,
                settings.reconciler(),
                on_alert=record_alert,
                on_reservation_lost=assignment.on_reservation_lost,
            ),
            housekeeping=assignment.tick,
        )
