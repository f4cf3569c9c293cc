#!/bin/sh
# Install the CityGW edge agent on Raspberry Pi OS (Debian 12 based), as root, from a checkout:
#   sudo deploy/edge/install.sh [path/to/agent.yaml]
# Creates the user citygw (group dialout for RS-485 adapters), a venv in /opt/citygw/.venv,
# /etc/citygw (config) and /var/lib/citygw (journal), and enables the systemd unit.
set -eu

SRC=$(cd "$(dirname "$0")/../.." && pwd)
CONFIG=${1:-}
PREFIX=/opt/citygw

[ "$(id -u)" = 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }

apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv python3-dev gcc

id citygw >/dev/null 2>&1 || useradd --system --home-dir /var/lib/citygw --shell /usr/sbin/nologin citygw
usermod -a -G dialout citygw

install -d -o root -g root -m 0755 "$PREFIX"
install -d -o root -g citygw -m 0750 /etc/citygw
install -d -o citygw -g citygw -m 0750 /var/lib/citygw

python3 -m venv "$PREFIX/.venv"
"$PREFIX/.venv/bin/pip" install --quiet --upgrade pip
"$PREFIX/.venv/bin/pip" install --quiet "$SRC"

if [ -n "$CONFIG" ]; then
    install -o root -g citygw -m 0640 "$CONFIG" /etc/citygw/agent.yaml
elif [ ! -e /etc/citygw/agent.yaml ]; then
    install -o root -g citygw -m 0640 "$SRC/edge/examples/agent.yaml" /etc/citygw/agent.yaml
    echo "edit /etc/citygw/agent.yaml (agent_id, lines, devices), then: systemctl restart citygw-edge"
fi
if [ ! -e /etc/citygw/edge.env ]; then
    install -o root -g citygw -m 0640 /dev/null /etc/citygw/edge.env
    echo "# CITYGW_BROKER_URL=mqtts://AGENT_ID:PASSWORD@broker.city.example:8883" > /etc/citygw/edge.env
fi

# Refuse a config that would not start, before systemd tries (exit 2 names file, field and fix).
"$PREFIX/.venv/bin/python" -c "from edge.config_file import load_agent_config; load_agent_config('/etc/citygw/agent.yaml')" \
    || echo "warning: /etc/citygw/agent.yaml does not validate yet; fix it before starting" >&2

install -o root -g root -m 0644 "$SRC/deploy/edge/citygw-edge.service" /etc/systemd/system/citygw-edge.service
systemctl daemon-reload
systemctl enable citygw-edge.service
systemctl restart citygw-edge.service || true
echo "installed; logs: journalctl -u citygw-edge -f"
