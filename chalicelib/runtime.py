"""Wiring: settings, adapters and services, built lazily on first use.

Nothing here touches AWS at import, so a cold start pays only for the clients
the invoked handler uses; tests replace parts with `Runtime(...)`.
"""

from __future__ import annotations

from typing import Any

import boto3

from chalicelib.autoscaling import AutoScaling, Boto3AutoScaling
from chalicelib.clock import Clock, SystemClock
from chalicelib.config import Settings
from chalicelib.dynamodb_registry import DynamoDBRegistry
from chalicelib.observability import record_transition
from chalicelib.registry import Registry
from chalicelib.status import StatusService


class Runtime:
    def __init__(
        self,
        settings: Settings | None = None,
        registry: Registry | None = None,
        autoscaling: AutoScaling | None = None,
        clock: Clock | None = None,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._autoscaling = autoscaling
        self.clock: Clock = clock or SystemClock()

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = Settings.from_env()
        return self._settings

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            table: Any = boto3.resource("dynamodb").Table(self.settings.table_name)
            self._registry = DynamoDBRegistry(table, self.settings.pool_name)
        return self._registry

    @property
    def autoscaling(self) -> AutoScaling:
        if self._autoscaling is None:
            self._autoscaling = Boto3AutoScaling(boto3.client("autoscaling"), self.settings.asg_name)
        return self._autoscaling

    def status_service(self) -> StatusService:
        return StatusService(self.registry, self.autoscaling, self.clock, on_transition=record_transition)
