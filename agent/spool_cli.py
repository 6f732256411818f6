"""`python -m agent spool list|show|retry|set-aside`: an operator's view of the spool, and the two decisions on it.

Run on the instance, as root for retry and set-aside, with the agent's own config file (the same loading and
checks as the service: `--config`, default /etc/jibri-agent/agent.ini, then JIBRI_AGENT_* overrides).

- list: every spool entry (and every entry file that cannot be read) with its state, attempts, next attempt,
  last error and whether it counts as a failed upload; `--json` for a program.
- show SESSION: the entry, and the session directory's files (name, size, what the uploader makes of each),
  looked at without following a link and without reading any file.
- retry SESSION | --all-failed: clear the backoff (next_attempt_at) and nothing else, so the running uploader
  tries the session at its next pass. The uploader reads the spool afresh at every pass and waits at most
  poll_interval_seconds between passes (longer only while it is uploading another session); nothing needs waking.
- set-aside SESSION --yes: stop holding the instance for this session. Its directory is renamed (never copied,
  never deleted) from recordings_dir into a root-only directory, by default jibri-agent-set-aside next to
  spool_dir, as <set-aside dir>/<session>-<UTC time>/<session>; then the entry is recorded there as
  <session>.json and removed from the spool. The agent's next round reports the lower pending and failed
  counts; protection is then lifted once nothing else holds it. An entry file that cannot be read is moved
  there as it is. Without --yes it prints what it would do and exits 1.

The uploader (another process) takes no lock on the spool, so these commands cannot exclude it; what a race
leads to instead: an entry the uploader is attempting at that very moment may be written back by it once
more (retry: the attempt it was making replaces the cleared backoff; set-aside: it writes the entry again,
and its next pass finds the session directory gone and drops the entry with an error in its log). Either way
no file is lost: a directory set aside stays where it was moved, and the uploader, which opens the session
by its name in recordings_dir, deletes nothing there. retry writes only if the entry file is still the one it
read (checked right before the write).

Exit status: 0 done; 1 set-aside without --yes (nothing done); 2 an error (bad config, unknown session, not
root, a refusal), with the reason on stderr and nothing changed.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import stat
import sys
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TextIO

from agent.boundary import (
    RecordingsDirUnusable,
    RecordingsRoot,
    changeable_by_others,
    default_trusted_owners,
    resolve_recordings_dir,
)
from agent.config import AgentConfig, ConfigError, load_config
from agent.log import UTC
from agent.spool import (
    Spool,
    SpoolEntry,
    SpoolError,
    confirmed_match,
    format_time,
    parse_time,
    skip_reason,
    valid_session_id,
)

EXIT_OK = 0
EXIT_NOT_DONE = 1
EXIT_ERROR = 2
SET_ASIDE_NAME = "jibri-agent-set-aside"
ERROR_CHARS = 60  # of last_error, in list's table
_ENTRY_SUFFIX = ".json"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_RECORD_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class CommandError(Exception):
    """Exit 2 with this message; nothing was changed (or the message says what was)."""


# -- the command line ------------------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    """The `spool` command's options and subcommands, on its own parser or as `python -m agent spool`."""
    parser.add_argument(
        "--config",
        default=argparse.SUPPRESS,
        help="the agent's INI file, as the service uses it (default /etc/jibri-agent/agent.ini)",
    )
    commands = parser.add_subparsers(dest="spool_command", metavar="COMMAND", required=True)
    listing = commands.add_parser("list", help="every spooled session, one a line")
    listing.add_argument("--json", action="store_true", help="one JSON object, for a program")
    show = commands.add_parser("show", help="a session's spool entry and the files of its directory")
    show.add_argument("session", help="the session id (the name of its directory)")
    show.add_argument("--json", action="store_true", help="one JSON object, for a program")
    retry = commands.add_parser("retry", help="clear a session's backoff: the uploader tries it at its next pass")
    target = retry.add_mutually_exclusive_group(required=True)
    target.add_argument("session", nargs="?", help="the session id")
    target.add_argument("--all-failed", action="store_true", help="every session counted as a failed upload")
    aside = commands.add_parser(
        "set-aside",
        help="move a session out of recordings_dir into a root-only directory and drop its spool entry",
    )
    aside.add_argument("session", help="the session id")
    aside.add_argument("--yes", action="store_true", help="do it (without: print what would be done, exit 1)")
    aside.add_argument(
        "--entry-only",
        action="store_true",
        help="set aside only the spool entry, leaving the session directory (wherever it is) untouched",
    )
    aside.add_argument(
        "--set-aside-dir",
        help=f"where to move it: a root-only directory on recordings_dir's file system, outside recordings_dir "
        f"(default: {SET_ASIDE_NAME} next to spool_dir)",
    )


def main(argv: Sequence[str] | None = None, **deps: Any) -> int:
    """Parse `argv` as the `spool` subcommand's and run it; `deps` as for `run`."""
    parser = argparse.ArgumentParser(prog="jibri-agent spool", description="Look at and act on the agent's spool.")
    configure(parser)
    return run(parser.parse_args(argv), **deps)


def run(
    args: argparse.Namespace,
    *,
    environ: Mapping[str, str] | None = None,
    geteuid: Callable[[], int] = os.geteuid,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run the parsed command; returns the exit status."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        config = load_config(getattr(args, "config", None), environ)
    except ConfigError as exc:
        print(f"jibri-agent spool: configuration error: {exc}", file=err)
        return EXIT_ERROR
    command = _Command(config, geteuid, now, out, err)
    try:
        if args.spool_command == "list":
            return command.list_entries(args.json)
        if args.spool_command == "show":
            return command.show(args.session, args.json)
        if args.spool_command == "retry":
            return command.retry(args.session, args.all_failed)
        return command.set_aside(args.session, args.yes, args.entry_only, args.set_aside_dir)
    except (CommandError, SpoolError, RecordingsDirUnusable, OSError) as exc:
        print(f"jibri-agent spool: {exc}", file=err)
        return EXIT_ERROR


# -- looking -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Look:
    """One entry file as read: the entry, or why it cannot be read (then entry is None)."""

    session_id: str
    entry: SpoolEntry | None
    problem: str | None = None

    @property
    def failed(self) -> bool:
        return self.entry is None or self.entry.failing


@dataclass
class _Listing:
    """A session directory as the uploader would find it, or why it is not looked at."""

    path: str
    problem: str | None = None  # why it is not listed (or only in part)
    absent: bool = False  # recordings_dir holds nothing of that name
    files: list[dict[str, Any]] = field(default_factory=list)
    identity: tuple[int, int] | None = None  # the directory's device and inode, once opened


class _Command:
    def __init__(
        self,
        config: AgentConfig,
        geteuid: Callable[[], int],
        now: Callable[[], datetime],
        out: TextIO,
        err: TextIO,
    ) -> None:
        self.config = config
        self.spool = Spool(config.spool_dir, now=now)
        self._geteuid = geteuid
        self._now = now
        self.out = out
        self.err = err

    # -- list ------------------------------------------------------------------------------------------------

    def list_entries(self, as_json: bool) -> int:
        looks = self._look_all()
        pending, failed = len(looks), sum(1 for look in looks if look.failed)
        if as_json:
            body = {
                "spool_dir": self.config.spool_dir,
                "pending_uploads": pending,
                "failed_uploads": failed,
                "entries": [self._summary(look) for look in looks],
            }
            print(json.dumps(body, indent=2), file=self.out)
            return EXIT_OK
        rows = [("SESSION", "STATE", "ATTEMPTS", "NEXT ATTEMPT", "FAILED", "LAST ERROR")]
        for look in looks:
            summary = self._summary(look)
            error = summary["last_error"] or ""
            error = error if len(error) <= ERROR_CHARS else error[: ERROR_CHARS - 3] + "..."
            attempts = summary["attempts"]
            rows.append(
                (
                    look.session_id,
                    summary["state"],
                    "-" if attempts is None else str(attempts),
                    summary["next_attempt"] or "-",
                    "yes" if look.failed else "no",
                    " ".join(error.split()),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
        for row in rows:
            cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
            print("  ".join([*cells, row[-1]]).rstrip(), file=self.out)
        print(
            f"{pending} pending upload(s), {failed} failed, as the agent reports them (spool {self.config.spool_dir})",
            file=self.out,
        )
        return EXIT_OK

    def _look_all(self) -> list[_Look]:
        readable: list[_Look] = []
        unreadable: list[_Look] = []
        for session_id in self.spool.session_ids():
            look = self._look(session_id)
            if look is not None:
                (readable if look.entry is not None else unreadable).append(look)
        readable.sort(key=_oldest_first)
        return readable + unreadable  # the uploader's order: oldest first

    def _look(self, session_id: str) -> _Look | None:
        """The entry of session_id, or why it cannot be read; None when there is no entry file."""
        try:
            entry = self.spool.get(session_id)
        except SpoolError as exc:
            return _Look(session_id, None, str(exc))
        return None if entry is None else _Look(session_id, entry)

    def _summary(self, look: _Look) -> dict[str, Any]:
        entry = look.entry
        if entry is None:
            return {
                "session_id": look.session_id,
                "state": "unreadable",
                "attempts": None,
                "next_attempt": None,
                "next_attempt_at": None,
                "last_error": look.problem,
                "failed": True,
                "readable": False,
            }
        return {
            "session_id": entry.session_id,
            "state": entry.state,
            "attempts": entry.attempts,
            "next_attempt": "due" if entry.due(self._now()) else entry.next_attempt_at,
            "next_attempt_at": entry.next_attempt_at,
            "last_error": entry.last_error,
            "failed": entry.failing,
            "readable": True,
            "spooled_at": entry.spooled_at,
            "session_dir": entry.session_dir,
        }

    # -- show ------------------------------------------------------------------------------------------------

    def show(self, session_id: str, as_json: bool) -> int:
        look = self._known(session_id)
        entry_file = self._entry_file(session_id)
        listing = self._listing(look.entry) if look.entry is not None else None
        if as_json:
            body: dict[str, Any] = {
                "entry_file": entry_file,
                "entry": look.entry.to_json() if look.entry is not None else None,
                "unreadable": look.problem,
                "failed": look.failed,
            }
            if listing is not None:
                body["session_dir"] = {"path": listing.path, "problem": listing.problem, "files": listing.files}
            print(json.dumps(body, indent=2), file=self.out)
            return EXIT_OK
        counted = "counted as a failed upload" if look.failed else "not counted as a failed upload"
        if look.entry is None:
            print(f"spool entry {entry_file} ({counted}) cannot be read: {look.problem}", file=self.out)
            print(f"  the file: {_describe(entry_file)}; set it aside to move it out of the spool", file=self.out)
            return EXIT_OK
        print(f"spool entry {entry_file} ({counted}):", file=self.out)
        print(json.dumps(look.entry.to_json(), indent=2, sort_keys=True), file=self.out)
        assert listing is not None
        if listing.identity is None:
            print(f"session directory not listed: {listing.problem}", file=self.out)
            return EXIT_OK
        print(f"session directory {listing.path}: {len(listing.files)} name(s)", file=self.out)
        if listing.problem is not None:
            print(f"  listed only in part: {listing.problem}", file=self.out)
        width = max([len(str(f["size"])) for f in listing.files] + [4])
        for item in listing.files:
            print(f"  {str(item['size']).rjust(width)}  {item['name']}  ({item['note']})", file=self.out)
        return EXIT_OK

    def _listing(self, entry: SpoolEntry) -> _Listing:
        """The session directory's names, sizes and what the uploader makes of each, from their lstat only."""
        listing = _Listing(entry.session_dir)
        try:
            root = self._recordings_root()
            self._check_place(entry, root)
            parent = root.open()
        except (CommandError, RecordingsDirUnusable) as exc:
            listing.problem = str(exc)
            return listing
        try:
            try:
                descriptor = os.open(entry.session_id, _DIR_FLAGS, dir_fd=parent)
            except OSError as exc:
                listing.problem = f"{entry.session_dir} {_open_problem(entry.session_id, parent, exc)}"
                listing.absent = isinstance(exc, FileNotFoundError)
                return listing
            try:
                info = os.fstat(descriptor)
                listing.identity = (info.st_dev, info.st_ino)
                confirmed = {item[0]: item for item in entry.confirmed_files or ()}
                for name in sorted(os.listdir(descriptor)):
                    try:
                        found = os.stat(name, dir_fd=descriptor, follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    listing.files.append(
                        {
                            "name": name,
                            "size": found.st_size,
                            "kind": _kind(found),
                            "note": _note(name, found, info.st_uid, confirmed),
                        }
                    )
            finally:
                os.close(descriptor)
        except OSError as exc:
            listing.problem = f"{entry.session_dir} cannot be read: {exc.strerror or exc}"
        finally:
            os.close(parent)
        return listing

    # -- retry -----------------------------------------------------------------------------------------------

    def retry(self, session_id: str | None, all_failed: bool) -> int:
        self._require_root("retry")
        if not all_failed:
            assert session_id is not None
            look = self._known(session_id)
            if look.entry is None:
                raise CommandError(_unretriable(look))
            self._retry_one(look.entry)
        else:
            looks = [look for look in self._look_all() if look.failed]
            if not looks:
                print("no session is counted as a failed upload: nothing to retry", file=self.out)
                return EXIT_OK
            problems = 0
            for look in looks:
                try:
                    if look.entry is None:
                        raise CommandError(_unretriable(look))
                    self._retry_one(look.entry)
                except (CommandError, SpoolError) as exc:
                    problems += 1
                    print(f"jibri-agent spool: {exc}", file=self.err)
            if problems:
                return EXIT_ERROR
        print(
            f"the agent's uploader reads the spool at each pass: it tries again within poll_interval_seconds "
            f"({self.config.poll_interval_seconds:g} s), or once it has finished an upload under way",
            file=self.out,
        )
        return EXIT_OK

    def _retry_one(self, entry: SpoolEntry) -> None:
        path = self._entry_file(entry.session_id)
        # Written only over the very entry read: one the uploader rewrote meanwhile is left to it.
        before = _identity(path)
        current = self.spool.get(entry.session_id)
        if current is None:
            print(f"session {entry.session_id}: its entry left the spool meanwhile, nothing to retry", file=self.out)
            return
        if current.next_attempt_at is None:
            print(f"session {entry.session_id} ({current.state}): already due, nothing to change", file=self.out)
            return
        cleared = replace(current, next_attempt_at=None)  # its state, attempts and confirmed files stay as they are
        if _identity(path) != before:
            raise CommandError(
                f"the spool entry of session {entry.session_id} changed while it was being retried (the uploader is "
                "at it); nothing written: look again with list, and retry if it is still waiting"
            )
        self.spool.write(cleared)
        print(
            f"session {entry.session_id} ({cleared.state}, {cleared.attempts} attempt(s)): next attempt moved from "
            f"{current.next_attempt_at} to now",
            file=self.out,
        )

    # -- set-aside -------------------------------------------------------------------------------------------

    def set_aside(self, session_id: str, yes: bool, entry_only: bool, set_aside_dir: str | None) -> int:
        self._require_root("set-aside")
        look = self._known(session_id)
        entry = look.entry
        aside = _SetAsideDir(set_aside_dir or os.path.join(os.path.dirname(self.config.spool_dir), SET_ASIDE_NAME))
        aside.check(self.config, default_trusted_owners())
        spool_fd = _open_dir(self.config.spool_dir, "spool_dir")
        root: RecordingsRoot | None = None
        listing: _Listing | None = None
        try:
            if entry is None:
                # Moved as it is (a link, a FIFO, anything): by rename, so only on the spool's file system.
                aside.require_device(os.fstat(spool_fd).st_dev, f"spool_dir {self.config.spool_dir}")
            elif not entry_only:
                root, listing = self._movable(entry)
                aside.require_device(root.dev, f"recordings_dir {root.path}")
            name = f"{session_id}-{self._now().astimezone(UTC).strftime('%Y%m%dT%H%M%SZ')}"
            self._print_plan(look, listing, entry_only, aside, name, yes)
            if not yes:
                print("nothing done: run it again with --yes to do it", file=self.out)
                return EXIT_NOT_DONE
            self._do_set_aside(look, root, listing, aside, name, spool_fd)
        finally:
            os.close(spool_fd)
        print(
            f"the agent reports the lower pending and failed counts at its next round (within "
            f"{self.config.poll_interval_seconds:g} s); the instance's protection is lifted once nothing else holds it",
            file=self.out,
        )
        return EXIT_OK

    def _movable(self, entry: SpoolEntry) -> tuple[RecordingsRoot, _Listing]:
        """recordings_dir as resolved, and the session directory directly inside it, which must be a directory
        (not a link); CommandError otherwise."""
        hint = "; nothing done (--entry-only sets aside only the spool entry and leaves the directory as it is)"
        try:
            root = self._recordings_root()
        except RecordingsDirUnusable as exc:
            # The uploader holds every session for the same reason; dropping entries now would lose recordings.
            raise CommandError(f"{exc}; nothing done: make recordings_dir usable first") from None
        try:
            self._check_place(entry, root)
        except CommandError as exc:
            raise CommandError(f"{exc}{hint}") from None
        listing = self._listing(entry)  # opens recordings_dir: still the directory resolved, or a problem
        if listing.absent:
            # Gone, or somewhere this command cannot see (a volume not mounted, a directory replaced since the
            # agent started): only an operator who checked may let the entry, and the protection, go.
            raise CommandError(
                f"{entry.session_dir} is not in recordings_dir {root.path}; if the recording is really gone,"
                " --entry-only sets aside the spool entry; nothing done"
            )
        if listing.identity is None:
            raise CommandError(f"{listing.problem}{hint}")
        return root, listing

    def _print_plan(
        self, look: _Look, listing: _Listing | None, entry_only: bool, aside: _SetAsideDir, name: str, yes: bool
    ) -> None:
        entry = look.entry
        verb = "setting" if yes else "would set"
        destination = os.path.join(aside.path, name)
        if entry is None:
            print(
                f"{verb} aside the unreadable spool entry of session {look.session_id} ({look.problem}):",
                file=self.out,
            )
        else:
            error = f": {entry.last_error}" if entry.last_error else ""
            print(
                f"{verb} aside session {entry.session_id} ({entry.state}, {entry.attempts} attempt(s){error}):",
                file=self.out,
            )
        if not aside.exists:
            print(f"  create {aside.path} (root only)", file=self.out)
        print(f"  create {destination}", file=self.out)
        if entry is not None and entry_only:
            print(f"  leave {entry.session_dir} as it is (--entry-only)", file=self.out)
        elif listing is not None:
            size = sum(f["size"] for f in listing.files if f["kind"] == "file")
            print(
                f"  move {listing.path} ({len(listing.files)} name(s), {size} bytes in files) to "
                f"{os.path.join(destination, look.session_id)}",
                file=self.out,
            )
        target = os.path.join(destination, look.session_id + _ENTRY_SUFFIX)
        if entry is None:
            print(f"  move the entry file {self._entry_file(look.session_id)} to {target}", file=self.out)
        else:
            print(f"  record the spool entry in {target}, then remove it from the spool", file=self.out)

    def _do_set_aside(
        self,
        look: _Look,
        root: RecordingsRoot | None,
        listing: _Listing | None,
        aside: _SetAsideDir,
        name: str,
        spool_fd: int,
    ) -> None:
        session_id = look.session_id
        aside_fd = aside.open(create=True)
        try:
            destination, dest_fd = _new_directory(aside_fd, aside.path, name)
            try:
                if root is not None and listing is not None and listing.identity is not None:
                    # First the directory: should anything stop here, the entry still holds the instance and the
                    # uploader, finding no directory, drops the entry itself.
                    self._move_session(session_id, root, listing.identity, dest_fd, destination)
                    print(f"moved {listing.path} to {os.path.join(destination, session_id)}", file=self.out)
                entry_name = session_id + _ENTRY_SUFFIX
                if look.entry is None:
                    os.rename(entry_name, entry_name, src_dir_fd=spool_fd, dst_dir_fd=dest_fd)
                    _sync(dest_fd)
                    _sync(spool_fd)
                    print(f"moved the entry file to {os.path.join(destination, entry_name)}", file=self.out)
                    return
                latest = self.spool.get(session_id) or look.entry  # as the uploader may just have rewritten it
                _write_record(dest_fd, entry_name, latest)
                self.spool.remove(session_id)
                print(
                    f"recorded the entry in {os.path.join(destination, entry_name)} and removed it from the spool",
                    file=self.out,
                )
            finally:
                os.close(dest_fd)
        finally:
            os.close(aside_fd)

    def _move_session(
        self, session_id: str, root: RecordingsRoot, identity: tuple[int, int], dest_fd: int, destination: str
    ) -> None:
        try:
            parent = root.open()
        except RecordingsDirUnusable as exc:
            raise CommandError(f"{exc}; nothing moved") from None
        try:
            found = os.stat(session_id, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISDIR(found.st_mode) or (found.st_dev, found.st_ino) != identity:
                raise CommandError(
                    f"{os.path.join(root.path, session_id)} changed since it was looked at; nothing moved"
                )
            # A rename moves the name: nothing is copied, and a link put there meanwhile is moved, never followed.
            os.rename(session_id, session_id, src_dir_fd=parent, dst_dir_fd=dest_fd)
            _sync(dest_fd)
            _sync(parent)
        except OSError as exc:
            if exc.errno == errno.EXDEV:
                raise CommandError(
                    f"{destination} is on another file system than recordings_dir; nothing moved"
                ) from None
            raise CommandError(f"cannot move {os.path.join(root.path, session_id)}: {exc}; nothing moved") from None
        finally:
            os.close(parent)
        moved = os.stat(session_id, dir_fd=dest_fd, follow_symlinks=False)
        if (moved.st_dev, moved.st_ino) != identity:
            raise CommandError(
                f"the session directory was replaced while it was moved: what was there is now in "
                f"{os.path.join(destination, session_id)}; the spool entry is kept, look at both"
            )

    # -- shared ----------------------------------------------------------------------------------------------

    def _require_root(self, what: str) -> None:
        if self._geteuid() != 0:
            raise CommandError(f"{what} changes the agent's spool and recordings: run it as root")

    def _known(self, session_id: str) -> _Look:
        if not valid_session_id(session_id):
            raise CommandError(f"{session_id!r} is not a session id (letters, digits, '.', '_' and '-')")
        look = self._look(session_id)
        if look is None:
            raise CommandError(f"no spool entry for session {session_id} in {self.config.spool_dir}")
        return look

    def _entry_file(self, session_id: str) -> str:
        return os.path.join(self.config.spool_dir, session_id + _ENTRY_SUFFIX)

    def _recordings_root(self) -> RecordingsRoot:
        """recordings_dir as the uploader resolves it (agent.boundary)."""
        if self.config.recordings_dir is None:
            raise CommandError("recordings_dir is not set in the agent's config")
        return resolve_recordings_dir(self.config.recordings_dir, default_trusted_owners())

    @staticmethod
    def _check_place(entry: SpoolEntry, root: RecordingsRoot) -> None:
        """As the uploader's: the session directory is named after the session, directly inside recordings_dir."""
        if os.path.basename(entry.session_dir) != entry.session_id:
            raise CommandError(f"{entry.session_dir} is not named after session {entry.session_id}")
        if os.path.realpath(os.path.dirname(entry.session_dir)) != root.path:
            raise CommandError(f"{entry.session_dir} is not directly inside recordings_dir {root.path}")


# -- the set-aside directory -----------------------------------------------------------------------------------


class _SetAsideDir:
    """Where sessions are set aside: a directory only root can reach, through directories only root can change,
    neither inside recordings_dir nor in the spool (both writable by Jibri's user)."""

    def __init__(self, path: str) -> None:
        if not os.path.isabs(path) or "\0" in path:
            raise CommandError(f"the set-aside directory must be an absolute path, not {path!r}")
        self.path = os.path.realpath(path)
        self.exists = False
        self.device = 0
        self._trusted: Collection[int] = frozenset({0})

    def check(self, config: AgentConfig, trusted: Collection[int]) -> None:
        """Refuse (CommandError) a place someone other than root could reach or change; create nothing."""
        self._trusted = trusted
        for other, what in ((config.recordings_dir, "recordings_dir"), (config.spool_dir, "spool_dir")):
            if other is None:
                continue
            real = os.path.realpath(other)
            if _within(self.path, real) or _within(real, self.path):
                raise CommandError(
                    f"the set-aside directory {self.path} must be outside {what} {real}, and not hold it"
                )
        ancestors = _ancestors(self.path)
        for holder, held in zip(ancestors, [*ancestors[1:], self.path], strict=True):
            try:
                info = os.lstat(holder)
                child = os.lstat(held)
            except FileNotFoundError:
                if held != self.path:
                    raise CommandError(
                        f"{held} does not exist: give the set-aside directory an existing parent"
                    ) from None
                child = None
            problem = changeable_by_others(holder, info, held, child, trusted)
            if problem is not None:
                raise CommandError(f"the set-aside directory {self.path} is not root's alone: {problem}")
        try:
            info = os.lstat(self.path)
        except FileNotFoundError:
            self.device = os.lstat(os.path.dirname(self.path)).st_dev
            return
        self._check_itself(info, trusted)
        self.exists = True
        self.device = info.st_dev

    def require_device(self, device: int, what: str) -> None:
        if device != self.device:
            raise CommandError(
                f"the set-aside directory {self.path} is on another file system than {what}: a move there would be "
                "a copy; give --set-aside-dir a root-only directory on that file system, outside recordings_dir"
            )

    def open(self, *, create: bool) -> int:
        if create and not self.exists:
            parent = _open_dir(os.path.dirname(self.path), "the set-aside directory's parent")
            try:
                name = os.path.basename(self.path)
                made = False
                try:
                    os.mkdir(name, 0o700, dir_fd=parent)
                    made = True
                except FileExistsError:
                    pass
                descriptor = os.open(name, _DIR_FLAGS, dir_fd=parent)
                if made:
                    os.fchmod(descriptor, 0o700)  # whatever the umask
                    _sync(parent)
            finally:
                os.close(parent)
        else:
            descriptor = _open_dir(self.path, "the set-aside directory")
        try:
            self._check_itself(os.fstat(descriptor), self._trusted)
        except BaseException:
            os.close(descriptor)
            raise
        return descriptor

    def _check_itself(self, info: os.stat_result, trusted: Collection[int]) -> None:
        if not stat.S_ISDIR(info.st_mode):
            raise CommandError(f"the set-aside directory {self.path} is not a directory")
        if info.st_uid not in trusted or info.st_mode & 0o077:
            raise CommandError(
                f"the set-aside directory {self.path} must be root's and reachable by no one else "
                f"(owner uid {info.st_uid}, mode {stat.S_IMODE(info.st_mode):04o}; chmod 0700 it)"
            )


def _ancestors(path: str) -> list[str]:
    """ "/" and each directory down to path's parent."""
    found = ["/"]
    for name in path.strip("/").split("/")[:-1]:
        found.append(os.path.join(found[-1], name))
    return found


def _unretriable(look: _Look) -> str:
    return (
        f"the spool entry of session {look.session_id} cannot be read ({look.problem}), so it cannot be retried; "
        f"set it aside (set-aside {look.session_id} --yes) to move it out of the spool"
    )


def _oldest_first(look: _Look) -> tuple[datetime, str]:
    assert look.entry is not None
    return parse_time(look.entry.spooled_at), look.session_id


def _within(path: str, other: str) -> bool:
    return path == other or path.startswith(other.rstrip("/") + "/")


# -- small pieces ------------------------------------------------------------------------------------------------


def _open_dir(path: str, what: str) -> int:
    try:
        return os.open(path, _DIR_FLAGS)
    except OSError as exc:
        raise CommandError(f"{what} {path} cannot be opened as a directory: {exc.strerror or exc}") from None


def _new_directory(parent: int, parent_path: str, name: str) -> tuple[str, int]:
    """A directory made now in parent (never one that was there): its path and a descriptor on it."""
    for attempt in range(1, 100):
        chosen = name if attempt == 1 else f"{name}-{attempt}"
        try:
            os.mkdir(chosen, 0o700, dir_fd=parent)
        except FileExistsError:
            continue
        _sync(parent)
        return os.path.join(parent_path, chosen), os.open(chosen, _DIR_FLAGS, dir_fd=parent)
    raise CommandError(f"cannot find a free name for {name} in {parent_path}")


def _write_record(directory: int, name: str, entry: SpoolEntry) -> None:
    data = json.dumps(entry.to_json(), indent=2, sort_keys=True).encode("utf-8") + b"\n"
    descriptor = os.open(name, _RECORD_FLAGS, 0o600, dir_fd=directory)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    _sync(directory)


def _sync(descriptor: int) -> None:
    with contextlib.suppress(OSError):
        os.fsync(descriptor)


def _identity(path: str) -> tuple[int, int, int, int] | None:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


def _kind(info: os.stat_result) -> str:
    if stat.S_ISREG(info.st_mode):
        return "file"
    if stat.S_ISDIR(info.st_mode):
        return "directory"
    if stat.S_ISLNK(info.st_mode):
        return "symbolic link"
    return "other"


def _note(name: str, info: os.stat_result, owner: int, confirmed: Mapping[str, Any]) -> str:
    """What the uploader makes of the file, from its lstat."""
    if name in confirmed:
        if confirmed_match(confirmed[name], info):
            return "confirmed in S3, to be deleted"
        return "changed since the control plane confirmed it: kept"
    reason = skip_reason(name, info, owner)
    return "to upload" if reason is None else f"skipped: {reason}"


def _open_problem(session_id: str, parent: int, exc: OSError) -> str:
    if isinstance(exc, FileNotFoundError):
        return "does not exist"
    if exc.errno in (errno.ELOOP, errno.ENOTDIR):
        try:
            found = os.stat(session_id, dir_fd=parent, follow_symlinks=False)
        except OSError:
            return "does not exist"
        return "is a symbolic link, not a session directory" if stat.S_ISLNK(found.st_mode) else "is not a directory"
    return f"cannot be opened: {exc.strerror or exc}"


def _describe(path: str) -> str:
    try:
        info = os.lstat(path)
    except OSError as exc:
        return f"cannot be looked at ({exc.strerror or exc})"
    return f"{_kind(info)}, {info.st_size} bytes, modified {format_time(datetime.fromtimestamp(info.st_mtime, UTC))}"
