"""`python -m agent.finalize [--spool-dir DIR] <session dir>`: hand a finished recording to the uploader.

Jibri runs its `finalize-script` with the session directory as its only argument inside `stop`, and stays
BUSY until the script exits. So this only writes a spool entry (atomically, flushed to disk) and returns;
the agent's uploader sends the files to S3 afterwards, with the instance protected while any entry is left.

Exit status: 0 when the session is spooled (or was already); 1 when there is nothing to hand off (the
directory is missing, is not a directory, or holds no recording besides metadata.json) or the spool cannot
be written; 2 for a wrong command line. Jibri does nothing with the exit status but log it ("Recording
finalize script finished with exit value N", in FileRecordingJibriService.finalize) together with what the
script printed; it neither retries nor changes its status. A non-zero status therefore only marks the
failure in Jibri's log, next to this script's own message naming the session. Whatever happens, the
session's files are never touched here.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from agent import log as agent_log
from agent.config import ConfigError, load_spool_dir
from agent.spool import METADATA_NAME, Spool, SpoolError, skip_reason, valid_session_id

log = agent_log.get_logger("finalize")

EXIT_SPOOLED = 0
EXIT_NOTHING_SPOOLED = 1
EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="jibri-finalize", description="Spool a finished Jibri session for upload to S3, and return at once."
    )
    parser.add_argument("--spool-dir", help="the agent's spool directory (default: spool_dir of the agent's config)")
    parser.add_argument("--config", help="the agent's INI file, read for spool_dir only")
    parser.add_argument("session_dir", help="the session directory Jibri passes")
    args = parser.parse_args(argv)
    agent_log.configure("INFO")
    session_dir = os.path.abspath(args.session_dir)
    session_id = os.path.basename(session_dir)
    context = {"session_id": session_id, "session_dir": session_dir}
    try:
        spool_dir = args.spool_dir or load_spool_dir(args.config)
    except ConfigError as exc:
        log.error("cannot find the spool: %s; the recording stays in %s", exc, session_dir, extra=context)
        return EXIT_USAGE
    problem = _nothing_to_upload(session_dir, session_id)
    if problem is not None:
        log.error("nothing spooled for session %s: %s", session_id, problem, extra=context)
        return EXIT_NOTHING_SPOOLED
    try:
        entry, new = Spool(spool_dir).add(session_dir)
    except (SpoolError, ValueError) as exc:
        log.error(
            "could not spool session %s (%s); the recording stays in %s", session_id, exc, session_dir, extra=context
        )
        return EXIT_NOTHING_SPOOLED
    log.info(
        "session %s %s for upload",
        session_id,
        "spooled" if new else "was already spooled",
        extra={**context, "spool_dir": spool_dir, "spooled_at": entry.spooled_at},
    )
    return EXIT_SPOOLED


def _nothing_to_upload(session_dir: str, session_id: str) -> str | None:
    if not valid_session_id(session_id):
        return f"the directory name {session_id!r} is not a Jibri session id"
    try:
        owner = os.stat(session_dir).st_uid
        names = os.listdir(session_dir)
    except FileNotFoundError:
        return f"{session_dir} does not exist"
    except NotADirectoryError:
        return f"{session_dir} is not a directory"
    except OSError as exc:
        return f"cannot read {session_dir}: {exc}"
    for name in names:
        try:
            info = os.lstat(os.path.join(session_dir, name))
        except OSError:
            continue
        if skip_reason(name, info, owner) is None:  # what the uploader would send
            return None
    return f"{session_dir} holds no recording (no non-empty file besides {METADATA_NAME})"


if __name__ == "__main__":
    sys.exit(main())
