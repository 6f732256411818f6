"""Tokens as a Jitsi deployment would send them, and the key server it would publish to.

For tests and the demo only: HS256 and RS256 tokens, plus the malformed and
malicious ones (unsigned `alg: none`, HS256 signed with the RS256 public key)
that the authorizer must refuse. `KeyServer` publishes public keys on loopback
under Jitsi's ASAP convention, `<url>/<sha256 hex of kid>.pem`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any

import jwt
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from sim.net import LoopbackServer


@dataclass(frozen=True)
class RsaKeyPair:
    private_key: rsa.RSAPrivateKey
    public_pem: bytes

    @classmethod
    def generate(cls, bits: int = 2048) -> RsaKeyPair:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
        public_pem = private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(private_key, public_pem)


def claims(
    *,
    issuer: str = "jitsi",
    audience: str | list[str] = "jibri-autoscaler",
    subject: str | None = "meet.example.com",
    tenant: str | None = None,
    lifetime: float = 3600,
    now: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Claims shaped like a Jitsi token's; pass a claim as None to leave it out."""
    at = time.time() if now is None else now
    body: dict[str, Any] = {
        "iss": issuer,
        "aud": audience,
        "sub": subject,
        "tenant": tenant,
        "iat": int(at),
        "exp": int(at + lifetime),
        "room": "*",
    }
    body.update(extra)
    return {k: v for k, v in body.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str | bytes, **headers: Any) -> str:
    return jwt.encode(payload, secret, algorithm="HS256", headers=headers or None)


def rs256(payload: dict[str, Any], keys: RsaKeyPair, kid: str | None, **headers: Any) -> str:
    if kid is not None:
        headers["kid"] = kid
    return jwt.encode(payload, keys.private_key, algorithm="RS256", headers=headers or None)


def unsigned(payload: dict[str, Any], alg: str = "none") -> str:
    """An `alg: none` token: no signature at all."""
    return f"{_segment({'alg': alg, 'typ': 'JWT'})}.{_segment(payload)}."


def hs256_with_any_key(payload: dict[str, Any], key: bytes, **headers: Any) -> str:
    """HS256 over arbitrary bytes, such as an RS256 public key in PEM: the algorithm-confusion attack.

    PyJWT refuses to sign with a PEM as an HMAC secret, so this signs by hand.
    """
    signing_input = f"{_segment({'alg': 'HS256', 'typ': 'JWT', **headers})}.{_segment(payload)}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(signature)}"


def rs256_with_header(payload: dict[str, Any], keys: RsaKeyPair, header: dict[str, Any]) -> str:
    """RS256 under any header, even one PyJWT would not write (a numeric kid, say)."""
    signing_input = f"{_segment({'alg': 'RS256', 'typ': 'JWT', **header})}.{_segment(payload)}"
    signature = keys.private_key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return f"{signing_input}.{_b64(signature)}"


def _segment(value: dict[str, Any]) -> str:
    return _b64(json.dumps(value, separators=(",", ":")).encode())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def pem_name(kid: str) -> str:
    return f"{hashlib.sha256(kid.encode()).hexdigest()}.pem"


class KeyServer:
    """An ASAP key server on loopback: GET /<prefix>/<sha256 hex of kid>.pem returns the key.

    `bodies` can stand in anything for a key file (garbage, an oversized body); `status`
    makes every reply fail with that status.
    """

    def __init__(self, prefix: str = "/asap") -> None:
        self.prefix = prefix.rstrip("/")
        self.bodies: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.status: int | None = None
        self._lock = threading.Lock()
        self._server = LoopbackServer(type("BoundKeyHandler", (_KeyHandler,), {"keys": self}))

    @property
    def url(self) -> str:
        return f"{self._server.url}{self.prefix}"

    def publish(self, kid: str, keys: RsaKeyPair | bytes) -> None:
        body = keys if isinstance(keys, bytes) else keys.public_pem
        with self._lock:
            self.bodies[f"{self.prefix}/{pem_name(kid)}"] = body

    def withdraw(self, kid: str) -> None:
        with self._lock:
            self.bodies.pop(f"{self.prefix}/{pem_name(kid)}", None)

    def start(self) -> KeyServer:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def _answer(self, path: str) -> tuple[int, bytes]:
        with self._lock:
            self.requests.append(path)
            if self.status is not None:
                return self.status, b"failing on purpose"
            body = self.bodies.get(path)
        return (200, body) if body is not None else (404, b"no such key")


class _KeyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    keys: KeyServer

    def do_GET(self) -> None:
        status, body = self.keys._answer(self.path)
        self.send_response(status)
        self.send_header("Content-Type", "application/x-pem-file" if status == 200 else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass
