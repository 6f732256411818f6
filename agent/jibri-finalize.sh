#!/bin/sh
# Jibri's finalize script (jibri.recording.finalize-script): spool the session directory for the agent's
# uploader and exit at once, so that Jibri is free for the next recording. install.sh fills in the paths.
# Usage: jibri-finalize.sh <session directory>
PYTHON="${JIBRI_AGENT_PYTHON:-@PYTHON@}"
SPOOL_DIR="${JIBRI_AGENT_SPOOL_DIR:-@SPOOL_DIR@}"
export PYTHONPATH="${JIBRI_AGENT_LIB:-@LIB_DIR@}${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONDONTWRITEBYTECODE=1
exec "$PYTHON" -m agent.finalize --spool-dir "$SPOOL_DIR" -- "$@"
