"""recordings_dir, the boundary of what the uploader (root) reads and deletes: resolved once, trusted, then pinned.

The uploader takes sessions only from directly inside recordings_dir, opened by name relative to it. That is a
boundary only if no one but root can make recordings_dir name another directory: were Jibri's user able to
write one of its parent directories, it could put a link to / in its place and spool a session "etc", and root
would upload and then delete /etc's files. So recordings_dir is resolved once, walking from / one directory at
a time, and each directory on the way that holds the next one must be one only a trusted user (root) can
change: owned by a trusted user, and not writable by its group or others, unless it is sticky (as /tmp is) and
the next one is owned by a trusted user too (then no one else may rename or remove it). A symbolic link on the
way is read, never followed by the kernel, and its target walked the same way: it too must sit in such a
directory, or whoever wrote the link chose the target.

recordings_dir itself is Jibri's: Jibri's user writes the session directories in it, so it may belong to Jibri's
user (or to root, writable by Jibri's group) and be writable by its owner and group. That is safe as no one but
root can replace recordings_dir itself. Its device and inode, as resolved, are kept: each attempt opens the
resolved path again without following a link and must find the very same directory; anything else (unmounted,
replaced) is refused until the agent is restarted with the directory it should use.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection
from dataclasses import dataclass

# Directories are opened like this: no symbolic link followed at the last component, no descriptor leaked.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40  # as the kernel's own limit on links followed in one lookup


class RecordingsDirUnusable(RuntimeError):
    """recordings_dir cannot be opened (missing, unmounted, hidden from the agent's unit), is not the directory
    resolved at start, or could be replaced by someone other than root: nothing of a session is read or deleted.
    The entry stays, counted as a failed upload, and is tried again after a backoff."""


@dataclass(frozen=True)
class RecordingsRoot:
    """recordings_dir as resolved: its real path, and the directory found there (device and inode)."""

    path: str
    dev: int
    ino: int

    def open(self) -> int:
        """A descriptor on recordings_dir, which must still be the directory resolved (else RecordingsDirUnusable)."""
        try:
            descriptor = os.open(self.path, _DIR_FLAGS)
        except OSError as exc:
            raise RecordingsDirUnusable(
                f"recordings_dir {self.path} cannot be opened ({exc.strerror or exc}): missing, unmounted or "
                "hidden from the agent"
            ) from None
        info = os.fstat(descriptor)
        if (info.st_dev, info.st_ino) != (self.dev, self.ino):
            os.close(descriptor)
            raise RecordingsDirUnusable(
                f"recordings_dir {self.path} is no longer the directory the agent found there when it started "
                f"(device {self.dev}, inode {self.ino}; now {info.st_dev}, {info.st_ino}): unmounted or replaced; "
                "restart the agent once it is the directory Jibri records in"
            )
        return descriptor


def default_trusted_owners() -> frozenset[int]:
    """Root, and the user the agent runs as (root too, as installed)."""
    return frozenset({0, os.geteuid()})


def resolve_recordings_dir(configured: str, trusted: Collection[int]) -> RecordingsRoot:
    """Resolve recordings_dir as the module says; RecordingsDirUnusable names what is missing or not trusted."""
    if not os.path.isabs(configured):
        raise RecordingsDirUnusable(f"recordings_dir {configured} is not an absolute path")
    todo = _components(configured)
    # The directories resolved so far, from /: a descriptor on each, its fstat and its name.
    stack: list[tuple[int, os.stat_result, str]] = []
    try:
        stack.append(_open_root())
        links = 0
        while todo:
            name = todo.pop()
            if name == "..":
                if len(stack) > 1:
                    os.close(stack.pop()[0])
                continue
            descriptor, info, _ = stack[-1]
            here = _path_of(stack)
            try:
                child = os.stat(name, dir_fd=descriptor, follow_symlinks=False)
            except OSError as exc:
                raise RecordingsDirUnusable(
                    f"recordings_dir {configured} cannot be resolved: {os.path.join(here, name)}: {exc.strerror or exc}"
                ) from None
            problem = changeable_by_others(here, info, name, child, trusted)
            if problem is not None:
                raise RecordingsDirUnusable(
                    f"recordings_dir {configured} could be replaced by someone other than root: {problem}; "
                    "make each parent directory root's and writable only by root"
                )
            if stat.S_ISLNK(child.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise RecordingsDirUnusable(f"recordings_dir {configured} goes through too many links")
                target = os.readlink(name, dir_fd=descriptor)
                if os.path.isabs(target):
                    while len(stack) > 1:
                        os.close(stack.pop()[0])
                todo.extend(_components(target))
                continue
            try:
                opened = os.open(name, _DIR_FLAGS, dir_fd=descriptor)
            except OSError as exc:
                raise RecordingsDirUnusable(
                    f"recordings_dir {configured} cannot be resolved: {os.path.join(here, name)} cannot be opened "
                    f"as a directory ({exc.strerror or exc})"
                ) from None
            stack.append((opened, os.fstat(opened), name))
            if (stack[-1][1].st_dev, stack[-1][1].st_ino) != (child.st_dev, child.st_ino):
                # Only an untrusted writer could swap it between the look and the open, and none may write here.
                raise RecordingsDirUnusable(f"recordings_dir {configured} changed while it was resolved")
        if len(stack) == 1:
            raise RecordingsDirUnusable(f"recordings_dir {configured} resolves to the root directory")
        _, info, _ = stack[-1]
        return RecordingsRoot(_path_of(stack), info.st_dev, info.st_ino)
    finally:
        for descriptor, _, _ in stack:
            os.close(descriptor)


def _open_root() -> tuple[int, os.stat_result, str]:
    try:
        descriptor = os.open("/", _DIR_FLAGS)
    except OSError as exc:
        raise RecordingsDirUnusable(f"/ cannot be opened ({exc.strerror or exc})") from None
    return descriptor, os.fstat(descriptor), ""


def _components(path: str) -> list[str]:
    """The path's names, last first (to be popped in order); "." and empty names dropped."""
    return [name for name in reversed(path.split("/")) if name not in ("", ".")]


def _path_of(stack: list[tuple[int, os.stat_result, str]]) -> str:
    return "/" + "/".join(name for _, _, name in stack[1:])


def changeable_by_others(
    here: str, info: os.stat_result, name: str, child: os.stat_result | None, trusted: Collection[int]
) -> str | None:
    """Why someone untrusted could replace `name` (its lstat: child; None if it does not exist yet) in the
    directory `here` (its fstat: info); None when only trusted owners can."""
    if info.st_uid not in trusted:
        return f"{here} is owned by uid {info.st_uid}, not by root"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        if not info.st_mode & stat.S_ISVTX:
            return f"{here} is writable by its group or by others"
        if child is not None and child.st_uid not in trusted:
            # Sticky: others may add names but rename or remove only their own, and this one is someone else's.
            return f"{here} is writable by others (sticky) and {name} in it is owned by uid {child.st_uid}"
    return None
