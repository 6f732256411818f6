#!/usr/bin/env bash
# Install the Jibri autoscaler agent on a Jibri host (run as root, from this directory or anywhere).
#   ./install.sh                      install or upgrade, keep an existing /etc/jibri-agent/agent.ini
#   API_URL=https://.../api ./install.sh   also set api_url in a newly written agent.ini
# Environment: PREFIX (/opt/jibri-agent), CONFIG_DIR (/etc/jibri-agent), UNIT_DIR (/etc/systemd/system),
# PYTHON (python3), BOTO3_SPEC (boto3==1.44.5), NO_SYSTEMD=1 to skip systemctl.
set -euo pipefail

SOURCE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PREFIX="${PREFIX:-/opt/jibri-agent}"
CONFIG_DIR="${CONFIG_DIR:-/etc/jibri-agent}"
UNIT_DIR="${UNIT_DIR:-/etc/systemd/system}"
PYTHON="${PYTHON:-python3}"
BOTO3_SPEC="${BOTO3_SPEC:-boto3==1.44.5}"
JIBRI_CONF="${JIBRI_CONF:-/etc/jitsi/jibri/jibri.conf}"

say() { printf 'jibri-agent install: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

[[ -f "$SOURCE_DIR/agent.py" && -f "$SOURCE_DIR/__main__.py" ]] || die "run this script from the agent package"
if [[ -z "${NO_SYSTEMD:-}" && "$(id -u)" -ne 0 ]]; then
    die "run as root (it writes $PREFIX, $CONFIG_DIR and a systemd unit)"
fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
    || die "$PYTHON is older than 3.10; install a newer python3 (and python3-venv)"

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
