"""Records the AWS calls each Lambda makes while the tests run; checks them against its IAM policy.

A pytest plugin (enabled from tests/conftest.py). While a handler of this app runs, through
the entry points Lambda calls (the app object for routes, an event handler, the authorizer),
every botocore call and every presigned URL it makes is recorded under that Lambda's name
and mapped to the IAM actions it needs (`IAM_ACTIONS`). At the end of the session each
Lambda's recorded actions are checked against its policy file in every stage of
`.chalice/config.json`; a missing action fails the run and is named with the call and
the first test that made it. Only what ran is checked, so a subset of the tests checks a
subset of the calls.
"""

from __future__ import annotations

import fnmatch
import json
import threading
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from botocore.client import BaseClient
from botocore.signers import RequestSigner
from chalice.app import Chalice, ChaliceAuthorizer, EventSourceHandler

ROOT = Path(__file__).resolve().parent.parent
APP_NAME = "jibri-autoscaler"
API_HANDLER = "api_handler"  # Chalice's name for the Lambda that serves every route

# Operations whose IAM action is not "<service>:<Operation>". A presigned URL is checked
# like the call it stands for: it is signed with the Lambda's credentials, so S3 checks
# the Lambda's policy when the agent uses it.
IAM_ACTIONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("s3", "CreateMultipartUpload"): ("s3:PutObject",),
    ("s3", "UploadPart"): ("s3:PutObject",),
    ("s3", "UploadPartCopy"): ("s3:PutObject", "s3:GetObject"),
    ("s3", "CompleteMultipartUpload"): ("s3:PutObject",),
    ("s3", "ListParts"): ("s3:ListMultipartUploadParts",),
    ("s3", "ListMultipartUploads"): ("s3:ListBucketMultipartUploads",),
    ("s3", "HeadObject"): ("s3:GetObject",),
    ("s3", "HeadBucket"): ("s3:ListBucket",),
    ("s3", "ListObjects"): ("s3:ListBucket",),
    ("s3", "ListObjectsV2"): ("s3:ListBucket",),
    ("s3", "CopyObject"): ("s3:PutObject", "s3:GetObject"),
    ("s3", "DeleteObjects"): ("s3:DeleteObject",),
    ("dynamodb", "TransactGetItems"): ("dynamodb:GetItem",),
    ("sts", "GetCallerIdentity"): (),  # allowed to every principal
}
_TRANSACT_ACTIONS = {
    "Put": "dynamodb:PutItem",
    "Update": "dynamodb:UpdateItem",
    "Delete": "dynamodb:DeleteItem",
    "ConditionCheck": "dynamodb:ConditionCheckItem",
}


def iam_actions(service: str, operation: str, params: Mapping[str, Any] | None = None) -> tuple[str, ...]:
    """The IAM actions one call needs. `service` is botocore's signing name (the IAM prefix)."""
    params = params or {}
    if service == "dynamodb" and operation == "TransactWriteItems":
        kinds = {kind for item in params.get("TransactItems", []) for kind in item}
        return tuple(sorted(_TRANSACT_ACTIONS[kind] for kind in kinds if kind in _TRANSACT_ACTIONS))
    actions = list(IAM_ACTIONS.get((service, operation), (f"{service}:{operation}",)))
    if service == "s3" and operation in ("PutObject", "CreateMultipartUpload", "CopyObject"):
        if params.get("Tagging"):
            actions.append("s3:PutObjectTagging")
        if params.get("ServerSideEncryption") == "aws:kms" or params.get("SSEKMSKeyId"):
            actions.append("kms:GenerateDataKey")
    return tuple(actions)


@dataclass
class CallRecorder:
    """Lambda name → IAM action → (the call, the first test that made it)."""

    seen: dict[str, dict[str, tuple[str, str]]] = field(default_factory=dict)
    calls: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, function: str, service: str, operation: str, params: Mapping[str, Any], test: str) -> None:
        with self._lock:
            self.calls += 1
            actions = self.seen.setdefault(function, {})
            for action in iam_actions(service, operation, params):
                actions.setdefault(action, (f"{service}.{operation}", test))


def policy_actions(document: Mapping[str, Any]) -> list[str]:
    """Allowed action patterns of a policy, with statements under Fn::If counted in either branch."""
    patterns: list[str] = []
    for statement in _statements(document.get("Statement", [])):
        if statement.get("Effect") != "Allow":
            continue
        action = statement.get("Action", [])
        patterns.extend([action] if isinstance(action, str) else action)
    return patterns


def _statements(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, list):
        for item in value:
            yield from _statements(item)
    elif isinstance(value, dict) and "Fn::If" in value:
        for branch in value["Fn::If"][1:]:
            yield from _statements(branch)
    elif isinstance(value, dict) and "Effect" in value:
        yield value


def allows(patterns: Iterable[str], action: str) -> bool:
    return any(fnmatch.fnmatchcase(action.lower(), pattern.lower()) for pattern in patterns)


def policy_files(config_path: Path = ROOT / ".chalice" / "config.json") -> dict[str, dict[str, Path]]:
    """Lambda name → stage → its policy file, as .chalice/config.json assigns them."""
    config = json.loads(config_path.read_text())
    files: dict[str, dict[str, Path]] = {}
    for stage, settings in config.get("stages", {}).items():
        for function, function_settings in settings.get("lambda_functions", {}).items():
            name = function_settings.get("iam_policy_file")
            if name:
                files.setdefault(function, {})[stage] = config_path.parent / name
    return files


def policy_problems(
    seen: Mapping[str, Mapping[str, tuple[str, str]]],
    files: Mapping[str, Mapping[str, Path]],
) -> list[str]:
    """Every recorded action that the Lambda's policy (in any stage) does not allow."""
    problems: list[str] = []
    for function, actions in sorted(seen.items()):
        stages = files.get(function)
        if not stages:
            problems.append(f"{function} made AWS calls but has no iam_policy_file in .chalice/config.json")
            continue
        for stage, path in sorted(stages.items()):
            document = json.loads(path.read_text())
            patterns = policy_actions(document)
            for action, (call, test) in sorted(actions.items()):
                if not allows(patterns, action):
                    problems.append(f"{function} ({stage}): {call} needs {action}, not in {path.name} (seen in {test})")
    return problems


# --- wiring: who is running, what it calls ------------------------------------------------

RECORDER = CallRecorder()
_extra: list[CallRecorder] = []
_running = threading.local()
_current_test = ["(outside a test)"]


@contextmanager
def also_recording(recorder: CallRecorder) -> Iterator[CallRecorder]:
    """Record into `recorder` too while the block runs (for tests of this plugin)."""
    _extra.append(recorder)
    try:
        yield recorder
    finally:
        _extra.remove(recorder)


@contextmanager
def running(function: str) -> Iterator[None]:
    stack: list[str] = getattr(_running, "stack", None) or []
    _running.stack = [*stack, function]
    try:
        yield
    finally:
        _running.stack = stack


def _record(service: str, operation: str, params: Mapping[str, Any]) -> None:
    stack = getattr(_running, "stack", None)
    if not stack:
        return
    for recorder in (RECORDER, *_extra):
        recorder.record(stack[-1], service, operation, params, _current_test[0])


_originals: dict[str, Any] = {}


def _install() -> None:
    if _originals:
        return
    _originals.update(
        app=Chalice.__call__,
        event=EventSourceHandler.__call__,
        authorizer=ChaliceAuthorizer.__call__,
        api_call=BaseClient._make_api_call,
        presign=RequestSigner.generate_presigned_url,
    )

    def app_call(self: Chalice, event: Any, context: Any) -> Any:
        if self.app_name != APP_NAME:
            return _originals["app"](self, event, context)
        with running(API_HANDLER):
            return _originals["app"](self, event, context)

    def event_call(self: EventSourceHandler, event: Any, context: Any) -> Any:
        with running(getattr(self.func, "__name__", "unknown")):
            return _originals["event"](self, event, context)

    def authorizer_call(self: ChaliceAuthorizer, event: Any, context: Any) -> Any:
        with running(self.name):
            return _originals["authorizer"](self, event, context)

    def api_call(self: BaseClient, operation_name: str, api_params: Any) -> Any:
        _record(self.meta.service_model.signing_name, operation_name, api_params or {})
        return _originals["api_call"](self, operation_name, api_params)

    def presign(self: RequestSigner, request_dict: Any, operation_name: str, *args: Any, **kwargs: Any) -> Any:
        _record(self._signing_name, operation_name, {})
        return _originals["presign"](self, request_dict, operation_name, *args, **kwargs)

    Chalice.__call__ = app_call  # type: ignore[method-assign]
    EventSourceHandler.__call__ = event_call  # type: ignore[method-assign]
    ChaliceAuthorizer.__call__ = authorizer_call  # type: ignore[method-assign]
    BaseClient._make_api_call = api_call  # type: ignore[method-assign]
    RequestSigner.generate_presigned_url = presign  # type: ignore[method-assign]


_install()


# --- pytest hooks -------------------------------------------------------------------------

_problems: list[str] = []


def pytest_runtest_setup(item: pytest.Item) -> None:
    _current_test[0] = item.nodeid


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    _problems[:] = policy_problems(RECORDER.seen, policy_files())
    if _problems and session.exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not RECORDER.calls:
        return
    actions = sum(len(a) for a in RECORDER.seen.values())
    terminalreporter.write_line(
        f"AWS calls made by Lambda handlers: {RECORDER.calls}, needing {actions} IAM actions across "
        f"{len(RECORDER.seen)} Lambdas ({', '.join(sorted(RECORDER.seen))}), checked against their policies"
    )
    if terminalreporter.config.option.verbose > 0:
        for function, seen in sorted(RECORDER.seen.items()):
            terminalreporter.write_line(f"  {function}: {', '.join(sorted(seen))}")
    if _problems:
        terminalreporter.section("IAM policies miss actions the handlers used", red=True)
        for problem in _problems:
            terminalreporter.write_line(problem)
