"""Waits until the all-in-one Nova can boot servers, then makes what the attach tests need,
through the real APIs, and prints peer.env lines (KEY=value):

  a flavor without local disk (servers boot from a Cinder volume: there is no Glance here)
  a Cinder volume type `multiattach` (extra spec multiattach="<is> True")
  room in the demo project's Cinder quota (200 volumes)
  three servers of the demo project, each booted from its own 1 GiB volume, ACTIVE

Usage: python nova_provision.py <peer.env> <nova pid file>
"""
import json
import os
import sys
import time
import urllib.error
import urllib.request

COMPUTE = "compute 2.89"


def read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            key, sep, value = line.strip().partition("=")
            if sep:
                env[key] = value
    return env


def call(url, method="GET", body=None, token=None, version=None, want_token=False):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json")
    if token:
        request.add_header("X-Auth-Token", token)
    if version:
        request.add_header("OpenStack-API-Version", version)
    try:
        answer = urllib.request.urlopen(request, timeout=60)
    except urllib.error.HTTPError as e:
        raise SystemExit("%s %s: HTTP %s: %s" % (method, url, e.code, e.read()[:500]))
    with answer:
        payload = json.loads(answer.read() or b"null")
        if want_token:
            return answer.headers["X-Subject-Token"], payload
        return payload


def token(env, user, password, project):
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
    return call(env["KEYSTONE_URL"] + "/auth/tokens", "POST", body, want_token=True)[0]


def alive(pid_file):
    with open(pid_file) as f:
        pid = int(f.read().strip())
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("nova exited during start-up")


def wait(what, check, pid_file, limit=180):
    started = time.time()
    last = None
    while time.time() - started < limit:
        alive(pid_file)
        try:
            result = check()
            if result:
                print("nova-provision: %s after %.1fs" % (what, time.time() - started), file=sys.stderr)
                return result
        except (urllib.error.URLError, OSError, KeyError, ValueError) as e:
            last = e
        time.sleep(0.5)
    sys.exit("nova-provision: %s: not within %ss (last error: %s)" % (what, limit, last))


def main():
    env_path, pid_file = sys.argv[1], sys.argv[2]
    env = read_env(env_path)
    nova, cinder = env["NOVA_URL"], env["CINDER_URL"] + "/v3"
    admin = token(env, "admin", env["KEYSTONE_ADMIN_PASSWORD"], "admin")
    admin_project = env["KEYSTONE_ADMIN_PROJECT_ID"]

    def hypervisor_up():
        found = call(nova + "/os-hypervisors/detail", token=admin, version=COMPUTE)["hypervisors"]
        return [h for h in found if h.get("state") == "up"]

    wait("the compute host is up and mapped", hypervisor_up, pid_file)
    wait("placement has the compute node", lambda: call(
        env["PLACEMENT_URL"] + "/resource_providers", token=admin,
        version="placement 1.0")["resource_providers"], pid_file)

    flavor = call(nova + "/flavors", "POST", {"flavor": {
        "name": "snapcsi.tiny", "ram": 64, "vcpus": 1, "disk": 0}}, admin, COMPUTE)["flavor"]["id"]
    call("%s/%s/types" % (cinder, admin_project), "POST", {"volume_type": {
        "name": "multiattach", "extra_specs": {"multiattach": "<is> True"}}}, admin, "volume 3.0")

    # The tests make more than Cinder's default 10 volumes per project.
    call("%s/%s/os-quota-sets/%s" % (cinder, admin_project, env["KEYSTONE_DEMO_PROJECT_ID"]), "PUT",
         {"quota_set": {"volumes": 200, "gigabytes": 2000, "snapshots": 200}}, admin, "volume 3.0")

    demo = token(env, env["KEYSTONE_DEMO_USER"], env["KEYSTONE_DEMO_PASSWORD"], env["KEYSTONE_DEMO_PROJECT"])
    demo_project = env["KEYSTONE_DEMO_PROJECT_ID"]
    servers = {}
    for letter in "ABC":
        volume = call("%s/%s/volumes" % (cinder, demo_project), "POST", {"volume": {
            "size": 1, "name": "root-of-node-%s" % letter.lower()}}, demo, "volume 3.0")["volume"]["id"]
        wait("root volume %s available" % letter, lambda: call(
            "%s/%s/volumes/%s" % (cinder, demo_project, volume), token=demo)["volume"]["status"] == "available",
            pid_file, 60)
        # A blank volume is not bootable until its owner says so (there is no image here).
        call("%s/%s/volumes/%s/action" % (cinder, demo_project, volume), "POST",
             {"os-set_bootable": {"bootable": True}}, demo, "volume 3.0")
        server = call(nova + "/servers", "POST", {"server": {
            "name": "node-%s" % letter.lower(), "flavorRef": flavor, "networks": "none",
            "block_device_mapping_v2": [{
                "boot_index": 0, "uuid": volume, "source_type": "volume",
                "destination_type": "volume", "delete_on_termination": True}]}},
            demo, COMPUTE)["server"]["id"]
        servers[letter] = server

    def active(server):
        def check():
            s = call(nova + "/servers/" + server, token=admin, version=COMPUTE)["server"]
            if s["status"] == "ERROR":
                sys.exit("server %s went to ERROR: %s" % (server, s.get("fault")))
            return s if s["status"] == "ACTIVE" else None
        return check

    zone = None
    for letter, server in servers.items():
        s = wait("server %s ACTIVE" % letter, active(server), pid_file, 120)
        zone = s.get("OS-EXT-AZ:availability_zone")
        print("NOVA_SERVER_%s=%s" % (letter, server))
    print("NOVA_ZONE=%s" % zone)
    print("NOVA_FLAVOR=%s" % flavor)
    print("MULTIATTACH_TYPE=multiattach")


if __name__ == "__main__":
    main()
