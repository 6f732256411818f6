#!/usr/bin/env bash
# Install the Jibri autoscaler agent on a Jibri host (run as root, from this directory or anywhere).
#   ./install.sh                      install or upgrade, keep an existing /etc/jibri-agent/agent.ini
#   API_URL=https://.../api ./install.sh   also set api_url in a newly written agent.ini
# Environment: PREFIX (/opt/jibri-agent), CONFIG_DIR (/etc/jibri-agent), UNIT_DIR (/etc/systemd/system),
# PYTHON (python3), BOTO3_SPEC (boto3==1.44.5), NO_SYSTEMD=1 to skip systemctl, JIBRI_USER (jibri: the user
# Jibri runs as, who writes the spool), SPOOL_DIR (default: spool_dir of agent.ini, else /var/spool/jibri-agent),
# JIBRI_CONF (/etc/jitsi/jibri/jibri.conf), RECORDINGS_DIR (default: recordings-directory in JIBRI_CONF; written
# resolved as recordings_dir into an agent.ini that has none or an empty one, and required when JIBRI_CONF does
# not name it). A recordings_dir agent.ini already has is kept, but checked the same way (absolute, and not
# where the agent's unit cannot see it).
set -euo pipefail

SOURCE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PREFIX="${PREFIX:-/opt/jibri-agent}"
CONFIG_DIR="${CONFIG_DIR:-/etc/jibri-agent}"
UNIT_DIR="${UNIT_DIR:-/etc/systemd/system}"
PYTHON="${PYTHON:-python3}"
BOTO3_SPEC="${BOTO3_SPEC:-boto3==1.44.5}"
JIBRI_CONF="${JIBRI_CONF:-/etc/jitsi/jibri/jibri.conf}"
JIBRI_USER="${JIBRI_USER:-jibri}"
FINALIZE_SCRIPT="$PREFIX/bin/jibri-finalize.sh"

say() { printf 'jibri-agent install: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[[ -f "$SOURCE_DIR/agent.py" && -f "$SOURCE_DIR/__main__.py" ]] || die "run this script from the agent package"
if [[ -z "${NO_SYSTEMD:-}" && "$(id -u)" -ne 0 ]]; then
    die "run as root (it writes $PREFIX, $CONFIG_DIR and a systemd unit)"
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "$PYTHON is older than 3.10; install a newer python3 (and python3-venv)"

# The last value of KEY in agent.ini ("key = value" or "key: value"), trailing blanks removed.
ini_value() {
    sed -n -E "s/^[[:space:]]*$1[[:space:]]*[=:][[:space:]]*//p" "$CONFIG_DIR/agent.ini" | tail -n 1 \
        | sed -E 's/[[:space:]]+$//'
}

# Jibri's recordings-directory from jibri.conf (HOCON: nested in jibri { recording { } }, on one line or several,
# or dotted; = or :; quoted or not; a # or // comment after it); the last one wins, as in HOCON. Empty when the
# file does not set it.
jibri_recordings_dir() {
    "$PYTHON" - "$JIBRI_CONF" <<'PYTHON'
import json
import re
import sys

KEY = re.compile(r'(?<![\w-])"?recordings-directory"?\s*[=:]\s*("(?:[^"\\]|\\.)*"|[^,}\]]*)')


def without_comment(line):
    """The line up to a # or // that is not inside a quoted string."""
    quoted, i = False, 0
    while i < len(line):
        if quoted and line[i] == "\\":
            i += 2
            continue
        if line[i] == '"':
            quoted = not quoted
        elif not quoted and (line[i] == "#" or line.startswith("//", i)):
            return line[:i]
        i += 1
    return line


found = ""
with open(sys.argv[1], encoding="utf-8", errors="replace") as conf:
    for line in conf:
        for match in KEY.finditer(without_comment(line.rstrip("\n"))):
            value = match.group(1).strip()
            if value.startswith('"'):
                try:
                    value = json.loads(value)
                except ValueError:
                    value = value[1:-1]
            found = value
print(found)
PYTHON
}

# Prints $1 (a recordings_dir, from where $2 says) resolved; dies unless it is an absolute path the agent's unit
# can see once resolved.
resolved_recordings_dir() {
    local value="$1" from="$2" resolved
    [[ "$value" == /* ]] || die "$from must be an absolute path, not $value"
    resolved="$(realpath -m -- "$value")" || die "cannot resolve $from $value"
    case "$resolved/" in
        // | /tmp/* | /var/tmp/* | /home/* | /root/* | /run/user/*)
            die "$from $value (resolved: $resolved) is hidden from the agent (its unit has PrivateTmp and" \
                "ProtectHome) or is the root directory; point Jibri's recordings-directory elsewhere, e.g." \
                "/srv/recordings, and rerun" ;;
    esac
    printf '%s\n' "$resolved"
}

# The uploader runs as root and deletes what it uploads, so it needs recordings_dir: only session directories
# directly inside Jibri's recordings directory are uploaded and deleted. Settled before anything is installed.
RECORDINGS_DIR_NEEDED=yes
if [[ -e "$CONFIG_DIR/agent.ini" ]]; then
    EXISTING_RECORDINGS_DIR="$(ini_value recordings_dir)"
    if [[ -n "$EXISTING_RECORDINGS_DIR" ]]; then
        # Kept as it is, but checked as the agent will: it refuses to start with a recordings_dir it cannot see.
        resolved_recordings_dir "$EXISTING_RECORDINGS_DIR" "recordings_dir in $CONFIG_DIR/agent.ini" >/dev/null
        RECORDINGS_DIR_NEEDED=no
    elif [[ "$(ini_value upload_enabled | tr '[:upper:]' '[:lower:]')" =~ ^(0|false|no|off)$ ]]; then
        RECORDINGS_DIR_NEEDED=no
    fi
fi
if [[ "$RECORDINGS_DIR_NEEDED" == yes ]]; then
    if [[ -z "${RECORDINGS_DIR:-}" ]]; then
        [[ -r "$JIBRI_CONF" ]] || die "cannot read $JIBRI_CONF to find Jibri's recordings-directory; rerun with" \
            "RECORDINGS_DIR=<the recordings-directory Jibri uses> (or JIBRI_CONF=<path of jibri.conf>)"
        RECORDINGS_DIR="$(jibri_recordings_dir)" || die "cannot read recordings-directory from $JIBRI_CONF"
        # Jibri's own default (reference.conf) is /tmp/recordings, which the agent's unit cannot see (PrivateTmp).
        [[ -n "$RECORDINGS_DIR" ]] || die "$JIBRI_CONF sets no recordings-directory, so Jibri records in" \
            "/tmp/recordings, which the agent cannot see; set jibri { recording { recordings-directory =" \
            "\"/srv/recordings\" } } there (or another directory outside /tmp and /home) and rerun, or rerun" \
            "with RECORDINGS_DIR=<the recordings-directory Jibri uses>"
    fi
    [[ "$RECORDINGS_DIR" == /* ]] || die "Jibri's recordings-directory must be an absolute path, not $RECORDINGS_DIR"
    RESOLVED="$(resolved_recordings_dir "$RECORDINGS_DIR" "Jibri's recordings-directory")" || exit 1
    # Checked once resolved: the resolved path is what goes into agent.ini (and through sed).
    [[ "$RESOLVED" =~ ^[A-Za-z0-9._/@+,=:-]+$ ]] \
        || die "recordings-directory $RECORDINGS_DIR (resolved: $RESOLVED) has characters this script does not" \
            "write; set recordings_dir in $CONFIG_DIR/agent.ini yourself and rerun"
    RECORDINGS_DIR="$RESOLVED"
fi

say "virtualenv in $PREFIX/venv with $BOTO3_SPEC"
install -d -m 0755 "$PREFIX" "$PREFIX/lib"
if [[ ! -x "$PREFIX/venv/bin/python" ]]; then
    "$PYTHON" -m venv "$PREFIX/venv" || die "could not create a virtualenv (on Debian/Ubuntu: apt-get install python3-venv)"
fi
"$PREFIX/venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade "$BOTO3_SPEC"

say "agent package in $PREFIX/lib/agent"
staging="$(mktemp -d "$PREFIX/lib/.agent.XXXXXX")"
trap 'rm -rf "$staging"' EXIT
install -m 0644 "$SOURCE_DIR"/*.py "$staging/"
rm -rf "$PREFIX/lib/agent.old"
if [[ -d "$PREFIX/lib/agent" ]]; then mv "$PREFIX/lib/agent" "$PREFIX/lib/agent.old"; fi
mv "$staging" "$PREFIX/lib/agent"
chmod 0755 "$PREFIX/lib/agent"
rm -rf "$PREFIX/lib/agent.old"
trap - EXIT

install -d -m 0750 "$CONFIG_DIR"
if [[ -e "$CONFIG_DIR/agent.ini" ]]; then
    say "keeping $CONFIG_DIR/agent.ini"
else
    install -m 0640 "$SOURCE_DIR/agent.ini.example" "$CONFIG_DIR/agent.ini"
    if [[ -n "${API_URL:-}" ]]; then
        sed -i "s|^api_url = .*|api_url = ${API_URL//|/\\|}|" "$CONFIG_DIR/agent.ini"
    fi
    say "wrote $CONFIG_DIR/agent.ini from the example: set api_url there"
fi
if [[ "$RECORDINGS_DIR_NEEDED" == yes ]]; then
    # In place of an empty recordings_dir (a second one would keep the agent from starting), else of the example's
    # commented line, else right under [agent].
    if grep -q -E '^[[:space:]]*recordings_dir[[:space:]]*[=:]' "$CONFIG_DIR/agent.ini"; then
        sed -i -E "0,/^[[:space:]]*recordings_dir[[:space:]]*[=:].*/s||recordings_dir = $RECORDINGS_DIR|" \
            "$CONFIG_DIR/agent.ini"
    elif grep -q -E '^[#;][[:space:]]*recordings_dir[[:space:]]*[=:]' "$CONFIG_DIR/agent.ini"; then
        sed -i -E "0,/^[#;][[:space:]]*recordings_dir[[:space:]]*[=:].*/s||recordings_dir = $RECORDINGS_DIR|" \
            "$CONFIG_DIR/agent.ini"
    else
        sed -i -E "0,/^\[agent\][[:space:]]*$/s||[agent]\nrecordings_dir = $RECORDINGS_DIR|" "$CONFIG_DIR/agent.ini"
    fi
    grep -q -F -x "recordings_dir = $RECORDINGS_DIR" "$CONFIG_DIR/agent.ini" \
        || die "could not write recordings_dir into $CONFIG_DIR/agent.ini (is there an [agent] line?)"
    say "recordings_dir = $RECORDINGS_DIR in $CONFIG_DIR/agent.ini (Jibri's recordings-directory)"
    [[ -d "$RECORDINGS_DIR" ]] || say "note: $RECORDINGS_DIR does not exist yet; Jibri records there"
fi

# The finalize script runs as Jibri's user, who cannot read agent.ini: the spool path is written into it.
if [[ -z "${SPOOL_DIR:-}" ]]; then
    SPOOL_DIR="$(sed -n 's/^[[:space:]]*spool_dir[[:space:]]*=[[:space:]]*//p' "$CONFIG_DIR/agent.ini" | tail -n 1)"
fi
SPOOL_DIR="${SPOOL_DIR:-/var/spool/jibri-agent}"
[[ "$SPOOL_DIR" == /* ]] || die "spool_dir must be an absolute path, not $SPOOL_DIR"
if id "$JIBRI_USER" >/dev/null 2>&1; then
    # Jibri's user adds entries, the agent (root) updates and removes them; setgid keeps new entries in the group.
    install -d -m 2770 -o root -g "$(id -gn "$JIBRI_USER")" "$SPOOL_DIR"
    say "spool in $SPOOL_DIR, writable by $JIBRI_USER"
else
    install -d -m 0755 "$SPOOL_DIR"
    say "note: no user $JIBRI_USER; $SPOOL_DIR must be writable by the user Jibri runs as (JIBRI_USER=...)"
fi

install -d -m 0755 "$PREFIX/bin"
sed -e "s|@PYTHON@|$PREFIX/venv/bin/python|" -e "s|@SPOOL_DIR@|${SPOOL_DIR//|/\\|}|" -e "s|@LIB_DIR@|$PREFIX/lib|" \
    "$SOURCE_DIR/jibri-finalize.sh" >"$FINALIZE_SCRIPT.new"
chmod 0755 "$FINALIZE_SCRIPT.new"
mv "$FINALIZE_SCRIPT.new" "$FINALIZE_SCRIPT"
say "finalize script in $FINALIZE_SCRIPT"

# The operator's command for the spool (list, show, retry, set-aside; README), with the service's config.
SPOOL_COMMAND="$PREFIX/bin/jibri-agent-spool"
cat >"$SPOOL_COMMAND.new" <<EOF
#!/bin/sh
# Look at the agent's spool and act on it, as root: jibri-agent-spool list|show|retry|set-aside ... (--help)
export PYTHONPATH="$PREFIX/lib"
export PYTHONDONTWRITEBYTECODE=1
exec "$PREFIX/venv/bin/python" -m agent spool --config "$CONFIG_DIR/agent.ini" "\$@"
EOF
chmod 0755 "$SPOOL_COMMAND.new"
mv "$SPOOL_COMMAND.new" "$SPOOL_COMMAND"
say "spool command in $SPOOL_COMMAND"
if [[ -f "$JIBRI_CONF" ]] && ! grep -q "$FINALIZE_SCRIPT" "$JIBRI_CONF"; then
    say "note: $JIBRI_CONF does not run the finalize script; add inside jibri { recording { } }:"
    say "        finalize-script = \"$FINALIZE_SCRIPT\""
fi

if [[ -f "$JIBRI_CONF" ]] && ! grep -q '127\.0\.0\.1:8787' "$JIBRI_CONF"; then
    say "note: $JIBRI_CONF does not name the agent as a webhook subscriber; add inside jibri { }:"
    say '        webhook { subscribers = ["http://127.0.0.1:8787"] }'
fi

install -d -m 0755 "$UNIT_DIR"
install -m 0644 "$SOURCE_DIR/jibri-agent.service" "$UNIT_DIR/jibri-agent.service"
if [[ -n "${NO_SYSTEMD:-}" ]]; then
    say "NO_SYSTEMD set: unit copied to $UNIT_DIR, not enabled"
    exit 0
fi
systemctl daemon-reload
systemctl enable jibri-agent.service
systemctl restart jibri-agent.service
say "installed; follow it with: journalctl -u jibri-agent -f"
