#!/usr/bin/env python3
"""A strict simulator of the Apache Deltacloud REST API (storage snapshots and volumes).

Written from the seed document (shared/seeds/002_c04586fc60814ab5.txt) and the facts of
issue 5; Python standard library only (xml.etree builds the XML).

  GET    /api                            entry point (driver, version, links); no credentials
                                         needed, as on Deltacloud
  GET    /api/realms, GET /api/realms/:id the realms (one per --realm), optional ?id=
  GET    /api/storage_snapshots          optional ?id= filter
  GET    /api/storage_snapshots/:id
  POST   /api/storage_snapshots          form: volume_id (required), name, description -> 201
  DELETE /api/storage_snapshots/:id      -> 204
  GET    /api/storage_volumes, GET /api/storage_volumes/:id
  POST   /api/storage_volumes            form: capacity, realm_id, snapshot_id, name,
                                         description -> 201
  DELETE /api/storage_volumes/:id        -> 204

XML by default; JSON with ?format=json or Accept: application/json. HTTP basic auth on
every collection (the entry point answers without it: a wrong password is found only by a
call that needs it, issue 15). The
cloud under Deltacloud is chosen with X-Deltacloud-Driver / X-Deltacloud-Provider; this
simulator plays one driver (--driver, default "ec2") and refuses any other. Like EC2 under
Deltacloud, it does not keep the `name` given to a snapshot or volume: the `<name>` element
holds the id (the quirk the issue notes); `description` is kept. The XML snapshot carries no
state; JSON adds `state` (pending -> completed by default), as the issue describes. Volumes
carry `state` (CREATING -> AVAILABLE) in both formats.

Control endpoint for tests (no auth, not part of Deltacloud):
  POST /_control  {"pending_seconds": 0.0, "ready_state": "completed",
                   "pending_state": "pending",
                   "keep_descriptions": true}  (false: play a driver that drops them)
  GET  /_control  counters; POST /_control/reset drops everything.
  POST /_control/seed {"volumes": [{"id", "description", "created", "capacity"}],
                       "snapshots": [{"id", "volume_id", "description", "created"}]}
                  adds ready objects with the ids and creation times given (EC2's ids are
                  random, so id order is not creation order; two objects of one name are
                  what a create re-sent after its answer was lost leaves).
HTTP-level faults and snapshot modes go through `/_faults` (tests/sims/faults.py, the
mechanism every simulator here shares): "stuck" keeps new snapshots pending, "error" makes
them end in `error`; "error_deleting" is refused, Deltacloud having no such state (a failed
delete is an HTTP error, a "status" fault). Answers carry an `X-Request-Id` (seed 002 names
no request-id header; this is the one the driver's HTTP client reads).
Usage: deltacloud.py --port 0 [--username U] [--password P] [--driver ec2]
       [--provider us-east-1] [--realm us-east-1a]
With --port 0 the first stdout line is "LISTENING <port>".
"""

import argparse
import base64
import hmac
import json
import sys
import threading
import time
import urllib.parse
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import faults

FORM = "application/x-www-form-urlencoded"


class Fault(Exception):
    def __init__(self, status, kind, message):
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


def created_text():
    return datetime.now(timezone.utc).strftime("%a %b %d %H:%M:%S UTC %Y")


class State:
    def __init__(self):
        self.lock = threading.Lock()
        self.mode = "normal"
        self.plan = faults.Plan(self.set_mode)
        self.reset()

    def set_mode(self, mode):
        if mode == "error_deleting":
            raise ValueError("Deltacloud has no error_deleting state; use a status fault")
        self.mode = mode

    def reset(self):
        self.seq = 0
        self.snapshots = {}
        self.volumes = {}
        self.pending_seconds = 0.0
        self.ready_state = "completed"
        self.pending_state = "pending"
        self.keep_descriptions = True
        self.calls = {}
        self.plan.reset()

    def new_id(self, prefix):
        self.seq += 1
        return f"{prefix}-{self.seq:08x}"


class Handler(BaseHTTPRequestHandler):
    server_version = "DeltacloudSim/1.1.3"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("deltacloud-sim: " + (fmt % args) + "\n")

    # ------------------------------------------------------------ plumbing ---
    def base_url(self):
        return f"http://{self.headers.get('Host', '127.0.0.1')}/api"

    def wants_json(self, query):
        fmt = query.get("format")
        if fmt is not None:
            if fmt not in ("xml", "json"):
                raise Fault(400, "bad_request", f"Unknown format '{fmt}'")
            return fmt == "json"
        accept = self.headers.get("Accept", "*/*")
        if "application/json" in accept:
            return True
        if any(t in accept for t in ("application/xml", "*/*", "text/xml")) or not accept:
            return False
        raise Fault(406, "not_acceptable", f"Cannot produce {accept}")

    def send(self, status, body=b"", ctype=None, headers=None):
        self.send_response(status)
        self.send_header("X-Request-Id", "req-" + uuid.uuid4().hex[:16])
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if ctype:
            self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if body:
            self.wfile.write(body)

    def send_doc(self, status, as_json, element, obj, headers=None):
        if as_json:
            self.send(status, json.dumps(obj).encode(), "application/json", headers)
        else:
            data = b"<?xml version='1.0' encoding='utf-8' ?>\n" + ET.tostring(element)
            self.send(status, data, "application/xml", headers)

    def send_fault(self, fault, as_json, path, extra=None):
        headers = dict(extra or {})
        if fault.status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="Deltacloud API"'
        if as_json:
            body = {"error": {"status": fault.status, "kind": fault.kind,
                              "message": fault.message, "url": path}}
            self.send(fault.status, json.dumps(body).encode(), "application/json", headers)
        else:
            root = ET.Element("error", status=str(fault.status), url=path)
            ET.SubElement(root, "kind").text = fault.kind
            ET.SubElement(root, "message").text = fault.message
            data = b"<?xml version='1.0' encoding='utf-8' ?>\n" + ET.tostring(root)
            self.send(fault.status, data, "application/xml", headers)

    def read_body(self):
        if self.headers.get("Transfer-Encoding"):
            raise Fault(400, "bad_request", "chunked request bodies are not accepted")
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        try:
            return self.rfile.read(int(length))
        except ValueError:
            raise Fault(400, "bad_request", "bad Content-Length")

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PUT(self):
        self.dispatch("PUT")

    def dispatch(self, verb):
        url = urllib.parse.urlsplit(self.path)
        state = self.server.state
        if url.path.startswith("/_faults"):
            state.plan.control(self, verb, url.path, self.read_body())
            return None
        as_json = False

        def run():
            nonlocal as_json
            try:
                pairs = urllib.parse.parse_qsl(url.query, keep_blank_values=True)
                query = {}
                for k, v in pairs:
                    if k in query:
                        raise Fault(400, "bad_request", f"query parameter {k} given twice")
                    query[k] = v
                as_json = self.wants_json(query)
                body = self.read_body()
                if url.path.startswith("/_control"):
                    return self.control(verb, url.path, body)
                if not (verb == "GET" and url.path.rstrip("/") == "/api"):
                    self.check_auth()
                self.check_driver()
                self.api(verb, url.path, query, body, as_json)
            except Fault as fault:
                self.send_fault(fault, as_json, url.path)
            except Exception as exc:  # a simulator bug must show, not hang the client
                self.send_fault(Fault(500, "internal", f"simulator bug: {exc!r}"), as_json,
                                url.path)

        def refuse(status, headers):
            # Deltacloud: 500 backend error, 502 provider error, 504 provider timeout.
            kinds = {500: "backend_error", 502: "provider_error", 504: "provider_timeout"}
            fault = Fault(status, kinds.get(status, "error"), f"injected failure {status}")
            wants = "format=json" in url.query or "application/json" in self.headers.get("Accept", "")
            self.send_fault(fault, wants, url.path, headers)

        if url.path.startswith("/_control"):
            return run()
        return faults.serve(state.plan, self, verb, url.path, run, refuse)

    def check_auth(self):
        header = self.headers.get("Authorization", "")
        denied = Fault(401, "not_authorized", "Not authorized")
        if not header.startswith("Basic "):
            raise denied
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except Exception:
            raise denied
        ok = hmac.compare_digest(user.encode(), self.server.username.encode())
        ok &= hmac.compare_digest(password.encode(), self.server.password.encode())
        if not ok:
            raise denied

    def check_driver(self):
        driver = self.headers.get("X-Deltacloud-Driver")
        if driver is not None and driver != self.server.driver:
            raise Fault(400, "bad_request", f"Invalid driver '{driver}'")
        provider = self.headers.get("X-Deltacloud-Provider")
        if provider is not None and provider not in self.server.providers:
            raise Fault(400, "bad_request", f"Invalid provider '{provider}' for driver "
                                            f"'{self.server.driver}'")

    # ------------------------------------------------------------- control ---
    def control(self, verb, path, body):
        state = self.server.state
        spec = {}
        if body:
            try:
                spec = json.loads(body)
            except ValueError:
                raise Fault(400, "bad_request", "control body is not JSON")
        with state.lock:
            if path == "/_control" and verb == "GET":
                out = {"calls": state.calls, "snapshots": len(state.snapshots),
                       "volumes": len(state.volumes)}
                return self.send(200, json.dumps(out).encode(), "application/json")
            if path == "/_control/reset" and verb == "POST":
                state.reset()
                return self.send(200, b"{}", "application/json")
            if path == "/_control/seed" and verb == "POST":
                for item in spec.get("volumes", []):
                    state.volumes[item["id"]] = {
                        "id": item["id"], "description": item.get("description"),
                        "created": item.get("created") or created_text(),
                        "capacity": int(item.get("capacity", 1)),
                        "realm": self.server.realms[0], "ready_at": 0.0,
                    }
                for item in spec.get("snapshots", []):
                    volume = state.volumes[item["volume_id"]]
                    state.snapshots[item["id"]] = {
                        "id": item["id"], "description": item.get("description"),
                        "created": item.get("created") or created_text(),
                        "volume": volume["id"], "size": volume["capacity"], "ready_at": 0.0,
                        "error": False, "stuck": False,
                    }
                return self.send(200, b"{}", "application/json")
            if path == "/_control" and verb == "POST":
                known = {"pending_seconds", "ready_state", "pending_state",
                         "keep_descriptions"}
                unknown = set(spec) - known
                if unknown:
                    raise Fault(400, "bad_request", f"unknown control fields {sorted(unknown)}")
                for key in known:
                    if key in spec:
                        setattr(state, key, spec[key])
                return self.send(200, b"{}", "application/json")
        raise Fault(404, "not_found", f"no control route {verb} {path}")

    # ----------------------------------------------------------------- API ---
    def api(self, verb, path, query, body, as_json):
        state = self.server.state
        parts = [p for p in path.split("/") if p]
        if not parts or parts[0] != "api":
            raise Fault(404, "not_found", f"No route for {path}")
        allowed_query = {"format"}
        if len(parts) == 2 and verb == "GET":
            allowed_query.add("id")
        unknown = set(query) - allowed_query
        if unknown:
            raise Fault(400, "bad_request", f"Unknown parameter(s) {sorted(unknown)}")
        if verb in ("GET", "DELETE") and body:
            raise Fault(400, "bad_request", f"{verb} takes no request body")
        with state.lock:
            state.calls[f"{verb} /{'/'.join(parts[:2])}"] = \
                state.calls.get(f"{verb} /{'/'.join(parts[:2])}", 0) + 1
            if len(parts) == 1 and verb == "GET":
                return self.entry_point(as_json)
            collection = parts[1] if len(parts) > 1 else ""
            if collection == "realms":
                return self.realms(verb, parts, query, as_json)
            if collection not in ("storage_snapshots", "storage_volumes"):
                raise Fault(404, "not_found", f"No collection {collection!r}")
            table = state.snapshots if collection == "storage_snapshots" else state.volumes
            render = self.snapshot if collection == "storage_snapshots" else self.volume
            singular = collection[:-1]
            if len(parts) == 2 and verb == "GET":
                items = [table[k] for k in sorted(table)]
                if "id" in query:
                    items = [i for i in items if i["id"] == query["id"]]
                root = ET.Element(collection)
                objs = []
                for item in items:
                    element, obj = render(item)
                    root.append(element)
                    objs.append(obj)
                return self.send_doc(200, as_json, root, {collection: objs})
            if len(parts) == 2 and verb == "POST":
                form = self.form(body)
                item = (self.create_snapshot(form) if collection == "storage_snapshots"
                        else self.create_volume(form))
                element, obj = render(item)
                return self.send_doc(201, as_json, element, {singular: obj},
                                     {"Location": f"{self.base_url()}/{collection}/{item['id']}"})
            if len(parts) == 3:
                item = table.get(parts[2])
                if item is None:
                    raise Fault(404, "not_found",
                                f"{singular.replace('_', ' ').title()} '{parts[2]}' not found")
                if verb == "GET":
                    element, obj = render(item)
                    return self.send_doc(200, as_json, element, {singular: obj})
                if verb == "DELETE":
                    del table[parts[2]]
                    return self.send(204)
            raise Fault(405, "method_not_allowed", f"{verb} is not allowed on {path}")

    def form(self, body):
        ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
        if ctype == "multipart/form-data":
            raise Fault(400, "bad_request",
                        "multipart/form-data is not modelled by this simulator; send "
                        "application/x-www-form-urlencoded")
        if ctype != FORM:
            raise Fault(400, "bad_request", f"Content-Type must be {FORM}, got {ctype!r}")
        try:
            text = body.decode("utf-8")
            pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text),
                                           errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise Fault(400, "bad_request", "The request body is not form-encoded UTF-8")
        form = {}
        for k, v in pairs:
            if k in form:
                raise Fault(400, "bad_request", f"parameter {k} given twice")
            form[k] = v
        return form

    def entry_point(self, as_json):
        base = self.base_url()
        root = ET.Element("api", driver=self.server.driver, version="1.1.3")
        links = []
        for rel in ("storage_snapshots", "storage_volumes", "realms"):
            ET.SubElement(root, "link", href=f"{base}/{rel}", rel=rel)
            links.append({"rel": rel, "href": f"{base}/{rel}"})
        obj = {"api": {"driver": self.server.driver, "version": "1.1.3", "links": links}}
        return self.send_doc(200, as_json, root, obj)

    def realms(self, verb, parts, query, as_json):
        if verb != "GET":
            raise Fault(405, "method_not_allowed", f"{verb} is not allowed on realms")
        base = self.base_url()

        def render(realm):
            el = ET.Element("realm", href=f"{base}/realms/{realm}", id=realm)
            ET.SubElement(el, "name").text = realm
            ET.SubElement(el, "state").text = "AVAILABLE"
            ET.SubElement(el, "limit").text = ""
            return el, {"id": realm, "href": f"{base}/realms/{realm}", "name": realm,
                        "state": "AVAILABLE", "limit": ""}

        if len(parts) == 3:
            if parts[2] not in self.server.realms:
                raise Fault(404, "not_found", f"Realm '{parts[2]}' not found")
            element, obj = render(parts[2])
            return self.send_doc(200, as_json, element, {"realm": obj})
        root = ET.Element("realms")
        objs = []
        for realm in self.server.realms:
            if "id" in query and query["id"] != realm:
                continue
            element, obj = render(realm)
            root.append(element)
            objs.append(obj)
        return self.send_doc(200, as_json, root, {"realms": objs})

    def create_snapshot(self, form):
        state = self.server.state
        unknown = set(form) - {"volume_id", "name", "description"}
        if unknown:
            raise Fault(400, "bad_request", f"Unknown parameter(s) {sorted(unknown)}")
        if not form.get("volume_id"):
            raise Fault(400, "bad_request", "Parameter 'volume_id' is required")
        volume = state.volumes.get(form["volume_id"])
        if volume is None:
            raise Fault(404, "not_found", f"Storage volume '{form['volume_id']}' not found")
        if len(form.get("description", "")) > 255:
            raise Fault(400, "bad_request", "description may hold at most 255 characters")
        sid = state.new_id("snap")
        snap = {
            "id": sid,
            "description": form.get("description") if state.keep_descriptions else None,
            "created": created_text(),
            "volume": volume["id"],
            "size": volume["capacity"],
            "ready_at": time.monotonic() + float(state.pending_seconds),
            "error": state.mode == "error",
            "stuck": state.mode == "stuck",
        }
        state.snapshots[sid] = snap
        return snap

    def create_volume(self, form):
        state = self.server.state
        unknown = set(form) - {"capacity", "realm_id", "snapshot_id", "name", "description"}
        if unknown:
            raise Fault(400, "bad_request", f"Unknown parameter(s) {sorted(unknown)}")
        realm = form.get("realm_id", self.server.realms[0])
        if realm not in self.server.realms:
            raise Fault(400, "bad_request", f"Realm '{realm}' not found")
        source = None
        if form.get("snapshot_id"):
            source = state.snapshots.get(form["snapshot_id"])
            if source is None:
                raise Fault(404, "not_found", f"Storage snapshot '{form['snapshot_id']}' "
                                              "not found")
        capacity = form.get("capacity")
        if capacity is None:
            if source is None:
                raise Fault(400, "bad_request", "Parameter 'capacity' is required")
            capacity = str(source["size"])
        try:
            gb = int(capacity)
        except (TypeError, ValueError):
            raise Fault(400, "bad_request", f"capacity must be a whole number of GB, "
                                            f"got {capacity!r}")
        if gb < 1 or gb > 16384:
            raise Fault(400, "bad_request", "capacity must be between 1 and 16384 GB")
        if source is not None:
            need = source["size"]
            if gb < need:
                raise Fault(400, "bad_request",
                            f"capacity {gb} GB is smaller than the snapshot ({need} GB)")
        if len(form.get("description", "")) > 255:
            raise Fault(400, "bad_request", "description may hold at most 255 characters")
        vid = state.new_id("vol")
        volume = {
            "id": vid,
            "description": form.get("description") if state.keep_descriptions else None,
            "created": created_text(),
            "capacity": gb,
            "realm": realm,
            "ready_at": time.monotonic() + float(state.pending_seconds),
        }
        state.volumes[vid] = volume
        return volume

    def snapshot(self, snap):
        state = self.server.state
        base = self.base_url()
        if snap["error"]:
            status = "error"
        elif snap["stuck"] or time.monotonic() < snap["ready_at"]:
            status = state.pending_state
        else:
            status = state.ready_state
        href = f"{base}/storage_snapshots/{snap['id']}"
        vol_href = f"{base}/storage_volumes/{snap['volume']}"
        el = ET.Element("storage_snapshot", href=href, id=snap["id"])
        ET.SubElement(el, "name").text = snap["id"]
        if snap["description"] is not None:
            ET.SubElement(el, "description").text = snap["description"]
        ET.SubElement(el, "created").text = snap["created"]
        ET.SubElement(el, "storage_volume", href=vol_href, id=snap["volume"]).text = ""
        obj = {"id": snap["id"], "href": href, "name": snap["id"],
               "description": snap["description"], "created": snap["created"],
               "state": status, "storage_volume": {"id": snap["volume"], "href": vol_href}}
        return el, obj

    def volume(self, vol):
        state = self.server.state
        base = self.base_url()
        status = "CREATING" if (time.monotonic() < vol["ready_at"]) else "AVAILABLE"
        href = f"{base}/storage_volumes/{vol['id']}"
        el = ET.Element("storage_volume", href=href, id=vol["id"])
        ET.SubElement(el, "name").text = vol["id"]
        if vol["description"] is not None:
            ET.SubElement(el, "description").text = vol["description"]
        ET.SubElement(el, "created").text = vol["created"]
        ET.SubElement(el, "capacity", unit="GB").text = str(vol["capacity"])
        ET.SubElement(el, "realm", href=f"{base}/realms/{vol['realm']}", id=vol["realm"]).text = ""
        ET.SubElement(el, "state").text = status
        obj = {"id": vol["id"], "href": href, "name": vol["id"],
               "description": vol["description"], "created": vol["created"],
               "capacity": {"unit": "GB", "value": vol["capacity"]},
               "realm": {"id": vol["realm"], "href": f"{base}/realms/{vol['realm']}"},
               "state": status}
        return el, obj


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--username", default="deltacloud-user")
    parser.add_argument("--password", default="sim-password-9f8e7d")
    parser.add_argument("--driver", default="ec2")
    parser.add_argument("--provider", action="append", default=None,
                        help="providers the driver accepts (default: us-east-1)")
    parser.add_argument("--realm", action="append", default=None,
                        help="realms volumes may be created in (default: us-east-1a)")
    parser.add_argument("--pending-seconds", type=float, default=0.0)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.state = State()
    server.state.pending_seconds = args.pending_seconds
    server.username = args.username
    server.password = args.password
    server.driver = args.driver
    server.providers = args.provider or ["us-east-1"]
    server.realms = args.realm or ["us-east-1a"]
    server.verbose = args.verbose
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
