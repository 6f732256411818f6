"""Credentials the local stack issues, one set per simulated instance role session.

The local gateway checks SigV4 signatures against these, as IAM does for
API Gateway, and names the caller by the role session they belong to.
"""

from __future__ import annotations

import secrets
import string
import threading
from dataclasses import dataclass

ACCOUNT_ID = "123456789012"
_ALPHABET = string.ascii_uppercase + string.digits


def _key_id(prefix: str) -> str:
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(16))


@dataclass(frozen=True)
class IssuedCredentials:
    access_key: str
    secret_key: str
    token: str
    arn: str
    principal_id: str
    account_id: str = ACCOUNT_ID

    def for_imds(self) -> dict[str, str]:
        return {"AccessKeyId": self.access_key, "SecretAccessKey": self.secret_key, "Token": self.token}


class CredentialIssuer:
    def __init__(self, account_id: str = ACCOUNT_ID) -> None:
        self.account_id = account_id
        self._by_key: dict[str, IssuedCredentials] = {}
        self._role_ids: dict[str, str] = {}
        self._lock = threading.Lock()

    def role_session(self, role_name: str, session_name: str) -> IssuedCredentials:
        """What STS hands an EC2 instance role: the session name is the instance id."""
        with self._lock:
            role_id = self._role_ids.setdefault(role_name, _key_id("AROA"))
        arn = f"arn:aws:sts::{self.account_id}:assumed-role/{role_name}/{session_name}"
        return self._issue(arn, f"{role_id}:{session_name}", "ASIA")

    def user(self, user_name: str) -> IssuedCredentials:
        """Long-term keys of an IAM user, e.g. an operator reading the pool."""
        return self._issue(f"arn:aws:iam::{self.account_id}:user/{user_name}", _key_id("AIDA"), "AKIA", token="")

    def revoke(self, access_key: str) -> None:
        with self._lock:
            self._by_key.pop(access_key, None)

    def lookup(self, access_key: str) -> IssuedCredentials | None:
        with self._lock:
            return self._by_key.get(access_key)

    def _issue(self, arn: str, principal_id: str, key_prefix: str, token: str | None = None) -> IssuedCredentials:
        issued = IssuedCredentials(
            access_key=_key_id(key_prefix),
            secret_key=secrets.token_urlsafe(30),
            token=secrets.token_urlsafe(48) if token is None else token,
            arn=arn,
            principal_id=principal_id,
            account_id=self.account_id,
        )
        with self._lock:
            self._by_key[issued.access_key] = issued
        return issued
