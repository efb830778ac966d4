#!/usr/bin/env bash
# Starts and stops a real OpenStack Cinder 29.0.0 (api + scheduler + volume in one process,
# fake driver, in-process RPC, sqlite) on 127.0.0.1 for the Cinder backend's tests, and
# optionally a real Keystone 30.0.0 in front of it.
#
#   tests/peers/cinder/cinder-peer.sh start DIR   installs on first use (cached under
#                                                  ~/.cache/snapcsi/), starts, waits until ready
#   tests/peers/cinder/cinder-peer.sh stop DIR    stops what `start DIR` started
#
# Environment for `start`:
#   CINDER_PORT     port of the Cinder API (default 0 = a free one)
#   KEYSTONE=1      also start Keystone and make Cinder check tokens with it
#   KEYSTONE_PORT   port of Keystone (default 0 = a free one)
#   FAKE_DELAY      seconds every create/delete takes in the fake driver (default 0)
#   NOVA_PORT, PLACEMENT_PORT   (with KEYSTONE=1; tests/peers/nova/nova-peer.sh sets them)
#                   Keystone's catalog gets Nova and Placement, and Cinder tells Nova when an
#                   in-use volume grows (its [nova] section)
#
# `start` writes DIR/peer.env (sourceable) with CINDER_URL (the volume endpoint root, e.g.
# http://127.0.0.1:8776), CINDER_PROJECT (the project id in noauth mode), and with Keystone:
# KEYSTONE_URL (…/v3), the admin and demo users' names, passwords and project.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

say() { printf 'cinder-peer: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# eventlet binds with SO_REUSEPORT: a second server on a taken port starts "fine" and
# silently shares it. Refuse instead.
port_is_free() {
    python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
finally:
    s.close()
PY
}

stop_pid_file() {
    local file=$1 pid
    [[ -f $file ]] || return 0
    pid=$(cat "$file")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
        kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$file"
}

cmd=${1:-}; dir=${2:-}
[[ -n $cmd && -n $dir ]] || die "usage: $0 start|stop DIR"

case $cmd in
stop)
    stop_pid_file "$dir/cinder.pid"
    stop_pid_file "$dir/keystone/keystone.pid"
    exit 0
    ;;
start) ;;
*) die "unknown command $cmd" ;;
esac

mkdir -p "$dir"/{state,locks,logs}
dir=$(cd "$dir" && pwd)
want=(cinder)
[[ ${KEYSTONE:-0} == 1 ]] && want+=(keystone)
# Not a process substitution: bash would keep a helper alive holding our caller's stdout.
installed=$("$here/install.sh" "${want[@]}")
cinder_venv=$(awk '$1 == "VENV" && $2 == "cinder" { print $3 }' <<<"$installed")
keystone_venv=$(awk '$1 == "VENV" && $2 == "keystone" { print $3 }' <<<"$installed")
[[ -n $cinder_venv ]] || die "the Cinder venv was not installed"

cinder_port=${CINDER_PORT:-0}
((cinder_port != 0)) || cinder_port=$(free_port)
port_is_free "$cinder_port" || die "port $cinder_port is taken (eventlet would share it silently)"
project=0123456789abcdef0123456789abcdef
auth_strategy=noauth
{
    echo "CINDER_URL=http://127.0.0.1:$cinder_port"
    echo "CINDER_PROJECT=$project"
} >"$dir/peer.env"

keystone_section=""
if [[ ${KEYSTONE:-0} == 1 ]]; then
    [[ -n $keystone_venv ]] || die "the Keystone venv was not installed"
    keystone_port=${KEYSTONE_PORT:-0}
    ((keystone_port != 0)) || keystone_port=$(free_port)
    port_is_free "$keystone_port" || die "port $keystone_port is taken"
    "$here/keystone-setup.sh" "$keystone_venv" "$dir/keystone" "$keystone_port" "$cinder_port" >>"$dir/peer.env"
    # shellcheck disable=SC1091
    source "$dir/peer.env"
    auth_strategy=keystone
    keystone_section="
[keystone_authtoken]
www_authenticate_uri = $KEYSTONE_URL
auth_url = $KEYSTONE_URL
auth_type = password
username = $KEYSTONE_SERVICE_USER
password = $KEYSTONE_SERVICE_PASSWORD
user_domain_name = Default
project_name = service
project_domain_name = Default
# Validate every token with Keystone (no cache), so a revoked token is refused at once.
token_cache_time = -1
"
    if [[ -n ${NOVA_PORT:-} ]]; then
        keystone_section+="
[nova]
region_name = RegionOne
interface = public
auth_type = password
auth_url = $KEYSTONE_URL
username = $KEYSTONE_SERVICE_USER
password = $KEYSTONE_SERVICE_PASSWORD
user_domain_name = Default
project_name = service
project_domain_name = Default
"
    fi
fi

etc=$cinder_venv/etc/cinder
cat >"$dir/cinder.conf" <<EOC
[DEFAULT]
auth_strategy = $auth_strategy
transport_url = fake:/
api_paste_config = $etc/api-paste.ini
rootwrap_config = $etc/rootwrap.conf
resource_query_filters_file = $etc/resource_filters.json
state_path = $dir/state
osapi_volume_listen = 127.0.0.1
osapi_volume_listen_port = $cinder_port
osapi_volume_workers = 1
my_ip = 127.0.0.1
host = snapcsi-test
enabled_backends = fake
default_volume_type = __DEFAULT__
log_dir = $dir/logs
graceful_shutdown_timeout = 5

[database]
connection = sqlite:///$dir/cinder.sqlite

[oslo_concurrency]
lock_path = $dir/locks

[coordination]
backend_url = file://$dir/state

[fake]
volume_driver = cinder_allinone.HookedFakeDriver
volume_backend_name = fake
target_helper = fake
$keystone_section
EOC

rm -f "$dir/cinder.sqlite"
"$cinder_venv/bin/cinder-manage" --config-file "$dir/cinder.conf" db sync >"$dir/logs/db-sync.out" 2>&1 \
    || { tail -20 "$dir/logs/db-sync.out" >&2; die "cinder-manage db sync failed"; }
# The server records its own pid (setsid may fork) and leads its own process group.
# shellcheck disable=SC2016  # expanded by the inner shell
FAKE_DELAY=${FAKE_DELAY:-0} PYTHONPATH=$here setsid bash -c \
    'echo $$ >"$1"; cd "$2" && exec "$3" cinder_allinone.py --config-file "$4"' \
    cinder-peer "$dir/cinder.pid" "$here" "$cinder_venv/bin/python" "$dir/cinder.conf" \
    >"$dir/logs/allinone.out" 2>&1 </dev/null &
for _ in $(seq 50); do [[ -s $dir/cinder.pid ]] && break; sleep 0.1; done

# Ready means the scheduler knows the fake pool (the API alone answers earlier).
headers=(-H "X-Auth-Token: admin:$project")
if [[ ${KEYSTONE:-0} == 1 ]]; then
    headers=(-H "X-Auth-Token: $KEYSTONE_ADMIN_TOKEN")
    project=$KEYSTONE_ADMIN_PROJECT_ID
fi
for _ in $(seq 240); do
    if ! kill -0 "$(cat "$dir/cinder.pid")" 2>/dev/null; then
        tail -30 "$dir"/logs/* >&2 || true
        die "cinder exited during start-up"
    fi
    if curl -sf -m 5 "${headers[@]}" "http://127.0.0.1:$cinder_port/v3/$project/scheduler-stats/get_pools" 2>/dev/null | grep -q '"name"'; then
        say "cinder ready on 127.0.0.1:$cinder_port (pid $(cat "$dir/cinder.pid"), auth $auth_strategy)"
        exit 0
    fi
    sleep 0.5
done
tail -30 "$dir"/logs/*.log >&2 || true
die "cinder did not become ready within 120 s"
