"""Structured logs and EMF metrics (Powertools), shared by every handler."""

from __future__ import annotations

import warnings

from aws_lambda_powertools import Logger, Metrics
from aws_lambda_powertools.metrics import MetricUnit

from chalicelib.control import DecisionRecord
from chalicelib.notifications import AsgNotification
from chalicelib.recordings import StoredRecording
from chalicelib.registry import Recorder

# Not the Chalice app name: a logger named like the app would print every line twice.
SERVICE = "jibri-pool"
NAMESPACE = "JibriAutoscaler"

# Read-only routes publish no metric; that is expected, not worth a warning per call.
warnings.filterwarnings("ignore", message="No application metrics to publish")

logger = Logger(service=SERVICE)
metrics = Metrics(namespace=NAMESPACE, service=SERVICE)


def record_report(applied: bool) -> None:
    metrics.add_metric(name="StatusReports", unit=MetricUnit.Count, value=1)
    if not applied:
        metrics.add_metric(name="StatusReportsIgnored", unit=MetricUnit.Count, value=1)


def record_transition(before: Recorder | None, after: Recorder) -> None:
    source = before.state.value if before else "new"
    logger.info(
        "recorder transition",
        extra={"instance_id": after.instance_id, "from_state": source, "to_state": after.state.value},
    )
    metrics.add_metric(name="RecorderTransitions", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name=f"RecorderTransitionsTo{after.state.value.capitalize()}", unit=MetricUnit.Count, value=1)


def record_decision(record: DecisionRecord) -> None:
    logger.info("pool decision", extra={"decision": record.view()})
    metrics.add_metric(name="DesiredCapacity", unit=MetricUnit.Count, value=record.desired)
    metrics.add_metric(name="BufferTarget", unit=MetricUnit.Count, value=record.buffer_target)
    metrics.add_metric(name="RecordersDrained", unit=MetricUnit.Count, value=len(record.drained))
    metrics.add_metric(name="RecordersTerminated", unit=MetricUnit.Count, value=len(record.terminated))
    metrics.add_metric(name="RecordersIdle", unit=MetricUnit.Count, value=record.idle)
    metrics.add_metric(name="RecordersBusy", unit=MetricUnit.Count, value=record.busy)
    metrics.add_metric(name="RequestsQueued", unit=MetricUnit.Count, value=record.queued)


def record_alert(recorder: Recorder, message: str) -> None:
    logger.error(
        "lifecycle hook near its global timeout", extra={"instance_id": recorder.instance_id, "alert": message}
    )
    metrics.add_metric(name="LifecycleHookNearTimeout", unit=MetricUnit.Count, value=1)


def record_asg_alert(kind: str, note: AsgNotification) -> None:
    logger.error(
        "auto scaling activity failed",
        extra={"kind": kind, "instance_id": note.instance_id, "status": note.status_message, "cause": note.cause},
    )
    metrics.add_metric(name=kind, unit=MetricUnit.Count, value=1)


def record_recording_complete(recording: StoredRecording) -> None:
    size = sum(f.size for f in recording.files)
    logger.info(
        "recording in S3",
        extra={
            "recording_id": recording.recording_id,
            "instance_id": recording.instance_id,
            "files": [f.key for f in recording.files],
            "bytes": size,
        },
    )
    metrics.add_metric(name="RecordingsCompleted", unit=MetricUnit.Count, value=1)
    metrics.add_metric(name="RecordingBytes", unit=MetricUnit.Bytes, value=size)


def record_recording_rejected(recording_id: str, rejected: dict[str, list[int]]) -> None:
    logger.warning("recording parts rejected", extra={"recording_id": recording_id, "rejected": rejected})
    metrics.add_metric(name="RecordingPartsRejected", unit=MetricUnit.Count, value=sum(map(len, rejected.values())))


def record_recording_error(recording_id: str | None, code: str, message: str) -> None:
    logger.warning("recording refused", extra={"recording_id": recording_id, "code": code, "reason": message})
    metrics.add_metric(name="RecordingErrors", unit=MetricUnit.Count, value=1)


def record_webhook_error(recording_id: str, error: Exception) -> None:
    # The URL is the operator's; the error's text names the host, never a query string we sent.
    logger.error("recording webhook failed", extra={"recording_id": recording_id, "error": type(error).__name__})
    metrics.add_metric(name="RecordingErrors", unit=MetricUnit.Count, value=1)


def record_pool_health(
    stale: int, min_disk_free_bytes: int | None, pending_uploads: int, failed_uploads: int = 0
) -> None:
    metrics.add_metric(name="RecordersStale", unit=MetricUnit.Count, value=stale)
    metrics.add_metric(name="PendingUploads", unit=MetricUnit.Count, value=pending_uploads)
    metrics.add_metric(name="FailedUploads", unit=MetricUnit.Count, value=failed_uploads)
    if min_disk_free_bytes is not None:
        metrics.add_metric(name="MinDiskFreeBytes", unit=MetricUnit.Bytes, value=min_disk_free_bytes)
