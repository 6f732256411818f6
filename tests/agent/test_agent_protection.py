"""Scale-in protection: set before anyone hears BUSY, cleared only when the control plane and Jibri both allow it."""

from __future__ import annotations

import os

from botocore.awsrequest import AWSResponse

from agent.agent import Agent
from agent.aws import instance_session


def test_busy_is_protected_before_the_busy_report_arrives(make_agent, group, jibri, status_api, imds):
    agent: Agent = make_agent()
    agent.tick()
    assert status_api.statuses() == ["IDLE"]
    assert agent.asg_name == group.name and agent.protected is False

    jibri.set_busy_status("BUSY")
    agent.tick()

    busy = status_api.reports()[-1]
    assert busy.busy_status == "BUSY"
    assert busy.protected_at_arrival is True
    assert group.protected()
    # Signed with the instance role from IMDS, never with the environment's credentials.
    assert all(r.signature_error is None for r in status_api.reports())
    assert {r.access_key for r in status_api.reports()} == {imds.credentials["AccessKeyId"]}
    assert busy.path == f"/api/v1/recorders/{group.instance_id}/status"


def test_report_body_is_the_contract(make_agent, jibri, status_api):
    jibri.set_busy_status("BUSY")
    make_agent().tick()

    body = status_api.reports()[0].body
    assert set(body) == {
        "busy_status",
        "health",
        "pending_uploads",
        "sent_at",
        "jibri",
        "target_lifecycle_state",
        "private_ip",
        "disk_free_bytes",
        "failed_uploads",
    }
    assert body["target_lifecycle_state"] == "InService" and body["private_ip"] == "10.0.0.10"
    assert isinstance(body["disk_free_bytes"], int) and body["disk_free_bytes"] > 0
    assert body["failed_uploads"] == 0
    assert body["busy_status"] == "BUSY" and body["health"] == "HEALTHY" and body["pending_uploads"] == 0
    assert body["sent_at"].endswith("Z") and len(body["sent_at"]) == len("2026-11-24T01:02:03.456Z")
    assert body["jibri"] == jibri.health_body()
    assert status_api.reports()[0].headers["Content-Type"] == "application/json"


def test_idle_and_reply_protect_false_clears_protection(make_agent, group, jibri, status_api):
    agent = make_agent()
    jibri.set_busy_status("BUSY")
    agent.tick()
    assert group.protected()

    jibri.set_busy_status("IDLE")
    agent.tick()

    assert status_api.statuses() == ["BUSY", "IDLE"]
    assert not group.protected()
    assert agent.protected is False


def test_an_unanswered_health_check_never_lifts_protection(make_agent, group, jibri, status_api, clock):
    agent = make_agent()
    jibri.set_busy_status("BUSY")
    agent.tick()
    assert group.protected()
    jibri.stop()  # Jibri does not answer: slow mid-recording, or gone; either way protection stays
    status_api.respond(200, {"protect": False, "drain": False, "state": "unhealthy"})
    clock.advance(31)
    agent.tick()
    clock.advance(31)
    agent.tick()
    assert status_api.statuses()[-1] == "OFFLINE"
    assert group.protected() and agent.protected is True


def test_protect_false_while_busy_keeps_protection(make_agent, group, jibri, status_api, clock):
    status_api.respond(200, {"protect": False, "drain": False, "state": "idle"})
    agent = make_agent()
    jibri.set_busy_status("BUSY")
    agent.tick()
    clock.advance(31)
    agent.tick()

    assert status_api.statuses() == ["BUSY", "BUSY"]
    assert group.protected()


def test_reply_protect_true_while_idle_protects(make_agent, group, status_api):
    status_api.respond(200, {"protect": True, "drain": False, "state": "reserved"})
    agent = make_agent()
    agent.tick()

    assert status_api.statuses() == ["IDLE"]
    assert status_api.reports()[0].protected_at_arrival is False
    assert group.protected()


def test_initial_protection_is_learned_from_the_group(make_agent, group, status_api):
    group.set_protected(True)
    agent = make_agent()
    agent.setup()
    assert agent.protected is True

    agent.tick()  # IDLE, and the default reply says protect: false
    assert not group.protected()


def test_pending_uploads_protect_and_hold_protection(make_agent, group, status_api):
    pending = [2]
    agent = make_agent(pending_uploads=lambda: pending[0])
    agent.tick()
    first = status_api.reports()[0]
    assert first.body["pending_uploads"] == 2 and first.protected_at_arrival is True

    pending[0] = 0
    agent.tick()
    assert status_api.reports()[-1].body["pending_uploads"] == 0
    assert not group.protected()


def test_failed_protection_still_reports_and_retries_with_backoff(make_agent, group, jibri, status_api, clock, imds):
    session = instance_session(imds.url, "us-east-1", timeout=2)
    calls: list[bool] = []

    def throttle_the_first(params: dict, **kwargs: object) -> tuple[AWSResponse, dict] | None:
        calls.append(params["body"]["ProtectedFromScaleIn"] == "true")
        if len(calls) > 1:
            return None
        error = {
            "Error": {"Code": "Throttling", "Message": "Rate exceeded"},
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }
        return AWSResponse("http://autoscaling", 400, {}, None), error

    session.events.register("before-call.auto-scaling.SetInstanceProtection", throttle_the_first)
    agent = make_agent(session=session)
    jibri.set_busy_status("BUSY")
    delay = agent.tick()

    assert status_api.statuses() == ["BUSY"]  # reported anyway; the control plane protects a busy recorder too
    assert calls == [True] and not group.protected()
    assert delay == 0.5  # full jitter with rng 0.5 on a 1 s base: retry in 0.5 s, not at the next poll

    agent.tick()  # still inside the backoff window: no call
    assert calls == [True]
    clock.advance(delay)
    agent.tick()
    assert calls == [True, True] and group.protected()


def test_refused_sessions_are_reported_as_failed_uploads_within_pending(make_agent, status_api, tmp_path):
    from agent.spool import FAILED, Spool

    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    spool = Spool(str(spool_dir))
    for name in ("kept-1", "refused-2"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "rec.mp4").write_bytes(b"x")
        spool.add(str(tmp_path / name))
    refused = spool.get("refused-2")
    assert refused is not None
    spool.update(refused, state=FAILED, last_error="409 session_reused")

    make_agent(spool_dir=str(spool_dir)).tick()

    body = status_api.reports()[0].body
    assert (body["pending_uploads"], body["failed_uploads"]) == (2, 1)


def test_an_unreadable_spool_still_lets_the_report_go_out(make_agent, status_api, tmp_path, monkeypatch):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()

    def broken(path="."):
        if isinstance(path, str) and os.path.abspath(path) == str(spool_dir):
            raise PermissionError(13, "Permission denied", path)
        return listdir(path)

    listdir = os.listdir
    monkeypatch.setattr(os, "listdir", broken)
    make_agent(spool_dir=str(spool_dir)).tick()

    body = status_api.reports()[0].body
    assert body["pending_uploads"] == 0 and "failed_uploads" not in body


def test_an_unreadable_spool_entry_is_reported_as_a_failed_upload(make_agent, status_api, tmp_path, caplog):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    (spool_dir / "broken-1.json").write_text("{not json")
    agent = make_agent(spool_dir=str(spool_dir))

    agent.tick()

    body = status_api.reports()[0].body
    # Protected (pending), and the operator's stuck-upload alarm sees it (failed).
    assert (body["pending_uploads"], body["failed_uploads"]) == (1, 1)
    for _ in range(3):
        agent.tick()
    errors = [r for r in caplog.records if r.levelname == "ERROR" and "broken-1" in r.getMessage()]
    assert len(errors) == 1


def test_a_report_reads_the_spool_once(make_agent, status_api, tmp_path, monkeypatch):
    from agent.spool import Spool

    spool_dir = tmp_path / "spool"
    spool_dir.mkdir()
    listings: list[str] = []
    session_ids = Spool.session_ids

    def counted(self):
        listings.append(self.path)
        return session_ids(self)

    monkeypatch.setattr(Spool, "session_ids", counted)
    make_agent(spool_dir=str(spool_dir)).tick()

    assert len(status_api.reports()) == 1 and listings == [str(spool_dir)]
