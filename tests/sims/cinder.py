#!/usr/bin/env python3
"""A strict simulator of OpenStack Cinder's v2 API (seed 004) and the v1 dialect Rackspace
Cloud Block Storage speaks (seed 001), for the snapcsi Cinder backend's tests.

Python 3.11 standard library only. Binds 127.0.0.1. It accepts what the documents accept and
refuses the rest the way Cinder does (fault body {"<faultName>": {"code": n, "message": ...}}):

  * every API request needs `X-Auth-Token: <--token>`            -> 401 otherwise
  * the tenant in the URL must be --tenant                        -> 403 otherwise
  * a body must be `Content-Type: application/json` JSON object   -> 400 otherwise
  * create bodies take exactly the documented fields with the documented types
      v2 snapshot: name, description, volume_id, force, new_size   (seed 004) -> 202
      v1 snapshot: display_name, display_description, volume_id    (seed 001) -> 200
    (unknown or mistyped fields -> 400 badRequest). Volumes (not in the seeds) follow
    Cinder's own shape in the same dialect: name/description (v2), display_name/
    display_description (v1), size, volume_type, availability_zone, snapshot_id,
    source_volid, metadata.
  * lists: GET /snapshots/detail and /volumes/detail with limit, marker (unknown -> 404),
    name (v2) / display_name (v1), volume_id (snapshots), status; newest first; a
    `<collection>_links` next link when a page is full. Unknown query keys -> 400.
  * v2 volume action os-extend; v1 has none (404).

Life cycle: objects are `creating` for --delay seconds, then `available`; a name starting
`fail-` ends in `error`; deletes take --delay seconds (`deleting`), a name starting `faildel-`
ends in `error_deleting`.

HTTP-level faults (statuses, resets, timeouts, slow and malformed bodies) and snapshot modes
(stuck `creating`, `error`, `error_deleting`) are injected through `/_faults`
(tests/sims/faults.py, the mechanism every simulator here shares). POST /_sim/control
{"delay": seconds} changes the life-cycle delay; GET /_sim/stats answers
{"requests": n, "by_route": {...}}. The admin snapshot action `os-reset_status` (v2) puts a
snapshot back to a status, as an operator repairs an `error_deleting` one. Answers carry the
request id the way each document shows it: `x-openstack-request-id` (v2, as Cinder sends
it) or `X-Compute-Request-Id` (v1, seed 001).
Usage: cinder.py --dialect v2|v1 --port 0 --token T --tenant P [--delay S]
(port 0: a free port, printed as `LISTENING <port>` on the first line of stdout).
"""
import argparse
import json
import re
import sys
import threading
import time
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import faults

UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


class Fault(Exception):
    def __init__(self, status, name, message, headers=None):
        super().__init__(message)
        self.status = status
        self.name = name
        self.message = message
        self.headers = headers or {}


def bad(message):
    return Fault(400, "badRequest", message)


def not_found(message):
    return Fault(404, "itemNotFound", message)


class Cloud:
    """The state: volumes and snapshots with time-driven status."""

    def __init__(self, dialect, delay):
        self.dialect = dialect
        self.delay = delay
        self.mode = "normal"
        self.lock = threading.Lock()
        self.volumes = {}
        self.snapshots = {}
        self.seq = 0

    @property
    def name_key(self):
        return "display_name" if self.dialect == "v1" else "name"

    @property
    def desc_key(self):
        return "display_description" if self.dialect == "v1" else "description"

    def _new(self, table, fields):
        self.seq += 1
        obj = dict(fields)
        obj["id"] = str(uuid.uuid4())
        obj["_seq"] = self.seq
        obj["_created"] = time.monotonic()
        obj["_state"] = "creating"
        stuck = self.mode == "stuck"
        obj["_ready_at"] = None if stuck else time.monotonic() + self.delay
        obj["_fail"] = self.mode == "error" and table is self.snapshots
        obj["created_at"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")
        obj.setdefault("metadata", {})
        table[obj["id"]] = obj
        return obj

    def _settle(self, table, obj):
        now = time.monotonic()
        if obj["_state"] in ("creating", "extending") and obj["_ready_at"] is not None and now >= obj["_ready_at"]:
            if obj["_state"] == "extending":
                obj["size"] = obj.pop("_new_size")
                obj["_state"] = "available"
            else:
                name = obj.get(self.name_key) or ""
                failed = name.startswith("fail-") or obj.get("_fail")
                obj["_state"] = "error" if failed else "available"
        if obj["_state"] == "deleting" and now >= obj["_gone_at"]:
            name = obj.get(self.name_key) or ""
            if name.startswith("faildel-") or obj.get("_faildel"):
                obj["_state"] = "error_deleting"
            else:
                del table[obj["id"]]
                return None
        return obj

    def get(self, table, oid):
        obj = table.get(oid)
        return self._settle(table, obj) if obj else None

    def all(self, table):
        out = []
        for oid in list(table):
            obj = self.get(table, oid)
            if obj:
                out.append(obj)
        return out

    def view(self, obj, kind):
        shown = {k: v for k, v in obj.items() if not k.startswith("_")}
        shown["status"] = obj["_state"]
        if kind == "volume":
            shown.setdefault("snapshot_id", None)
            shown.setdefault("source_volid", None)
            shown.setdefault("volume_type", None)
            shown.setdefault("availability_zone", "nova")
        return shown


def check_fields(body, allowed, types, required):
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise bad("Invalid input for field/attribute: additional properties are not allowed (%s)" % ", ".join(unknown))
    for key in required:
        if key not in body:
            raise bad("Invalid input: '%s' is a required property" % key)
    for key, value in body.items():
        want = types[key]
        if value is None and key not in ("volume_id", "size", "force"):
            continue
        if want == "uuid":
            if not isinstance(value, str) or not UUID_RE.match(value):
                raise bad("Invalid input for field/attribute %s: %r is not a 'uuid'" % (key, value))
        elif want == "string":
            if not isinstance(value, str) or len(value) > 255:
                raise bad("Invalid input for field/attribute %s: %r is not a string of at most 255 characters" % (key, value))
        elif want == "bool":
            if not isinstance(value, bool):
                raise bad("Invalid input for field/attribute %s: %r is not a boolean" % (key, value))
        elif want == "size":
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise bad("Invalid input for field/attribute %s: %r is not a positive integer" % (key, value))
        elif want == "metadata":
            if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise bad("Invalid input for field/attribute metadata: not a string map")


class Sim:
    def __init__(self, args):
        self.args = args
        self.cloud = Cloud(args.dialect, args.delay)
        self.plan = faults.Plan(self.set_mode)
        self.requests = 0
        self.by_route = {}
        self.ctl = threading.Lock()

    def set_mode(self, mode):
        with self.cloud.lock:
            self.cloud.mode = mode


def make_handler(sim):
    cloud = sim.cloud
    dialect = sim.args.dialect

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "cinder-sim"

        def log_message(self, fmt, *args):
            if sim.args.verbose:
                sys.stderr.write("sim: " + fmt % args + "\n")

        def reply(self, status, payload=None, headers=None):
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            header = "X-Compute-Request-Id" if dialect == "v1" else "x-openstack-request-id"
            self.send_header(header, "req-" + str(uuid.uuid4()))
            if payload is not None:
                self.send_header("Content-Type", "application/json")
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def read_body(self):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            return raw

        def json_body(self, raw):
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
            if ctype != "application/json":
                raise bad("The request body must be application/json, got %r" % ctype)
            try:
                body = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, ValueError) as e:
                raise bad("Malformed request body: %s" % e)
            if not isinstance(body, dict):
                raise bad("The request body must be a JSON object")
            return body

        def handle_any(self, method):
            url = urlsplit(self.path)
            if url.path.startswith("/_faults"):
                sim.plan.control(self, method, url.path, self.read_body())
                return None
            if url.path.startswith("/_sim/"):
                return self.control(method, url.path, self.read_body())

            def run():
                raw = self.read_body()
                with sim.ctl:
                    sim.requests += 1
                try:
                    status, payload = self.route(method, url, raw)
                    self.reply(status, payload)
                except Fault as f:
                    self.reply(f.status, {f.name: {"code": f.status, "message": f.message}}, f.headers)

            def refuse(status, headers):
                names = {413: "overLimit", 429: "overLimit", 500: "computeFault",
                         502: "computeFault", 503: "serviceUnavailable"}
                fault = {"code": status, "message": "injected fault %d" % status}
                self.reply(status, {names.get(status, "computeFault"): fault}, headers)

            faults.serve(sim.plan, self, method, url.path, run, refuse)

        def control(self, method, path, raw):
            if path == "/_sim/stats" and method == "GET":
                return self.reply(200, {"requests": sim.requests, "by_route": sim.by_route})
            if path == "/_sim/control" and method == "POST":
                body = json.loads(raw or b"{}")
                with cloud.lock:
                    if "delay" in body:
                        cloud.delay = float(body["delay"])
                return self.reply(200, {"ok": True})
            return self.reply(404, {"itemNotFound": {"code": 404, "message": "no such control"}})

        def route(self, method, url, raw):
            parts = [p for p in url.path.split("/") if p]
            if len(parts) < 2 or parts[0] != dialect:
                raise not_found("Unknown API path %s" % url.path)
            token = self.headers.get("X-Auth-Token")
            if token != sim.args.token:
                raise Fault(401, "unauthorized", "The request you have made requires authentication.")
            if parts[1] != sim.args.tenant:
                raise Fault(403, "forbidden", "Policy doesn't allow this for tenant %s." % parts[1])
            rest = parts[2:]
            key = "%s /%s" % (method, "/".join(r if not UUID_RE.match(r) else "{id}" for r in rest))
            with sim.ctl:
                sim.by_route[key] = sim.by_route.get(key, 0) + 1
            query = parse_qs(url.query, keep_blank_values=True, strict_parsing=False)
            with cloud.lock:
                if not rest:
                    raise not_found("Unknown API path")
                kind = {"snapshots": "snapshot", "volumes": "volume"}.get(rest[0])
                if kind is None:
                    raise not_found("Unknown resource %s" % rest[0])
                table = cloud.snapshots if kind == "snapshot" else cloud.volumes
                if len(rest) == 1 and method == "POST":
                    return self.create(kind, table, self.json_body(raw))
                if len(rest) == 1 and method == "GET":
                    return self.listing(kind, table, query, detail=False)
                if len(rest) == 2 and rest[1] == "detail" and method == "GET":
                    return self.listing(kind, table, query, detail=True)
                if len(rest) >= 2:
                    if query:
                        raise bad("Unexpected query parameters")
                    obj = cloud.get(table, rest[1])
                    if obj is None:
                        raise not_found("%s %s could not be found." % (kind.capitalize(), rest[1]))
                    if len(rest) == 2 and method == "GET":
                        return 200, {kind: cloud.view(obj, kind)}
                    if len(rest) == 2 and method == "DELETE":
                        return self.delete(kind, obj)
                    if len(rest) == 3 and rest[2] == "action" and method == "POST" and kind == "volume" and dialect == "v2":
                        return self.action(obj, self.json_body(raw))
                    if len(rest) == 3 and rest[2] == "action" and method == "POST" and kind == "snapshot" and dialect == "v2":
                        return self.reset_status(obj, self.json_body(raw))
                raise Fault(405, "badMethod", "%s is not allowed here" % method) if method not in ("GET", "POST", "DELETE") else not_found("Unknown API path")

        def create(self, kind, table, body):
            if set(body) != {kind}:
                raise bad("The body must be exactly {\"%s\": {...}}" % kind)
            fields = body[kind]
            if not isinstance(fields, dict):
                raise bad("%s must be an object" % kind)
            n, d = cloud.name_key, cloud.desc_key
            if kind == "snapshot":
                if dialect == "v2":
                    allowed = {n: "string", d: "string", "volume_id": "uuid", "force": "bool", "new_size": "size"}
                else:
                    allowed = {n: "string", d: "string", "volume_id": "uuid"}
                check_fields(fields, allowed, allowed, ["volume_id"])
                volume = cloud.get(cloud.volumes, fields["volume_id"])
                if volume is None:
                    raise not_found("Volume %s could not be found." % fields["volume_id"])
                if volume["_state"] != "available" and not (volume["_state"] == "in-use" and fields.get("force")):
                    raise bad("Invalid volume: Volume %s status must be available, but current status is: %s." % (volume["id"], volume["_state"]))
                obj = cloud._new(table, {n: fields.get(n), d: fields.get(d), "volume_id": volume["id"], "size": volume["size"]})
            else:
                allowed = {n: "string", d: "string", "size": "size", "volume_type": "string",
                           "availability_zone": "string", "snapshot_id": "uuid", "source_volid": "uuid",
                           "metadata": "metadata"}
                check_fields(fields, allowed, allowed, ["size"])
                size = fields["size"]
                source = {}
                if fields.get("snapshot_id"):
                    snap = cloud.get(cloud.snapshots, fields["snapshot_id"])
                    if snap is None:
                        raise not_found("Snapshot %s could not be found." % fields["snapshot_id"])
                    if snap["_state"] != "available":
                        raise bad("Invalid snapshot: Originating snapshot status must be one of 'available' values")
                    if size < snap["size"]:
                        raise bad("Invalid input received: Volume size '%d' must be an integer and greater than 0 and at least the snapshot size %d" % (size, snap["size"]))
                    source["snapshot_id"] = snap["id"]
                if fields.get("source_volid"):
                    src = cloud.get(cloud.volumes, fields["source_volid"])
                    if src is None:
                        raise not_found("Volume %s could not be found." % fields["source_volid"])
                    if size < src["size"]:
                        raise bad("Invalid input received: clone size %d is smaller than the source %d" % (size, src["size"]))
                    source["source_volid"] = src["id"]
                obj = cloud._new(table, dict(fields, **source))
            status = 200 if dialect == "v1" else 202
            return status, {kind: cloud.view(obj, kind)}

        def delete(self, kind, obj):
            if obj["_state"] not in ("available", "error"):
                raise bad("Invalid %s: %s status must be available or error, but current status is: %s" % (kind, kind.capitalize(), obj["_state"]))
            if kind == "volume":
                if any(s["volume_id"] == obj["id"] for s in cloud.all(cloud.snapshots)):
                    raise bad("Invalid volume: Volume has snapshots.")
            obj["_state"] = "deleting"
            obj["_gone_at"] = time.monotonic() + cloud.delay
            if kind == "snapshot" and cloud.mode == "error_deleting":
                obj["_faildel"] = True
                cloud.mode = "normal"
            return 202, None

        def reset_status(self, obj, body):
            spec = body.get("os-reset_status")
            if set(body) != {"os-reset_status"} or not isinstance(spec, dict) or set(spec) != {"status"}:
                raise bad("Only {\"os-reset_status\": {\"status\": s}} is supported")
            if spec["status"] not in ("available", "error", "creating", "deleting", "error_deleting"):
                raise bad("Invalid status %r" % (spec["status"],))
            obj["_state"] = spec["status"]
            obj.pop("_faildel", None)
            return 202, None

        def action(self, obj, body):
            if set(body) != {"os-extend"} or not isinstance(body["os-extend"], dict) or set(body["os-extend"]) != {"new_size"}:
                raise bad("Only {\"os-extend\": {\"new_size\": n}} is supported")
            new_size = body["os-extend"]["new_size"]
            if isinstance(new_size, bool) or not isinstance(new_size, int):
                raise bad("new_size must be an integer")
            if obj["_state"] != "available":
                raise bad("Invalid volume: Volume status must be available to extend.")
            if new_size <= obj["size"]:
                raise bad("Invalid input received: New size for extend must be greater than current size. (current: %d, extended: %d)." % (obj["size"], new_size))
            obj["_state"] = "extending"
            obj["_new_size"] = new_size
            obj["_ready_at"] = time.monotonic() + cloud.delay
            return 202, None

        def listing(self, kind, table, query, detail):
            allowed = {"limit", "marker", cloud.name_key, "status"}
            if kind == "snapshot":
                allowed.add("volume_id")
            unknown = sorted(set(query) - allowed)
            if unknown:
                raise bad("Invalid filters %s are found in query options." % ",".join(unknown))
            one = {k: v[-1] for k, v in query.items()}
            limit = None
            if "limit" in one:
                try:
                    limit = int(one["limit"])
                except ValueError:
                    raise bad("limit param must be an integer")
                if limit < 0:
                    raise bad("limit param must be positive")
            items = sorted(cloud.all(table), key=lambda o: o["_seq"], reverse=True)
            for key in (cloud.name_key, "status", "volume_id"):
                if key in one:
                    field = "_state" if key == "status" else key
                    items = [o for o in items if o.get(field) == one[key]]
            if "marker" in one:
                ids = [o["id"] for o in items]
                if one["marker"] not in ids:
                    raise not_found("Marker %s could not be found." % one["marker"])
                items = items[ids.index(one["marker"]) + 1:]
            links = []
            if limit is not None:
                full = len(items) >= limit and limit > 0
                items = items[:limit]
                if full and items:
                    links = [{"rel": "next", "href": "http://127.0.0.1:%d/%s/%s/%ss?limit=%d&marker=%s" % (
                        self.server.server_address[1], dialect, sim.args.tenant, kind, limit, items[-1]["id"])}]
            views = [cloud.view(o, kind) for o in items]
            if not detail:
                views = [{"id": v["id"], cloud.name_key: v.get(cloud.name_key), "status": v["status"]} for v in views]
            out = {kind + "s": views}
            if links:
                out[kind + "s_links"] = links
            return 200, out

        def do_GET(self):
            self.handle_any("GET")

        def do_POST(self):
            self.handle_any("POST")

        def do_DELETE(self):
            self.handle_any("DELETE")

        def do_PUT(self):
            self.handle_any("PUT")

    return Handler


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dialect", choices=["v2", "v1"], required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--token", required=True)
    p.add_argument("--tenant", required=True)
    p.add_argument("--delay", type=float, default=0.3)
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    sim = Sim(args)
    server = ThreadingHTTPServer(("127.0.0.1", args.port), make_handler(sim))
    server.daemon_threads = True
    print("LISTENING %d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
