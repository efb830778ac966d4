#!/usr/bin/env bash
# Sets up and starts a real Keystone 30.0.0 (sqlite, fernet tokens) on 127.0.0.1:<port> for
# the Cinder backend's tests, then provisions users, a block-storage catalog entry pointing
# at Cinder on <cinder port>, and an application credential (keystone_provision.py).
#
# Usage: keystone-setup.sh VENV DIR PORT CINDER_PORT   (prints peer.env lines on stdout)
# With NOVA_PORT and PLACEMENT_PORT set, the catalog also gets Nova and Placement, with their
# service users (tests/peers/nova).
# Stopped by cinder-peer.sh stop (DIR/keystone.pid leads its own process group).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=$1 dir=$2 port=$3 cinder_port=$4
mkdir -p "$dir"/{fernet-keys,credential-keys,logs}
dir=$(cd "$dir" && pwd)
cat >"$dir/keystone.conf" <<EOC
[DEFAULT]
log_dir = $dir/logs
[database]
connection = sqlite:///$dir/keystone.sqlite
[token]
provider = fernet
expiration = 3600
[fernet_tokens]
key_repository = $dir/fernet-keys
[credential]
key_repository = $dir/credential-keys
EOC
manage() { "$venv/bin/keystone-manage" --config-file "$dir/keystone.conf" "$@" >>"$dir/logs/manage.out" 2>&1; }
admin_password=$(python3 -c 'import secrets; print(secrets.token_hex(12))')
url=http://127.0.0.1:$port/v3
manage db_sync
manage fernet_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
manage credential_setup --keystone-user "$(id -un)" --keystone-group "$(id -gn)"
manage bootstrap --bootstrap-password "$admin_password" --bootstrap-admin-url "$url" \
    --bootstrap-public-url "$url" --bootstrap-internal-url "$url" --bootstrap-region-id RegionOne
# shellcheck disable=SC2016  # expanded by the inner shell
OS_KEYSTONE_CONFIG_FILES=$dir/keystone.conf KEYSTONE_SERVE_PORT=$port setsid bash -c \
    'echo $$ >"$1"; cd "$2" && exec "$3" keystone_serve.py' \
    keystone "$dir/keystone.pid" "$here" "$venv/bin/python" \
    >"$dir/logs/serve.out" 2>&1 </dev/null &
for _ in $(seq 120); do
    curl -sf -m 5 "$url" >/dev/null 2>&1 && break
    kill -0 "$(cat "$dir/keystone.pid" 2>/dev/null || echo 0)" 2>/dev/null \
        || { tail -20 "$dir/logs/serve.out" >&2; echo "keystone exited" >&2; exit 1; }
    sleep 0.5
done
curl -sf -m 5 "$url" >/dev/null || { echo "keystone not ready" >&2; exit 1; }
echo "KEYSTONE_URL=$url"
echo "KEYSTONE_ADMIN_USER=admin"
echo "KEYSTONE_ADMIN_PASSWORD=$admin_password"
"$venv/bin/python" "$here/keystone_provision.py" "$url" "$admin_password" "$cinder_port" \
    ${NOVA_PORT:+"$NOVA_PORT" "${PLACEMENT_PORT:?PLACEMENT_PORT goes with NOVA_PORT}"}
echo "keystone ready on 127.0.0.1:$port" >&2
