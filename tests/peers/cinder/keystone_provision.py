"""Creates what the Cinder backend's Keystone tests need, through Keystone's own API, and prints
shell assignments (KEY=value lines) for peer.env:

  service project + `cinder` service user (admin role: keystonemiddleware validates tokens)
  `demo` project + `demo` user with the member role (the identity the driver uses)
  a `block-storage` service with public/internal/admin endpoints to Cinder in RegionOne
  an application credential of the demo user
  with a Nova port and a Placement port too: `nova` and `placement` service users, `compute`
  and `placement` catalog entries, and the `service` role on every service user (Nova's
  external events API, which Cinder calls when an in-use volume grows, wants it)

Usage: python keystone_provision.py <keystone v3 url> <admin password> <cinder port>
                                    [<nova port> <placement port>]
"""
import json
import secrets
import sys
import urllib.request


def call(url, method="GET", body=None, token=None, want_token=False):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Content-Type", "application/json")
    request.add_header("Accept", "application/json")
    if token:
        request.add_header("X-Auth-Token", token)
    with urllib.request.urlopen(request, timeout=30) as answer:
        payload = json.loads(answer.read() or b"null")
        if want_token:
            return answer.headers["X-Subject-Token"], payload
        return payload


def password_token(base, user, password, project):
    body = {"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "domain": {"id": "default"}, "password": password}}},
        "scope": {"project": {"name": project, "domain": {"id": "default"}}}}}
    return call(base + "/auth/tokens", "POST", body, want_token=True)


def main():
    base, admin_password, cinder_port = sys.argv[1], sys.argv[2], sys.argv[3]
    nova_port, placement_port = (sys.argv[4], sys.argv[5]) if len(sys.argv) > 5 else (None, None)
    admin_token, admin_body = password_token(base, "admin", admin_password, "admin")
    t = admin_token
    role_id = {r["name"]: r["id"] for r in call(base + "/roles", token=t)["roles"]}

    def project(name):
        return call(base + "/projects", "POST", {"project": {"name": name, "domain_id": "default"}}, t)["project"]["id"]

    def user(name, password, project_id, role):
        uid = call(base + "/users", "POST", {"user": {"name": name, "password": password, "domain_id": "default",
                                                     "default_project_id": project_id}}, t)["user"]["id"]
        call("%s/projects/%s/users/%s/roles/%s" % (base, project_id, uid, role_id[role]), "PUT", None, t)
        return uid

    service_project = project("service")
    service_password = secrets.token_hex(12)
    cinder_user = user("cinder", service_password, service_project, "admin")
    if nova_port:
        if "service" not in role_id:
            role_id["service"] = call(base + "/roles", "POST", {"role": {"name": "service"}}, t)["role"]["id"]
        service_users = [cinder_user]
        service_users.append(user("nova", service_password, service_project, "admin"))
        service_users.append(user("placement", service_password, service_project, "admin"))
        for uid in service_users:
            call("%s/projects/%s/users/%s/roles/%s" % (base, service_project, uid, role_id["service"]), "PUT", None, t)
    demo_project = project("demo")
    demo_password = secrets.token_hex(12)
    member = "member" if "member" in role_id else "admin"
    demo_user = user("demo", demo_password, demo_project, member)

    service_id = call(base + "/services", "POST", {"service": {"type": "block-storage", "name": "cinderv3"}}, t)["service"]["id"]
    for interface in ("public", "internal", "admin"):
        call(base + "/endpoints", "POST", {"endpoint": {
            "service_id": service_id, "interface": interface, "region_id": "RegionOne",
            "url": "http://127.0.0.1:%s/v3/$(project_id)s" % cinder_port}}, t)

    if nova_port:
        for kind, name, url in (("compute", "nova", "http://127.0.0.1:%s/v2.1" % nova_port),
                                ("placement", "placement", "http://127.0.0.1:%s" % placement_port)):
            sid = call(base + "/services", "POST", {"service": {"type": kind, "name": name}}, t)["service"]["id"]
            for interface in ("public", "internal", "admin"):
                call(base + "/endpoints", "POST", {"endpoint": {
                    "service_id": sid, "interface": interface, "region_id": "RegionOne", "url": url}}, t)

    demo_token, _ = password_token(base, "demo", demo_password, "demo")
    credential = call("%s/users/%s/application_credentials" % (base, demo_user), "POST",
                      {"application_credential": {"name": "snapcsi-test"}}, demo_token)["application_credential"]

    out = {
        "KEYSTONE_ADMIN_TOKEN": admin_token,
        "KEYSTONE_ADMIN_PROJECT_ID": admin_body["token"]["project"]["id"],
        "KEYSTONE_SERVICE_USER": "cinder",
        "KEYSTONE_SERVICE_PASSWORD": service_password,
        "KEYSTONE_DEMO_USER": "demo",
        "KEYSTONE_DEMO_USER_ID": demo_user,
        "KEYSTONE_DEMO_PASSWORD": demo_password,
        "KEYSTONE_DEMO_PROJECT": "demo",
        "KEYSTONE_DEMO_PROJECT_ID": demo_project,
        "KEYSTONE_APPCRED_ID": credential["id"],
        "KEYSTONE_APPCRED_NAME": credential["name"],
        "KEYSTONE_APPCRED_SECRET": credential["secret"],
    }
    for k, v in out.items():
        print("%s=%s" % (k, v))


if __name__ == "__main__":
    main()
