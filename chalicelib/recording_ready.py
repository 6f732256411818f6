"""Announcing a recording: one SNS message, and optionally one HTTPS webhook call.

SNS is the record: if publishing fails the completion fails and the agent calls again.
A webhook is best effort on top (its receiver may be down); a failure is logged and
counted, and the SNS message carries the same body.
"""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Callable
from typing import Any

WEBHOOK_TIMEOUT_SECONDS = 5.0
MAX_SUBJECT = 100


class Announcer:
    def __init__(
        self,
        sns: Callable[[], Any] | None,
        topic_arn: str | None,
        webhook_url: str | None,
        *,
        on_webhook_error: Callable[[str, Exception], None] = lambda recording_id, error: None,
        opener: Callable[..., Any] = urllib.request.urlopen,
    ) -> None:
        self._sns = sns
        self._topic_arn = topic_arn
        self._webhook_url = webhook_url
        self._on_webhook_error = on_webhook_error
        self._open = opener

    def __call__(self, message: dict[str, Any]) -> None:
        body = json.dumps(message)
        recording_id = str(message.get("recording_id", ""))
        if self._topic_arn and self._sns is not None:
            subject = f"Recording ready: {message.get('manifest', {}).get('room') or recording_id}"[:MAX_SUBJECT]
            self._sns().publish(
                TopicArn=self._topic_arn,
                Message=body,
                Subject=_printable(subject),
                MessageAttributes={"type": {"DataType": "String", "StringValue": str(message.get("type"))}},
            )
        if self._webhook_url:
            request = urllib.request.Request(
                self._webhook_url,
                data=body.encode(),
                method="POST",
                headers={"Content-Type": "application/json", "User-Agent": "jibri-autoscaler"},
            )
            try:
                with self._open(request, timeout=WEBHOOK_TIMEOUT_SECONDS) as reply:
                    reply.read(1024)
            except Exception as error:  # any failure of a best-effort call is logged, none is fatal
                self._on_webhook_error(recording_id, error)


def _printable(text: str) -> str:
    """SNS subjects are ASCII printable, no newlines."""
    return "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
