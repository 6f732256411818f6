"""A local API Gateway in front of the Chalice app, for tests and the demo.

`chalice local` neither checks IAM nor fills in the caller, so this gateway
does for the routes what API Gateway does for the parts the code relies on:
on IAM routes it verifies the SigV4 signature (recomputed with botocore)
against credentials the local stack issued and fills
`requestContext.identity` as API Gateway would. On routes with a Chalice
custom authorizer it invokes the authorizer as a TOKEN authorizer: no header
is a 401 without invoking it, the error "Unauthorized" a 401, a policy that
does not allow the method a 403, anything else a 500; on allow the context
and principalId land in `requestContext.authorizer`. Authorizer results are
not cached (as with a TTL of 0). There is no switch that turns a check off.
Its own replies use the API's JSON error shape, as the deployed API's gateway
responses do; a 403 from an authorizer shows the `reason` its context gives,
as a gateway response template using `$context.authorizer.reason` would.
"""

from __future__ import annotations

import hmac
import json
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from chalice import Chalice, IAMAuthorizer
from chalice.app import ChaliceAuthorizer
from chalice.local import ARNMatcher, LambdaContext, RouteMatcher

from sim.credentials import ACCOUNT_ID, CredentialIssuer, IssuedCredentials
from sim.net import LoopbackServer

MAX_SKEW_SECONDS = 300  # what AWS allows between the signature's time and its own
MAX_BODY_BYTES = 10 * 1024 * 1024  # API Gateway's payload limit
_AUTH = re.compile(
    r"^AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[\w-]+)/(?P<service>[\w-]+)/aws4_request,"
    r"\s*SignedHeaders=(?P<headers>[a-z0-9;\-]+),\s*Signature=(?P<signature>[0-9a-f]{64})$"
)


class AuthFailure(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


@dataclass(frozen=True)
class Observed:
    method: str
    path: str
    body: bytes
    caller: IssuedCredentials | None
    authorizer: dict[str, Any] | None = None


def verify_sigv4(
    method: str,
    target: str,
    headers: Mapping[str, str],
    body: bytes,
    issuer: CredentialIssuer,
    now: float,
) -> IssuedCredentials:
    """The issued credentials that signed this request, or AuthFailure as IAM would refuse it."""
    lower = {k.lower(): v for k, v in headers.items()}
    match = _AUTH.match(lower.get("authorization", ""))
    if match is None:
        raise AuthFailure(403, "missing_authentication", "this route needs a SigV4-signed request (IAM)")
    issued = issuer.lookup(match["key"])
    if issued is None:
        raise AuthFailure(403, "invalid_token", "the security token included in the request is invalid")
    if issued.token and not hmac.compare_digest(lower.get("x-amz-security-token", ""), issued.token):
        raise AuthFailure(403, "invalid_token", "the security token included in the request is invalid")
    if match["service"] != "execute-api":
        raise AuthFailure(403, "invalid_signature", "the credential scope must name the execute-api service")
    amz_date = lower.get("x-amz-date", "")
    try:
        signed_at = datetime.strptime(amz_date, "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC).timestamp()
    except ValueError:
        raise AuthFailure(403, "invalid_signature", "X-Amz-Date is missing or malformed") from None
    if abs(now - signed_at) > MAX_SKEW_SECONDS or match["date"] != amz_date[:8]:
        raise AuthFailure(403, "invalid_signature", "signature expired or not yet valid: check the clock")
    signed_headers = match["headers"].split(";")
    if "host" not in signed_headers or "x-amz-date" not in signed_headers:
        raise AuthFailure(403, "invalid_signature", "host and x-amz-date must be signed")
    missing = [h for h in signed_headers if h not in lower]
    if missing:
        raise AuthFailure(403, "invalid_signature", f"signed header(s) not sent: {', '.join(missing)}")
    request = AWSRequest(
        method=method,
        url=f"http://{lower['host']}{target}",
        data=body,
        headers={h: lower[h] for h in signed_headers},
    )
    request.context["timestamp"] = amz_date
    signer = SigV4Auth(
        Credentials(issued.access_key, issued.secret_key, issued.token or None), "execute-api", match["region"]
    )
    canonical = signer.canonical_request(request)
    expected = signer.signature(signer.string_to_sign(request, canonical), request)
    if not hmac.compare_digest(expected, match["signature"]):
        raise AuthFailure(
            403, "invalid_signature", "the request signature we calculated does not match the signature you provided"
        )
    return issued


def run_token_authorizer(
    authorizer: ChaliceAuthorizer, method_arn: str, headers: Mapping[str, str], context: LambdaContext
) -> dict[str, Any]:
    """Invoke a Chalice custom authorizer as API Gateway invokes a TOKEN authorizer.

    Returns what API Gateway puts in `requestContext.authorizer`, or raises
    AuthFailure with the status API Gateway would answer.
    """
    header_name = (authorizer.config.header if authorizer.config is not None else None) or "Authorization"
    token = next((v for k, v in headers.items() if k.lower() == header_name.lower()), "")
    if not token.strip():
        raise AuthFailure(401, "unauthorized", f"this route needs a bearer token in the {header_name} header")
    event = {"type": "TOKEN", "authorizationToken": token, "methodArn": method_arn}
    try:
        result = authorizer(event, context)  # type: ignore[arg-type]
    except Exception as error:
        if str(error) == "Unauthorized":
            raise AuthFailure(401, "unauthorized", "the bearer token is missing, invalid or expired") from None
        raise AuthFailure(500, "authorizer_configuration_error", "the authorizer failed") from None
    if not isinstance(result, dict) or not result.get("principalId") or "policyDocument" not in result:
        raise AuthFailure(500, "authorizer_configuration_error", "the authorizer returned no policy")
    auth_context = result.get("context") or {}
    if not isinstance(auth_context, dict) or any(
        not isinstance(v, str | int | float | bool) for v in auth_context.values()
    ):
        raise AuthFailure(500, "authorizer_configuration_error", "the authorizer context must map names to scalars")
    if not _policy_allows(result["policyDocument"], method_arn):
        reason = auth_context.get("reason")
        message = reason if isinstance(reason, str) and reason else "the caller may not access this resource"
        raise AuthFailure(403, "forbidden", message)
    return {**auth_context, "principalId": str(result["principalId"])}


def _policy_allows(policy: Any, method_arn: str) -> bool:
    """IAM's rule for one action: an explicit Deny wins, otherwise some Allow must match."""
    statements = policy.get("Statement", []) if isinstance(policy, dict) else []
    matcher = ARNMatcher(method_arn)
    allowed = False
    for statement in statements if isinstance(statements, list) else [statements]:
        if not isinstance(statement, dict):
            continue
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else actions
        if not any(a in ("execute-api:Invoke", "execute-api:*", "*") for a in actions):
            continue
        resources = statement.get("Resource", [])
        if not matcher.does_any_resource_match([resources] if isinstance(resources, str) else resources):
            continue
        if statement.get("Effect") == "Deny":
            return False
        allowed = allowed or statement.get("Effect") == "Allow"
    return allowed


class LocalGateway:
    def __init__(
        self,
        app: Chalice,
        issuer: CredentialIssuer,
        clock: Callable[[], float] = time.time,
        stage: str = "api",
    ) -> None:
        self.app = app
        self.issuer = issuer
        self.clock = clock
        self.stage = stage
        self.on_request: Callable[[Observed], None] | None = None
        self._matcher = RouteMatcher(list(app.routes))
        self._invoke_lock = threading.Lock()
        self._server = LoopbackServer(type("BoundHandler", (_Handler,), {"gateway": self}))

    @property
    def url(self) -> str:
        return self._server.url

    def start(self) -> LocalGateway:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def handle(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes, source_ip: str
    ) -> tuple[int, dict[str, str], bytes]:
        split = urlsplit(target)
        try:
            match = self._matcher.match_route(split.path)
        except ValueError:
            return _error(404, "not_found", f"no route {split.path}; see the API reference in the README")
        routes = self.app.routes[match.route]
        entry = routes.get(method)
        caller: IssuedCredentials | None = None
        authorized: dict[str, Any] | None = None
        if len(body) > MAX_BODY_BYTES:
            return _error(413, "payload_too_large", "the request body exceeds 10 MiB")
        if entry is not None and isinstance(entry.authorizer, IAMAuthorizer):
            try:
                caller = verify_sigv4(method, target, headers, body, self.issuer, self.clock())
            except AuthFailure as failure:
                return _error(failure.status, failure.code, failure.message)
        elif entry is not None and isinstance(entry.authorizer, ChaliceAuthorizer):
            method_arn = f"arn:aws:execute-api:us-east-1:{ACCOUNT_ID}:local/{self.stage}/{method}{split.path}"
            auth_context = LambdaContext(
                function_name=f"{self.app.app_name}-dev-{entry.authorizer.name}", memory_size=512, max_runtime_ms=30000
            )
            try:
                authorized = run_token_authorizer(entry.authorizer, method_arn, headers, auth_context)
            except AuthFailure as failure:
                return _error(failure.status, failure.code, failure.message)
        if self.on_request is not None:
            self.on_request(Observed(method, split.path, body, caller, authorized))
        event = self._event(method, split, match.route, match.captured, headers, body, source_ip, caller)
        if authorized is not None:
            event["requestContext"]["authorizer"] = authorized
        context = LambdaContext(function_name=f"{self.app.app_name}-dev", memory_size=512, max_runtime_ms=30000)
        # A Lambda container serves one event at a time, and Chalice keeps the current
        # request on the app object: concurrent calls would read each other's requests.
        with self._invoke_lock:
            result = self.app(event, context)
        response_headers = {k: v for k, v in (result.get("headers") or {}).items()}
        raw = result.get("body") or ""
        return int(result["statusCode"]), response_headers, raw.encode() if isinstance(raw, str) else raw

    def _event(
        self,
        method: str,
        split: Any,
        resource: str,
        captured: dict[str, str],
        headers: Mapping[str, str],
        body: bytes,
        source_ip: str,
        caller: IssuedCredentials | None,
    ) -> dict[str, Any]:
        query = parse_qs(split.query, keep_blank_values=True)
        now = self.clock()
        identity: dict[str, Any] = {
            "cognitoIdentityPoolId": None,
            "accountId": caller.account_id if caller else None,
            "cognitoIdentityId": None,
            "caller": caller.principal_id if caller else None,
            "principalOrgId": None,
            "accessKey": caller.access_key if caller else None,
            "sourceIp": source_ip,
            "cognitoAuthenticationType": None,
            "cognitoAuthenticationProvider": None,
            "userArn": caller.arn if caller else None,
            "userAgent": headers.get("User-Agent"),
            "user": caller.principal_id if caller else None,
        }
        request_id = str(uuid.uuid4())
        return {
            "resource": resource,
            "path": split.path,
            "httpMethod": method,
            "headers": dict(headers),
            "multiValueHeaders": {k: [v] for k, v in headers.items()},
            "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
            "multiValueQueryStringParameters": query or None,
            "pathParameters": {k: unquote(v) for k, v in captured.items()} or None,
            "stageVariables": None,
            "requestContext": {
                "resourceId": "local",
                "resourcePath": resource,
                "httpMethod": method,
                "extendedRequestId": request_id,
                "requestTime": datetime.fromtimestamp(now, tz=UTC).strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "path": f"/{self.stage}{split.path}",
                "accountId": ACCOUNT_ID,
                "protocol": "HTTP/1.1",
                "stage": self.stage,
                "domainPrefix": "local",
                "requestTimeEpoch": int(now * 1000),
                "requestId": request_id,
                "identity": identity,
                "domainName": headers.get("Host", "127.0.0.1"),
                "apiId": "local",
            },
            "body": body.decode("utf-8", errors="replace") if body else None,
            "isBase64Encoded": False,
        }


def _error(status: int, code: str, message: str) -> tuple[int, dict[str, str], bytes]:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    return status, {"Content-Type": "application/json"}, body


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    gateway: LocalGateway

    def _serve(self) -> None:
        gateway = self.gateway
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            status, headers, body = _error(413, "payload_too_large", "the request body exceeds 10 MiB")
            self.close_connection = True
        else:
            raw = self.rfile.read(length) if length else b""
            request_headers = {k: v for k, v in self.headers.items()}
            try:
                status, headers, body = gateway.handle(
                    self.command, self.path, request_headers, raw, self.client_address[0]
                )
            except Exception:  # the Lambda crashed: API Gateway answers 502
                status, headers, body = _error(502, "bad_gateway", "the integration failed")
        self.send_response(status)
        for name, value in headers.items():
            if name.lower() != "content-length":
                self.send_header(name, value)
        if not any(name.lower() == "content-type" for name in headers):
            # API Gateway's proxy integration answers application/json when the Lambda names no type.
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def __getattr__(self, name: str) -> Any:
        # Every method reaches the app (API Gateway answers any method with the API's error shape),
        # rather than http.server's 501 HTML page for the ones it has no do_<METHOD> for.
        if name.startswith("do_"):
            return self._serve
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        pass
