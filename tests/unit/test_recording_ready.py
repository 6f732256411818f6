"""The recording-ready announcement: SNS is the record, the webhook is best effort on top."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from chalicelib.recording_ready import Announcer
from sim.net import LoopbackServer

MESSAGE = {
    "type": "recording.ready",
    "recording_id": "qlbtwvkrmxuyhzfa",
    "manifest": {"room": "Weekly Sync\nwith a newline", "files": []},
    "downloads": [],
}


class FakeSns:
    def __init__(self, fail: bool = False) -> None:
        self.published: list[dict[str, Any]] = []
        self.fail = fail

    def publish(self, **kwargs: Any) -> dict[str, str]:
        if self.fail:
            raise ConnectionError("SNS unreachable")
        self.published.append(kwargs)
        return {"MessageId": "1"}


class Receiver:
    """An HTTP endpoint on loopback that records what is POSTed to it and answers `status`."""

    def __init__(self, status: int = 204) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.status = status
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                receiver.headers.append(dict(self.headers.items()))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = LoopbackServer(Handler).start()

    @property
    def url(self) -> str:
        return self.server.url + "/hooks/recordings"


@pytest.fixture
def receiver() -> Any:
    made: list[Receiver] = []

    def make(status: int = 204) -> Receiver:
        made.append(Receiver(status))
        return made[-1]

    yield make
    for server in made:
        server.server.stop()


def test_publishes_to_sns_with_a_printable_subject_and_posts_the_same_body_to_the_webhook(receiver: Any) -> None:
    sns, hook = FakeSns(), receiver()
    Announcer(lambda: sns, "arn:aws:sns:us-east-1:123456789012:ready", hook.url)(MESSAGE)
    (published,) = sns.published
    assert json.loads(published["Message"]) == MESSAGE
    assert published["Subject"] == "Recording ready: Weekly Sync?with a newline"
    assert published["MessageAttributes"]["type"]["StringValue"] == "recording.ready"
    assert hook.bodies == [MESSAGE]
    assert hook.headers[0]["Content-Type"] == "application/json"


@pytest.mark.parametrize("status", [500, 404])
def test_a_failing_webhook_is_reported_and_never_raises(receiver: Any, status: int) -> None:
    errors: list[tuple[str, Exception]] = []
    hook = receiver(status)
    Announcer(None, None, hook.url, on_webhook_error=lambda rid, error: errors.append((rid, error)))(MESSAGE)
    assert len(hook.bodies) == 1
    assert [rid for rid, _ in errors] == ["qlbtwvkrmxuyhzfa"]


def test_an_unreachable_webhook_is_reported(receiver: Any) -> None:
    hook = receiver()
    url = hook.url
    hook.server.stop()
    errors: list[str] = []
    Announcer(None, None, url, on_webhook_error=lambda rid, error: errors.append(rid))(MESSAGE)
    assert errors == ["qlbtwvkrmxuyhzfa"]


def test_a_failing_sns_publish_raises_so_the_completion_is_retried() -> None:
    with pytest.raises(ConnectionError):
        Announcer(lambda: FakeSns(fail=True), "arn:aws:sns:us-east-1:123456789012:ready", None)(MESSAGE)


def test_without_topic_or_webhook_nothing_is_sent() -> None:
    sns = FakeSns()
    Announcer(lambda: sns, None, None)(MESSAGE)
    assert sns.published == []
