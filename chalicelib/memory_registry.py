"""In-memory registry: for unit tests and the simulator. Same contract as DynamoDB."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator

from chalicelib.registry import (
    LostRace,
    Recorder,
    WriteResult,
    Written,
    checked_save_target,
    decode_page_token,
    encode_page_token,
)
from chalicelib.states import RecorderState


class MemoryRegistry:
    def __init__(self, pool: str) -> None:
        self.pool = pool
        self._items: dict[str, Recorder] = {}
        self._lock = threading.Lock()

    def get(self, instance_id: str) -> Recorder | None:
        with self._lock:
            return self._items.get(instance_id)

    def create(self, recorder: Recorder) -> WriteResult:
        if recorder.pool != self.pool:
            raise ValueError(f"recorder belongs to pool {recorder.pool}, not {self.pool}")
        with self._lock:
            if recorder.instance_id in self._items:
                return LostRace(self._items[recorder.instance_id])
            stored = dataclasses.replace(recorder, version=1)
            self._items[recorder.instance_id] = stored
            return Written(stored)

    def save(self, expected: Recorder, updated: Recorder) -> WriteResult:
        target = checked_save_target(expected, updated)
        with self._lock:
            current = self._items.get(expected.instance_id)
            if current is None or current.state is not expected.state or current.version != expected.version:
                return LostRace(current)
            self._items[expected.instance_id] = target
            return Written(target)

    def list_by_state(self, state: RecorderState) -> list[Recorder]:
        with self._lock:
            return sorted((r for r in self._items.values() if r.state is state), key=lambda r: r.instance_id)

    def list_all(self) -> Iterator[Recorder]:
        with self._lock:
            items = sorted(self._items.values(), key=lambda r: r.instance_id)
        return iter(items)

    def list_page(self, limit: int, token: str | None) -> tuple[list[Recorder], str | None]:
        after = decode_page_token(token) if token else ""
        live = [r for r in self.list_all() if r.state is not RecorderState.TERMINATED and r.instance_id > after]
        page = live[:limit]
        more = len(live) > limit
        return page, encode_page_token(page[-1].instance_id) if more and page else None
