#!/usr/bin/env bash
# Starts and stops a real OpenStack cloud on 127.0.0.1 for the Cinder backend's attach tests:
# Keystone 30 + Cinder 29 (tests/peers/cinder/cinder-peer.sh, Keystone auth, Cinder told where
# Nova is) + Nova 34 and Placement 16 in one process (nova_allinone.py: fake virt driver with a
# simulated hypervisor, fake:/ transport, sqlite). Then, as the demo user, three servers booted
# from volume (Nova's fake driver) that volumes are attached to.
#
#   tests/peers/nova/nova-peer.sh start DIR   installs on first use (venvs cached under
#                                              ~/.cache/snapcsi/), starts, waits until ready
#   tests/peers/nova/nova-peer.sh stop DIR    stops everything `start DIR` started, detaches
#                                              the simulated disks' loop devices
#
# `start` writes DIR/peer.env (sourceable): everything cinder-peer.sh writes with Keystone,
# and NOVA_URL (…/v2.1), NOVA_SERVER_A/B/C (server ids), NOVA_ZONE, NOVA_BY_ID_DIR (where the
# simulated guest's /dev/disk/by-id links appear), NOVA_MAX_DISKS (disk devices a server may
# have, its root disk included), MULTIATTACH_TYPE (a volume type that allows multi-attach).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cinder_dir=$here/../cinder

say() { printf 'nova-peer: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
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

# Loop devices of the simulated disks (files under DIR/disks) that a killed Nova left.
detach_disks() {
    local dir=$1 dev
    [[ -d $dir/disks ]] || return 0
    while read -r dev; do
        if [[ -n $dev ]]; then losetup -d "$dev" 2>/dev/null || true; fi
    done < <(losetup -l -n -O NAME,BACK-FILE 2>/dev/null | awk -v p="$dir/disks/" 'index($2, p) == 1 { print $1 }')
}

cmd=${1:-}; dir=${2:-}
[[ -n $cmd && -n $dir ]] || die "usage: $0 start|stop DIR"

case $cmd in
stop)
    stop_pid_file "$dir/nova.pid"
    detach_disks "$(cd "$dir" 2>/dev/null && pwd || echo "$dir")"
    "$cinder_dir/cinder-peer.sh" stop "$dir"
    exit 0
    ;;
start) ;;
*) die "unknown command $cmd" ;;
esac

mkdir -p "$dir"/{nova,logs,by-id,disks}
dir=$(cd "$dir" && pwd)
installed=$("$cinder_dir/install.sh" nova)
venv=$(awk '$1 == "VENV" && $2 == "nova" { print $3 }' <<<"$installed")
[[ -n $venv ]] || die "the Nova venv was not installed"

nova_port=$(free_port)
placement_port=$(free_port)
neutron_port=$(free_port)
# Keystone and Cinder first: Keystone's catalog names Nova and Placement, Cinder knows Nova.
KEYSTONE=1 NOVA_PORT=$nova_port PLACEMENT_PORT=$placement_port "$cinder_dir/cinder-peer.sh" start "$dir"
# shellcheck disable=SC1091
source "$dir/peer.env"

max_disks=6
auth() { # SECTION USER: a keystoneauth password section
    cat <<EOC
[$1]
auth_type = password
auth_url = $KEYSTONE_URL
username = $2
password = $KEYSTONE_SERVICE_PASSWORD
user_domain_name = Default
project_name = service
project_domain_name = Default
region_name = RegionOne
EOC
}

conf=$dir/nova
cp "$venv/etc/nova/api-paste.ini" "$conf/api-paste.ini"
cat >"$conf/nova.conf" <<EOC
[DEFAULT]
transport_url = fake:/
compute_driver = snapcsi_fake.HookedFakeDriver
state_path = $dir/nova
instances_path = $dir/nova/instances
log_dir = $dir/logs
host = snapcsi-compute
my_ip = 127.0.0.1
my_block_storage_ip = 127.0.0.1

[api]
auth_strategy = keystone

# Nova's services are threads of one process here, all writing to sqlite: wait for the lock
# (sqlite3's timeout, 5 s by default) instead of failing a build on a busy machine.
[api_database]
connection = sqlite:///$dir/nova/api.sqlite?timeout=120

[database]
connection = sqlite:///$dir/nova/cell1.sqlite?timeout=120

[oslo_concurrency]
lock_path = $dir/nova/locks

[scheduler]
discover_hosts_in_cells_interval = 1

[compute]
max_disk_devices_to_attach = $max_disks

[vnc]
enabled = false

# No Glance here (servers boot from volumes), but notifications still build image URLs.
[glance]
endpoint_override = http://127.0.0.1:9

[cinder]
endpoint_template = $CINDER_URL/v3/%(project_id)s
os_region_name = RegionOne

$(auth keystone_authtoken nova)
www_authenticate_uri = $KEYSTONE_URL

$(auth placement nova)
valid_interfaces = public

# Cinder lets only Nova delete an attachment Nova made (ConflictNovaUsingAttachment
# otherwise): Nova proves it is Nova with a service token.
$(auth service_user nova)
send_service_user_token = true

# The launcher's empty network endpoint (see nova_allinone.py).
$(auth neutron nova)
endpoint_override = http://127.0.0.1:$neutron_port
EOC
cat >"$conf/placement.conf" <<EOC
[DEFAULT]
log_dir = $dir/logs

[api]
auth_strategy = keystone

[placement_database]
connection = sqlite:///$dir/nova/placement.sqlite?timeout=120

$(auth keystone_authtoken placement)
www_authenticate_uri = $KEYSTONE_URL
EOC

manage() {
    "$venv/bin/nova-manage" --config-file "$conf/nova.conf" "$@" >>"$dir/logs/nova-manage.out" 2>&1 \
        || { tail -20 "$dir/logs/nova-manage.out" >&2; die "nova-manage $* failed"; }
}
"$venv/bin/placement-manage" --config-file "$conf/placement.conf" db sync >"$dir/logs/placement-manage.out" 2>&1 \
    || { tail -20 "$dir/logs/placement-manage.out" >&2; die "placement-manage db sync failed"; }
manage api_db sync
manage cell_v2 map_cell0 --database_connection "sqlite:///$dir/nova/cell0.sqlite?timeout=120"
manage cell_v2 create_cell --name cell1 --database_connection "sqlite:///$dir/nova/cell1.sqlite?timeout=120" --transport-url fake:/
manage db sync

# shellcheck disable=SC2016  # expanded by the inner shell
OS_NOVA_CONFIG_DIR=$conf OS_PLACEMENT_CONFIG_DIR=$conf NOVA_API_PORT=$nova_port \
    PLACEMENT_PORT=$placement_port NEUTRON_PORT=$neutron_port NOVA_BY_ID_DIR=$dir/by-id NOVA_DISK_DIR=$dir/disks \
    PYTHONPATH=$here setsid bash -c 'echo $$ >"$1"; cd "$2" && exec "$3" nova_allinone.py' \
    nova-peer "$dir/nova.pid" "$here" "$venv/bin/python" \
    >"$dir/logs/nova-allinone.out" 2>&1 </dev/null &
for _ in $(seq 50); do [[ -s $dir/nova.pid ]] && break; sleep 0.1; done

{
    echo "NOVA_URL=http://127.0.0.1:$nova_port/v2.1"
    echo "PLACEMENT_URL=http://127.0.0.1:$placement_port"
    echo "NOVA_BY_ID_DIR=$dir/by-id"
    echo "NOVA_MAX_DISKS=$max_disks"
} >>"$dir/peer.env"

# Ready when the compute host is mapped to its cell (the scheduler's periodic discovery) and
# Placement knows its resource provider; then the servers are booted.
if ! "$venv/bin/python" "$here/nova_provision.py" "$dir/peer.env" "$dir/nova.pid" \
    >"$dir/provisioned.env" 2>"$dir/logs/provision.err"; then
    tail -20 "$dir/logs/provision.err" >&2
    tail -40 "$dir/logs/nova-allinone.out" >&2
    die "nova did not become ready"
fi
cat "$dir/provisioned.env" >>"$dir/peer.env"
say "nova ready on 127.0.0.1:$nova_port (pid $(cat "$dir/nova.pid"))"
