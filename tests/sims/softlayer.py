#!/usr/bin/env python3
"""A strict simulator of the IBM SoftLayer (classic) REST API, the part snapcsi uses.

Written from the seed document (shared/seeds/000_2dedff1e21483ece.txt) and the facts of
issue 5; Python standard library only.

  GET|POST|DELETE <base>/<Service>/<id>/<method>.json   HTTP basic auth: username + API key
  query options: objectMask (mask[a,b[c]]), objectFilter (JSON), resultLimit=offset,limit
  POST bodies: {"parameters": [...]}, Content-Type application/json
  errors: {"error": "...", "code": "SoftLayer_Exception_..."}

Methods modelled (anything else is refused with 400):
  SoftLayer_Account/getObject                         GET
  SoftLayer_Account/getIscsiNetworkStorage            GET   (resultLimit; orderBy id)
  SoftLayer_Network_Storage_Iscsi/{id}/getObject      GET
  SoftLayer_Network_Storage_Iscsi/{id}/createSnapshot POST  parameters: [notes]
  SoftLayer_Network_Storage_Iscsi/{id}/getSnapshotsForVolume GET (resultLimit)
  SoftLayer_Network_Storage/{id}/getObject            GET
  SoftLayer_Network_Storage/{id}/deleteObject         DELETE

Volumes cannot be ordered here (ordering goes through SoftLayer_Product_Order and the
product catalogue, which the seed does not document): tests add volumes through the control
endpoint, which needs no auth and is not part of the SoftLayer API:

  POST /_control/volumes  {"capacityGb": 20, "snapshotCapacityGb": 10, "username": "..."}
  POST /_control          {"transaction_seconds": 0.0}
  GET  /_control          counters and state
  POST /_control/reset    drops every object and fault

HTTP-level faults and snapshot modes go through `/_faults` (tests/sims/faults.py, the
mechanism every simulator here shares). SoftLayer snapshots have no status field: "stuck"
keeps a snapshot's transaction active (not ready), "error_deleting" makes the next
`deleteObject` answer `false` (not deleted); "error" has no SoftLayer equivalent and is
refused. Answers carry an `X-Request-Id` (seed 000 names no request-id header; this is the
one the driver's HTTP client reads).

Usage: softlayer.py --port 0 [--username U] [--api-key K] [--transaction-seconds S]
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
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import faults

ACCOUNT_ID = 278184
TZ = timezone(timedelta(hours=-6))

# Properties each type answers with, and which of them are relational (only sent when masked).
STORAGE_LOCAL = {
    "accountId", "capacityGb", "createDate", "guestId", "hardwareId", "hostId", "id",
    "nasType", "notes", "serviceProviderId", "serviceResourceBackendIpAddress",
    "serviceResourceName", "snapshotCapacityGb", "storageTypeId", "upgradableFlag", "username",
}
STORAGE_RELATIONAL = {"properties", "parentVolume", "activeTransactionCount", "snapshots",
                      "propertyCount"}
PROPERTY_FIELDS = {"createDate", "modifyDate", "type", "value", "volumeId"}
PROPERTY_TYPE_FIELDS = {"description", "keyname", "name"}
ACCOUNT_FIELDS = {"id", "companyName", "email"}


class Fault(Exception):
    def __init__(self, status, message, code="SoftLayer_Exception_Public"):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


def not_found(kind, ident):
    return Fault(404, f"Unable to find object with id of '{ident}'.",
                 "SoftLayer_Exception_ObjectNotFound")


# ---------------------------------------------------------------- object masks ---

def parse_mask(text):
    """mask[a,b[c,d],e] -> {"a": None, "b": {"c": None, "d": None}, "e": None}."""
    text = text.strip()
    if text.startswith("mask"):
        text = text[4:]
    if not (text.startswith("[") and text.endswith("]")):
        raise Fault(400, f"Invalid object mask: {text!r}")
    pos, tree = _mask_list(text, 1)
    if pos != len(text):
        raise Fault(400, "Invalid object mask: trailing characters")
    return tree


def _mask_list(text, pos):
    tree = {}
    while True:
        start = pos
        while pos < len(text) and (text[pos].isalnum() or text[pos] == "_"):
            pos += 1
        name = text[start:pos]
        if not name:
            raise Fault(400, f"Invalid object mask near position {pos}")
        sub = None
        if pos < len(text) and text[pos] == "[":
            pos, sub = _mask_list(text, pos + 1)
        tree[name] = sub
        if pos >= len(text):
            raise Fault(400, "Invalid object mask: unclosed [")
        if text[pos] == ",":
            pos += 1
            continue
        if text[pos] == "]":
            return pos + 1, tree
        raise Fault(400, f"Invalid object mask: unexpected {text[pos]!r}")


def check_mask(tree, allowed, type_name):
    for name, sub in tree.items():
        if name not in allowed:
            raise Fault(400, f"Property '{name}' not valid for '{type_name}'.")
        child = allowed[name]
        if sub is not None:
            if child is None:
                raise Fault(400, f"Property '{name}' of '{type_name}' is not relational.")
            check_mask(sub, child[0], child[1])


def storage_allowed():
    prop_type = ({k: None for k in PROPERTY_TYPE_FIELDS}, "SoftLayer_Network_Storage_Property_Type")
    prop = ({**{k: None for k in PROPERTY_FIELDS}, "type": prop_type},
            "SoftLayer_Network_Storage_Property")
    allowed = {k: None for k in STORAGE_LOCAL | {"activeTransactionCount", "propertyCount"}}
    allowed["properties"] = prop
    nested = ({k: None for k in STORAGE_LOCAL | {"activeTransactionCount", "propertyCount"}},
              "SoftLayer_Network_Storage")
    nested[0]["properties"] = prop
    nested[0]["parentVolume"] = ({k: None for k in STORAGE_LOCAL}, "SoftLayer_Network_Storage")
    allowed["parentVolume"] = nested
    allowed["snapshots"] = nested
    return allowed


STORAGE_ALLOWED = storage_allowed()


def apply_mask(obj, tree):
    """The object as SoftLayer answers: local properties only without a mask; with one,
    exactly the masked properties."""
    if tree is None:
        return {k: v for k, v in obj.items() if k not in STORAGE_RELATIONAL}
    out = {}
    for name, sub in tree.items():
        if name not in obj:
            continue
        value = obj[name]
        if sub is None:
            if isinstance(value, dict):
                value = {k: v for k, v in value.items() if k not in STORAGE_RELATIONAL}
            elif isinstance(value, list):
                value = [{k: v for k, v in item.items() if k not in STORAGE_RELATIONAL}
                         if isinstance(item, dict) else item for item in value]
            out[name] = value
        elif isinstance(value, list):
            out[name] = [apply_mask(item, sub) for item in value]
        elif isinstance(value, dict):
            out[name] = apply_mask(value, sub)
        else:
            out[name] = value
    return out


# ---------------------------------------------------------------------- state ---

class State:
    def __init__(self, transaction_seconds):
        self.lock = threading.Lock()
        self.transaction_seconds = transaction_seconds
        self.mode = "normal"
        self.plan = faults.Plan(self.set_mode)
        self.reset()

    def set_mode(self, mode):
        if mode == "error":
            raise ValueError("SoftLayer snapshots have no error status to simulate")
        self.mode = mode

    def reset(self):
        self.next_id = 8744500
        self.volumes = {}      # id -> dict
        self.snapshots = {}    # id -> dict (with "_parent" and "_ready_at")
        self.calls = {}
        self.plan.reset()

    def new_id(self):
        self.next_id += 1
        return self.next_id

    def count(self, what):
        self.calls[what] = self.calls.get(what, 0) + 1


def now_text():
    return datetime.now(TZ).replace(microsecond=0).isoformat()


def volume_object(state, volume):
    busy = 0 if time.monotonic() >= volume["_ready_at"] else 1
    obj = {k: v for k, v in volume.items() if not k.startswith("_")}
    obj["activeTransactionCount"] = busy
    obj["propertyCount"] = 0
    obj["snapshots"] = [snapshot_object(state, s) for s in sorted_snapshots(state, volume["id"])]
    return obj


def sorted_snapshots(state, volume_id):
    return [s for _, s in sorted(state.snapshots.items()) if s["_parent"] == volume_id]


def snapshot_object(state, snap):
    ready = (not snap["_stuck"]) and time.monotonic() >= snap["_ready_at"]
    obj = {k: v for k, v in snap.items() if not k.startswith("_")}
    obj["activeTransactionCount"] = 0 if ready else 1
    parent = state.volumes.get(snap["_parent"])
    obj["parentVolume"] = ({k: v for k, v in parent.items() if not k.startswith("_")}
                           if parent else {"id": snap["_parent"]})
    obj["propertyCount"] = len(snap["properties"])
    return obj


def new_snapshot(state, volume, notes):
    sid = state.new_id()
    created = now_text()
    props = [
        ("MOUNTABLE", "Mountable", "Determines whether the volume is currently mountable", "0"),
        ("VOLUME_NAME", "Volume Name", "Volume name",
         "manual." + datetime.now(TZ).strftime("%Y-%m-%d_%H%M")),
        ("SNAPSHOT_SPACE_USED", "Snapshot Used", "The amount of space used by snapshots.",
         str(4000 * (len(sorted_snapshots(state, volume["id"])) + 1))),
    ]
    snap = {
        "accountId": ACCOUNT_ID,
        "capacityGb": volume["capacityGb"],
        "createDate": created,
        "guestId": None,
        "hardwareId": None,
        "hostId": None,
        "id": sid,
        "nasType": "SNAPSHOT",
        "notes": notes,
        "properties": [
            {"createDate": created, "modifyDate": None,
             "type": {"description": d, "keyname": k, "name": n}, "value": v, "volumeId": sid}
            for (k, n, d, v) in props
        ],
        "serviceProviderId": 1,
        "serviceResourceBackendIpAddress": "nfshou0201b-fz.service.softlayer.com",
        "serviceResourceName": "PerfStor Aggr aggr_staashou0201_pc01",
        "storageTypeId": "16",
        "upgradableFlag": True,
        "username": f"{volume['username']}_{sid}",
        "_parent": volume["id"],
        "_ready_at": time.monotonic() + state.transaction_seconds,
        "_stuck": state.mode == "stuck",
    }
    state.snapshots[sid] = snap
    return snap


def new_volume(state, spec):
    allowed = {"capacityGb", "snapshotCapacityGb", "username", "notes", "transaction_seconds"}
    unknown = set(spec) - allowed
    if unknown:
        raise Fault(400, f"unknown volume fields {sorted(unknown)}")
    vid = state.new_id()
    capacity = spec.get("capacityGb", 20)
    snap_space = spec.get("snapshotCapacityGb", 10)
    if not isinstance(capacity, int) or not isinstance(snap_space, int):
        raise Fault(400, "capacityGb and snapshotCapacityGb are integers")
    volume = {
        "accountId": ACCOUNT_ID,
        "capacityGb": capacity,
        "createDate": now_text(),
        "guestId": None,
        "hardwareId": None,
        "hostId": None,
        "id": vid,
        "nasType": "ISCSI",
        "notes": spec.get("notes"),
        "serviceProviderId": 1,
        "serviceResourceBackendIpAddress": "nfshou0201b-fz.service.softlayer.com",
        "serviceResourceName": "PerfStor Aggr aggr_staashou0201_pc01",
        "snapshotCapacityGb": snap_space,
        "storageTypeId": "16",
        "upgradableFlag": True,
        "username": spec.get("username", f"SL01SEL{ACCOUNT_ID}-{vid}"),
        "_ready_at": time.monotonic() + float(spec.get("transaction_seconds", 0)),
    }
    state.volumes[vid] = volume
    return volume


# -------------------------------------------------------------------- handler ---

class Handler(BaseHTTPRequestHandler):
    server_version = "SoftLayerSim/1.0"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("softlayer-sim: " + (fmt % args) + "\n")

    # -- plumbing
    def send_json(self, status, body):
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("X-Request-Id", "req-" + uuid.uuid4().hex[:16])
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_fault(self, fault):
        self.send_json(fault.status, {"error": fault.message, "code": fault.code})

    def read_body(self):
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding"):
            raise Fault(400, "chunked request bodies are not accepted")
        if length is None:
            return b""
        try:
            n = int(length)
        except ValueError:
            raise Fault(400, "bad Content-Length")
        return self.rfile.read(n)

    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PUT(self):
        self.dispatch("PUT")

    def dispatch(self, verb):
        state = self.server.state
        url = urllib.parse.urlsplit(self.path)
        if url.path.startswith("/_faults"):
            state.plan.control(self, verb, url.path, self.read_body())
            return None

        def run():
            try:
                body = self.read_body()
                if url.path.startswith("/_control"):
                    return self.control(verb, url.path, body)
                self.check_auth()
                result = self.api(verb, url, body)
                self.send_json(200, result)
            except Fault as fault:
                self.send_fault(fault)
            except Exception as exc:  # a simulator bug must show, not hang the client
                self.send_json(500, {"error": f"simulator bug: {exc!r}",
                                     "code": "SoftLayer_Exception_Public"})

        def refuse(status, headers):
            if status == 429:
                body = {"error": "Rate limit exceeded",
                        "code": "SoftLayer_Exception_WebService_RateLimitExceeded"}
            else:
                body = {"error": f"injected failure {status}", "code": "SoftLayer_Exception_Public"}
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("X-Request-Id", "req-" + uuid.uuid4().hex[:16])
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        if url.path.startswith("/_control"):
            return run()
        return faults.serve(state.plan, self, verb, url.path, run, refuse)

    def check_auth(self):
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            raise Fault(401, "Access Denied. ", "SoftLayer_Exception_Public")
        try:
            user, _, key = base64.b64decode(header[6:], validate=True).decode().partition(":")
        except Exception:
            raise Fault(401, "Access Denied. ", "SoftLayer_Exception_Public")
        ok_user = hmac.compare_digest(user.encode(), self.server.username.encode())
        ok_key = hmac.compare_digest(key.encode(), self.server.api_key.encode())
        if not (ok_user and ok_key):
            raise Fault(401, "Invalid API token.", "SoftLayer_Exception_Public")

    # -- control endpoint (tests only)
    def control(self, verb, path, body):
        state = self.server.state
        spec = {}
        if body:
            try:
                spec = json.loads(body)
            except ValueError:
                raise Fault(400, "control body is not JSON")
        with state.lock:
            if path == "/_control" and verb == "GET":
                return self.send_json(200, {
                    "calls": state.calls, "volumes": len(state.volumes),
                    "snapshots": len(state.snapshots)})
            if path == "/_control/reset" and verb == "POST":
                state.reset()
                return self.send_json(200, {"ok": True})
            if path == "/_control/volumes" and verb == "POST":
                volume = new_volume(state, spec)
                return self.send_json(200, volume_object(state, volume))
            if path == "/_control" and verb == "POST":
                unknown = set(spec) - {"transaction_seconds"}
                if unknown:
                    raise Fault(400, f"unknown control fields {sorted(unknown)}")
                if "transaction_seconds" in spec:
                    state.transaction_seconds = float(spec["transaction_seconds"])
                return self.send_json(200, {"ok": True})
        raise Fault(404, f"no control route {verb} {path}")

    # -- the API
    def api(self, verb, url, body):
        base = self.server.base_path
        if not url.path.startswith(base + "/"):
            raise Fault(404, f"unknown path {url.path}")
        parts = url.path[len(base) + 1:].split("/")
        if not parts[-1].endswith(".json"):
            raise Fault(400, "only the .json format is modelled")
        parts[-1] = parts[-1][: -len(".json")]
        if len(parts) == 2:
            service, ident, method = parts[0], None, parts[1]
        elif len(parts) == 3:
            service, ident, method = parts
        else:
            raise Fault(404, f"unknown path {url.path}")

        query = urllib.parse.parse_qs(url.query, keep_blank_values=True, strict_parsing=False)
        unknown = set(query) - {"objectMask", "objectFilter", "resultLimit"}
        if unknown:
            raise Fault(400, f"Unknown query option(s) {sorted(unknown)}")
        for key, values in query.items():
            if len(values) != 1:
                raise Fault(400, f"query option {key} given twice")
        mask = parse_mask(query["objectMask"][0]) if "objectMask" in query else None
        limit = None
        if "resultLimit" in query:
            raw = query["resultLimit"][0].split(",")
            try:
                offset, count = (int(raw[0]), int(raw[1])) if len(raw) == 2 else (None, None)
            except ValueError:
                offset = None
            if offset is None or offset < 0 or count < 1:
                raise Fault(400, "resultLimit must be 'offset,limit' (offset >= 0, limit >= 1)")
            limit = (offset, count)
        order_desc = False
        if "objectFilter" in query:
            order_desc = self.parse_filter(query["objectFilter"][0], service, method)

        params = None
        if verb in ("POST", "PUT"):
            ctype = self.headers.get("Content-Type", "").split(";")[0].strip()
            if ctype != "application/json":
                raise Fault(400, f"Content-Type must be application/json, got {ctype!r}")
            try:
                doc = json.loads(body.decode("utf-8"))
            except (UnicodeDecodeError, ValueError):
                raise Fault(400, "The request body is not valid JSON.")
            if not isinstance(doc, dict) or set(doc) - {"parameters"}:
                raise Fault(400, "The request body must be {\"parameters\": [...]}.")
            params = doc.get("parameters", [])
            if not isinstance(params, list):
                raise Fault(400, "\"parameters\" must be a list.")
        elif body:
            raise Fault(400, f"{verb} takes no request body")

        state = self.server.state
        key = (service, method)
        with state.lock:
            state.count(f"{service}::{method}")
            if key == ("SoftLayer_Account", "getObject") and verb == "GET" and ident is None:
                if mask is not None:
                    check_mask(mask, {k: None for k in ACCOUNT_FIELDS}, "SoftLayer_Account")
                account = {"id": ACCOUNT_ID, "companyName": "snapcsi tests",
                           "email": "nobody@example.invalid"}
                return {k: v for k, v in account.items() if mask is None or k in mask}
            if key == ("SoftLayer_Account", "getIscsiNetworkStorage") and verb == "GET" \
                    and ident is None:
                self.check_storage_mask(mask)
                items = [volume_object(state, v) for _, v in sorted(state.volumes.items())]
                if order_desc:
                    items.reverse()
                return self.page([apply_mask(i, mask) for i in items], limit)
            if service in ("SoftLayer_Network_Storage_Iscsi", "SoftLayer_Network_Storage"):
                return self.storage_call(verb, service, ident, method, mask, limit, params)
        raise Fault(400, f"Function (\"{method}\") is not a valid method for this service.")

    def parse_filter(self, text, service, method):
        """Only the one filter snapcsi sends: order by id."""
        try:
            doc = json.loads(text)
        except ValueError:
            raise Fault(400, "objectFilter is not valid JSON")
        if (service, method) != ("SoftLayer_Account", "getIscsiNetworkStorage"):
            raise Fault(400, f"objectFilter is not modelled for {service}::{method}")
        try:
            (root, body), = doc.items()
            (prop, spec), = body.items()
            if root != "iscsiNetworkStorage" or prop != "id":
                raise ValueError
            if spec.get("operation") != "orderBy":
                raise ValueError
            (option,) = spec["options"]
            if option.get("name") != "sort" or option.get("value") not in (["ASC"], ["DESC"]):
                raise ValueError
            return option["value"] == ["DESC"]
        except (ValueError, KeyError, AttributeError, TypeError):
            raise Fault(400, f"objectFilter not understood: {text}")

    def check_storage_mask(self, mask):
        if mask is not None:
            check_mask(mask, STORAGE_ALLOWED, "SoftLayer_Network_Storage")

    @staticmethod
    def page(items, limit):
        if limit is None:
            return items
        offset, count = limit
        return items[offset: offset + count]

    def storage_call(self, verb, service, ident, method, mask, limit, params):
        state = self.server.state
        self.check_storage_mask(mask)
        if ident is None:
            raise Fault(400, f"{service}::{method} needs an object id")
        try:
            oid = int(ident)
        except ValueError:
            raise Fault(404, f"Unable to find object with id of '{ident}'.",
                        "SoftLayer_Exception_ObjectNotFound")
        volume = state.volumes.get(oid)
        snapshot = state.snapshots.get(oid)
        if method == "getObject" and verb == "GET":
            if params:
                raise Fault(400, "getObject takes no parameters")
            if volume is not None:
                return apply_mask(volume_object(state, volume), mask)
            if snapshot is not None and service == "SoftLayer_Network_Storage":
                return apply_mask(snapshot_object(state, snapshot), mask)
            raise not_found(service, ident)
        if method == "createSnapshot" and verb == "POST" \
                and service == "SoftLayer_Network_Storage_Iscsi":
            if volume is None:
                raise not_found(service, ident)
            if len(params) != 1 or not isinstance(params[0], str):
                raise Fault(400, "createSnapshot takes one parameter: notes (string)")
            if len(params[0]) > 4000:
                raise Fault(400, "notes may hold at most 4000 characters")
            if volume["snapshotCapacityGb"] <= 0:
                raise Fault(500, "No snapshot space has been ordered for this volume.",
                            "SoftLayer_Exception_Network_Storage_NoSnapshotSpace")
            if time.monotonic() < volume["_ready_at"]:
                raise Fault(500, "The volume has an active transaction; try again later.",
                            "SoftLayer_Exception_Network_Storage_Busy")
            snap = new_snapshot(state, volume, params[0])
            return apply_mask(snapshot_object(state, snap), mask)
        if method == "getSnapshotsForVolume" and verb == "GET" \
                and service == "SoftLayer_Network_Storage_Iscsi":
            if volume is None:
                raise not_found(service, ident)
            items = [apply_mask(snapshot_object(state, s), mask)
                     for s in sorted_snapshots(state, oid)]
            return self.page(items, limit)
        if method == "deleteObject" and verb == "DELETE" \
                and service == "SoftLayer_Network_Storage":
            if snapshot is None:
                raise not_found(service, ident)
            if state.mode == "error_deleting":
                # The storage back end failed the delete: SoftLayer answers false.
                state.mode = "normal"
                return False
            del state.snapshots[oid]
            return True
        raise Fault(400, f"Function (\"{method}\") is not a valid method for this service "
                         f"with HTTP {verb}.")


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--username", default="SL278184")
    parser.add_argument("--api-key", default="sim-api-key-0123456789abcdef")
    parser.add_argument("--base-path", default="/rest/v3.1")
    parser.add_argument("--transaction-seconds", type=float, default=0.0,
                        help="how long a new snapshot keeps an active transaction")
    parser.add_argument("--volumes", type=int, default=0,
                        help="volumes to create at start (20 GB, 10 GB snapshot space)")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.state = State(args.transaction_seconds)
    server.username = args.username
    server.api_key = args.api_key
    server.base_path = args.base_path.rstrip("/")
    server.verbose = args.verbose
    for _ in range(args.volumes):
        new_volume(server.state, {})
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
