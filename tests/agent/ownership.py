"""Files and directories that look owned by another user, for tests run by a single (possibly unprivileged) user."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import pytest


class OwnedBySomeoneElse:
    """Files, links and directories that look owned by another user (their owner's uid + 1): a root-only file in
    a session once Jibri's user linked it in and removed its first name (one link again), or a directory of
    Jibri's user above recordings_dir. The stat results are rewritten, as a test run by an unprivileged user
    cannot chown."""

    _EXTRA = ("st_atime", "st_mtime", "st_ctime", "st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_blksize")

    def __init__(self, monkeypatch: pytest.MonkeyPatch, *paths: Any) -> None:
        looks = [os.stat(p, follow_symlinks=False) for p in paths]
        self.files = {(info.st_dev, info.st_ino) for info in looks}
        for attr in ("stat", "lstat", "fstat"):
            monkeypatch.setattr(os, attr, self._wrap(getattr(os, attr)))

    def _wrap(self, real: Callable[..., os.stat_result]) -> Callable[..., os.stat_result]:
        def look(*args: Any, **kwargs: Any) -> os.stat_result:
            info = real(*args, **kwargs)
            if (info.st_dev, info.st_ino) not in self.files:
                return info
            fields = list(info)
            fields[4] = info.st_uid + 1  # st_uid
            return os.stat_result(fields, {name: getattr(info, name) for name in self._EXTRA})

        return look
