"""Jibri pool autoscaler: routes and event handlers. Wiring only; the domain is in chalicelib."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from aws_lambda_powertools.logging import correlation_paths
from chalice import Chalice, ConvertToMiddleware, IAMAuthorizer, Response
from chalice.app import AuthRequest, AuthResponse, CloudWatchEvent, Request, SNSEvent

from chalicelib import instance_events, observability
from chalicelib.assignment import idempotency_key
from chalicelib.auth import JwtAuthorizer, principal_from_context
from chalicelib.config import ASG_NOTIFICATIONS_TOPIC
from chalicelib.errors import ApiError
from chalicelib.http import json_errors, read_json
from chalicelib.identity import caller_from_context, require_agent_for
from chalicelib.lifecycle import handle_lifecycle_event
from chalicelib.notifications import handle_notification
from chalicelib.pool import control_view, pool_view
from chalicelib.runtime import Runtime
from chalicelib.status import parse_report

app = Chalice(app_name="jibri-autoscaler")

runtime = Runtime()
iam = IAMAuthorizer()
jwt_authorizer = JwtAuthorizer()

app.register_middleware(json_errors, "http")
app.register_middleware(
    ConvertToMiddleware(
        observability.logger.inject_lambda_context(
            correlation_id_path=correlation_paths.API_GATEWAY_REST, clear_state=True
        )
    ),
    "http",
)
app.register_middleware(ConvertToMiddleware(observability.metrics.log_metrics), "all")


@app.route("/v1/recorders/{instance_id}/status", methods=["POST"], authorizer=iam)
def report_status(instance_id: str) -> dict[str, Any]:
    request = _request()
    require_agent_for(caller_from_context(request.context), runtime.settings.agent_role_name, instance_id)
    report = parse_report(read_json(request, runtime.settings.max_body_bytes), runtime.clock.now())
    reply = runtime.status_service().apply(instance_id, report)
    observability.record_report(reply.applied)
    return reply.body()


@app.route("/v1/recordings", methods=["POST"], authorizer=iam)
def declare_recording() -> Response:
    request = _request()
    instance_id = _agent(request)
    body = read_json(request, runtime.settings.max_body_bytes)
    with _refusal_logged(body.get("session_id") if isinstance(body, dict) else None):
        status, reply = runtime.recordings().declare(instance_id, body)
    return Response(body=reply, status_code=status)


@app.route("/v1/recordings/{recording_id}/complete", methods=["POST"], authorizer=iam)
def complete_recording(recording_id: str) -> dict[str, Any]:
    request = _request()
    instance_id = _agent(request)
    body = read_json(request, runtime.settings.max_body_bytes)
    with _refusal_logged(recording_id):
        return runtime.recordings().complete(instance_id, recording_id, body)


# TTL 0: a cached allow would outlive the token's expiry.
@app.authorizer(ttl_seconds=0)
def jitsi_jwt(auth_request: AuthRequest) -> AuthResponse:
    return jwt_authorizer(auth_request)


@app.route("/v1/requests", methods=["POST"], authorizer=jitsi_jwt)
def create_request() -> Response:
    request = _request()
    principal_from_context(request.context)
    body = read_json(request, runtime.settings.max_body_bytes)
    status, reply = runtime.assignment().create(body, idempotency_key(request.headers))
    return Response(body=reply, status_code=status)


@app.route("/v1/requests/{request_id}", methods=["GET"], authorizer=jitsi_jwt)
def get_request(request_id: str) -> dict[str, Any]:
    principal_from_context(_request().context)
    return runtime.assignment().get(request_id)


@app.route("/v1/requests/{request_id}", methods=["DELETE"], authorizer=jitsi_jwt)
def cancel_request(request_id: str) -> dict[str, Any]:
    principal_from_context(_request().context)
    return runtime.assignment().cancel(request_id)


@app.route("/v1/bookings", methods=["POST"], authorizer=jitsi_jwt)
def create_booking() -> Response:
    request = _request()
    principal_from_context(request.context)
    body = read_json(request, runtime.settings.max_body_bytes)
    return Response(body=runtime.booking_service().create(body), status_code=201)


@app.route("/v1/bookings", methods=["GET"], authorizer=jitsi_jwt)
def list_bookings() -> dict[str, Any]:
    principal_from_context(_request().context)
    return runtime.booking_service().upcoming()


@app.route("/v1/bookings/{booking_id}", methods=["DELETE"], authorizer=jitsi_jwt)
def cancel_booking(booking_id: str) -> dict[str, Any]:
    principal_from_context(_request().context)
    return runtime.booking_service().cancel(booking_id)


@app.route("/v1/pool", methods=["GET"], authorizer=iam)
def get_pool() -> dict[str, Any]:
    request = _request()
    caller_from_context(request.context)
    settings = runtime.settings
    now = runtime.clock.now()
    view = pool_view(runtime.registry, runtime.autoscaling, now, settings.heartbeat_stale_seconds, request.query_params)
    return {**view, **control_view(runtime.control, settings.decisions_shown)}


@app.schedule("rate(1 minute)", name="evaluate_pool")
def evaluate_pool(event: CloudWatchEvent) -> None:
    runtime.evaluator().run("schedule")


@app.on_cw_event(
    {
        "source": ["aws.autoscaling"],
        "detail-type": ["EC2 Instance-launch Lifecycle Action", "EC2 Instance-terminate Lifecycle Action"],
    },
    name="on_lifecycle_action",
)
def on_lifecycle_action(event: CloudWatchEvent) -> None:
    outcome = handle_lifecycle_event(runtime.lifecycle(), event.to_dict())
    observability.logger.info("lifecycle action", extra={"outcome": outcome})


@app.on_cw_event({"source": ["aws.ec2"], "detail-type": instance_events.DETAIL_TYPES}, name="on_instance_event")
def on_instance_event(event: CloudWatchEvent) -> None:
    outcome = instance_events.handle_instance_event(
        runtime.instance_events(), event.to_dict(), replace=lambda: runtime.evaluator().run("interruption")
    )
    observability.logger.info("instance event", extra={"detail_type": event.detail_type, "outcome": outcome})


@app.on_sns_message(topic=ASG_NOTIFICATIONS_TOPIC, name="on_asg_notification")
def on_asg_notification(event: SNSEvent) -> None:
    outcome = handle_notification(runtime.notifications(), event.message)
    observability.logger.info("auto scaling notification", extra={"subject": event.subject, "outcome": outcome})


def _agent(request: Request) -> str:
    """The calling agent's instance id: its role session, which must be the agent role's."""
    caller = caller_from_context(request.context)
    instance_id = caller.session or ""  # no session: not a role at all, refused by the role check
    require_agent_for(caller, runtime.settings.agent_role_name, instance_id)
    return instance_id


@contextmanager
def _refusal_logged(recording_id: Any) -> Iterator[None]:
    try:
        yield
    except ApiError as error:
        observability.record_recording_error(str(recording_id) if recording_id else None, error.code, error.message)
        raise


def _request() -> Request:
    request = app.current_request
    assert request is not None, "routes run with a current request"
    return request
