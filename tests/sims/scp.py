#!/usr/bin/env python3
"""A strict simulator of the Samsung Cloud Platform (SCP) Virtual Server OpenAPI, for tests.

Written from seed 003 (`POST /v1/snapshots`, versions 1.0-1.3 and their Not Before dates), the
SCP SDK facts in issue 4 (signed headers, the other snapshot and volume calls) and the types of
the SDK generated from the service's OpenAPI (SamsungSDSCloud/terraform-sdk-samsungcloudplatformv2,
library/virtualserver 1.0, issue 15), which outrank a seed's example value. Python standard
library only. It refuses what the service would refuse:

  * every request is signed: `Scp-Signature` is recomputed from the request exactly as
    received (method + `http://` (or `https://`) + Host + the raw request target + `Scp-Timestamp` +
    `Scp-Accesskey` + `Scp-AccountId` (or "") + `Scp-ClientType`), HMAC-SHA256 with the secret
    key, Base64; the timestamp (Unix milliseconds) must lie within 15 minutes of now;
    a missing signing header, an unknown key, a stale timestamp or a wrong signature -> 401;
  * `Scp-Api-Version: virtualserver X.Y`: absent means the newest version (counted in the
    stats); a DEPRECATED version whose Not Before date has arrived -> 400 (seed 003:
    "Deprecated versions with Not Before dates that have arrived or expired are no longer
    supported");
  * JSON bodies: `Content-Type: application/json`, UTF-8, an object with exactly the
    documented fields and types; unknown query parameters, bad numbers -> 400.

The SDK's types, as enforced here:
  * `SnapshotCreateRequest`: `name` (required, 1-255 characters of `[a-zA-Z0-9-_ ]`),
    `volume_id` (required), `description` (string|null), `force` (bool|null), `metadata`
    (object|null: `map[string]interface{}` in the SDK). A `metadata` string (the seed's
    example `"metadata": ""`) is refused.
  * `SnapshotDetailResponse`: `id`, `volume_id`, `size`, `created_at` always; `name`,
    `status`, `metadata` (an object), `description`, `updated_at`, `user_id` nullable.
  * `VolumeCreateRequest`: `name` (required, 1-255 of `[a-zA-Z0-9-_ ]`), `size` (required,
    integer, minimum 8), `snapshot_id`, `volume_type` (string|null), `tags` (array of
    `{key, value}`|null). `VolumeExtendRequest`: `size` (integer, minimum 8).
  * `VolumeShowResponse`: `state` (not `status`), `created_at`, `modified_at`, `servers`...
  * `GET /v1/snapshots` takes `volume_id`, `name`, `limit`, `offset`, `marker`, `with_count`;
    `GET /v1/volumes` takes `name`, `state`, `bootable`, `limit`, `offset`, `marker`,
    `with_count` (and `sort`, which this simulator does not model: refused with a 400 that
    says so). `count` is answered only with `with_count=true` (it is nullable).
  * `POST /v1/volumes/{id}/servers` `{server_id, delete_on_termination}` attaches a volume
    (state `in-use`), `DELETE /v1/volumes/{id}/servers/{server_id}` detaches it.

Assumptions (the SDK has the types, not the service's behaviour):
  * Objects are created in `creating` and become `available` after a configurable delay
    (`--volume-delay`, `--snapshot-delay`); an extended volume is `extending` for the volume
    delay. The states are Cinder's (the service is Cinder underneath: `available`, `in-use`,
    `creating`, `extending`, `error`, ...).
  * Metadata values are strings of at most 255 characters, keys 1-255 (Cinder's rule).
  * State conflicts are 400 with a code naming the conflict, as the issue reports them:
    `InvalidVolumeState` (a volume not `available` for a snapshot, an extend or a delete;
    an attached one needs `force` to be snapshotted), `InvalidSnapshotState` (restore or
    delete of a snapshot still `creating`), `VolumeInUse` (delete of an attached volume),
    `VolumeHasSnapshots` (delete without `cascade=true` of a volume with snapshots).
    Malformed requests are 400 `InvalidParameter` / `InvalidRequestBody`.
  * Deletes take effect at once (no `deleting` state).

Errors are answered as `{"code": "...", "message": "..."}` (the exact SCP wrapper is not
documented in the seed; this is the simulator's assumption).

HTTP-level faults and snapshot modes are injected through `/_faults` (tests/sims/faults.py,
the mechanism every simulator here shares); `GET /_sim/stats` answers request counters;
`POST /_sim/seed {"snapshots": [...], "volumes": [...]}` adds `available` objects with given
fields (`name`, `volume_id`, `metadata` of any JSON type as an older service answered it,
`size`, `created_at`), to play objects this simulator would not make itself (a string
`metadata`, two objects of one name left by a lost create, listed newest first). Every answer carries an `X-Request-Id` (seed 003 names no
request-id header; this is the one the driver's HTTP client reads).

Usage: scp.py --port 0 --credential AK:SK[:ACCOUNT] [--credential ...]
              [--snapshot-delay S] [--volume-delay S] [--today YYYY-MM-DD] [--window S]
With --port 0 a free port is picked; the first stdout line is always `LISTENING <port>`.
"""

import argparse
import base64
import datetime
import hashlib
import hmac
import json
import re
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import faults

SERVICE = "virtualserver"
NEWEST = "1.3"
# seed 003: version -> (state, Not Before)
VERSIONS = {
    "1.3": ("CURRENT", None),
    "1.2": ("SUPPORTED", datetime.date(2026, 8, 31)),
    "1.1": ("DEPRECATED", datetime.date(2026, 5, 31)),
    "1.0": ("DEPRECATED", datetime.date(2025, 12, 31)),
}
SIGNED_HEADERS = ("Scp-Accesskey", "Scp-Timestamp", "Scp-ClientType", "Scp-Signature")
CLIENT_TYPE = "Openapi"
MAX_LIMIT = 1000
USER_ID = "570907805e5447be84b618450ef5200t"
# SnapshotCreateRequest.name / VolumeCreateRequest.name (OpenAPI `pattern`, `maxLength` 255).
NAME = re.compile(r"^[a-zA-Z0-9\-_ ]{1,255}$")
# VolumeCreateRequest.size, VolumeExtendRequest.size (OpenAPI `minimum`); the maximum is ours.
MIN_GB, MAX_GB = 8, 16384
# States a volume may be deleted in (Cinder's rule).
DELETABLE = ("available", "error", "error_restoring", "error_extending")


class Reject(Exception):
    """An answer that ends the request with an SCP error body."""

    def __init__(self, status, code, message, headers=None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def now_rfc3339():
    # Microseconds, as the service's Cinder does: two creates in one second stay ordered.
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def check_name(value):
    if not NAME.match(value):
        raise Reject(
            400,
            "InvalidParameter",
            "name must have 1 to 255 characters of letters, digits, '-', '_' and space",
        )


def check_metadata(value):
    if value is None:
        return {}
    for key, item in value.items():
        if not key or len(key) > 255:
            raise Reject(400, "InvalidParameter", "metadata keys must have 1 to 255 characters")
        if not isinstance(item, str) or len(item) > 255:
            raise Reject(
                400,
                "InvalidParameter",
                f"metadata value of {key!r} must be a string of at most 255 characters",
            )
    return dict(value)


class State:
    def __init__(self, args):
        self.lock = threading.Lock()
        self.credentials = {}
        for item in args.credential:
            parts = item.split(":")
            if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
                raise SystemExit(f"--credential {item!r}: expected AK:SK[:ACCOUNT]")
            self.credentials[parts[0]] = (parts[1], parts[2] if len(parts) == 3 else None)
        self.snapshot_delay = args.snapshot_delay
        self.volume_delay = args.volume_delay
        self.window_ms = int(args.window * 1000)
        self.today = (
            datetime.date.fromisoformat(args.today)
            if args.today
            else datetime.datetime.now(datetime.timezone.utc).date()
        )
        self.volumes = {}
        self.snapshots = {}
        self.seq = 0
        self.snapshot_mode = "normal"
        self.plan = faults.Plan(self.set_mode)
        self.reset()

    def set_mode(self, mode):
        self.snapshot_mode = mode

    def reset(self):
        self.stats = {
            "requests": 0,
            "versions": {},
            "without_version": 0,
            "rejected": {},
        }

    def next_seq(self):
        self.seq += 1
        return self.seq

    def reject_count(self, status):
        key = str(status)
        self.stats["rejected"][key] = self.stats["rejected"].get(key, 0) + 1

    # -- objects ------------------------------------------------------------------------

    def snapshot_status(self, snap):
        if snap["mode"] == "error_deleting":
            return "error_deleting"
        if snap["mode"] == "stuck":
            return "creating"
        if time.monotonic() < snap["ready_at"]:
            return "creating"
        return "error" if snap["mode"] == "error" else "available"

    def volume_state(self, vol):
        now = time.monotonic()
        if now < vol["ready_at"]:
            return "creating"
        if now < vol.get("extended_at", 0.0):
            return "extending"
        return "in-use" if vol["servers"] else "available"

    def new_snapshot(self, name, volume_id, size, description, metadata, delay, mode,
                     created_at=None):
        stamp = created_at or now_rfc3339()
        snap = {
            "id": str(uuid.uuid4()),
            "seq": self.next_seq(),
            "name": name,
            "volume_id": volume_id,
            "size": size,
            "description": description,
            "metadata": metadata,
            "created_at": stamp,
            "updated_at": stamp,
            "ready_at": time.monotonic() + delay,
            "mode": mode,
        }
        self.snapshots[snap["id"]] = snap
        return snap

    def snapshot_view(self, snap):
        return {
            "id": snap["id"],
            "name": snap["name"],
            "volume_id": snap["volume_id"],
            "size": snap["size"],
            "status": self.snapshot_status(snap),
            "created_at": snap["created_at"],
            "updated_at": snap["updated_at"],
            "user_id": USER_ID,
            "metadata": snap["metadata"],
            "description": snap["description"],
        }

    def volume_view(self, vol):
        return {
            "id": vol["id"],
            "name": vol["name"],
            "size": vol["size"],
            "state": self.volume_state(vol),
            "snapshot_id": vol["snapshot_id"],
            "volume_type": vol["volume_type"],
            "volume_type_id": "sim-type-" + vol["volume_type"],
            "created_at": vol["created_at"],
            "modified_at": vol["modified_at"],
            "user_id": USER_ID,
            "bootable": False,
            "encrypted": False,
            "multiattach": False,
            "servers": [dict(s) for s in vol["servers"]],
        }


def check_fields(body, spec):
    """spec: field -> (required, allowed types tuple). Refuses unknown and mistyped fields."""
    if not isinstance(body, dict):
        raise Reject(400, "InvalidRequestBody", "the request body must be a JSON object")
    for key in body:
        if key not in spec:
            raise Reject(400, "InvalidParameter", f"unknown field {key!r}")
    for key, (required, types) in spec.items():
        if key not in body:
            if required:
                raise Reject(400, "InvalidParameter", f"field {key!r} is required")
            continue
        value = body[key]
        ok = any(
            (value is None if t is None else (isinstance(value, t) and not (t is int and isinstance(value, bool))))
            for t in types
        )
        if not ok:
            names = "/".join(
                "null" if t is None else {"dict": "object", "list": "array"}.get(t.__name__, t.__name__)
                for t in types
            )
            raise Reject(
                400,
                "InvalidParameter",
                f"field {key!r} must be {names}, got {type(value).__name__}",
            )


def parse_query(raw, allowed):
    try:
        pairs = urllib.parse.parse_qsl(raw, keep_blank_values=True, strict_parsing=bool(raw))
    except ValueError as e:
        raise Reject(400, "InvalidParameter", f"malformed query string: {e}")
    out = {}
    for key, value in pairs:
        if key not in allowed:
            raise Reject(400, "InvalidParameter", f"unknown query parameter {key!r}")
        if key in out:
            raise Reject(400, "InvalidParameter", f"query parameter {key!r} given twice")
        out[key] = value
    return out


def int_param(query, key, low, high):
    if key not in query:
        return None
    text = query[key]
    if not text.isdigit():
        raise Reject(400, "InvalidParameter", f"{key} must be an integer, got {text!r}")
    value = int(text)
    if value < low or value > high:
        raise Reject(400, "InvalidParameter", f"{key} must be between {low} and {high}")
    return value


def bool_param(query, key):
    text = query.get(key)
    if text is None:
        return False
    if text not in ("true", "false"):
        raise Reject(400, "InvalidParameter", f"{key} must be true or false, got {text!r}")
    return text == "true"


def check_size(size):
    if size < MIN_GB or size > MAX_GB:
        raise Reject(
            400, "InvalidParameter", f"size must be between {MIN_GB} and {MAX_GB} GB, got {size}"
        )


def page(state, collection, items, query, view):
    """limit/offset/marker paging over `items` (already filtered, in creation order)."""
    limit = int_param(query, "limit", 1, MAX_LIMIT)
    offset = int_param(query, "offset", 0, 10**9) or 0
    marker = query.get("marker")
    if marker is not None:
        anchor = collection.get(marker)
        if anchor is None:
            raise Reject(400, "InvalidParameter", f"marker {marker!r} not found")
        items = [i for i in items if i["seq"] > anchor["seq"]]
    items = items[offset:]
    if limit is not None:
        items = items[:limit]
    return [view(i) for i in items]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "scp-sim/1"

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("scp-sim: " + (fmt % args) + "\n")

    # -- plumbing -------------------------------------------------------------------------

    def send_json(self, status, payload, headers=None):
        data = b"" if payload is None else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("X-Request-Id", "req-" + uuid.uuid4().hex[:16])
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if payload is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    def read_body(self):
        if self.headers.get("Transfer-Encoding"):
            raise Reject(400, "InvalidRequestBody", "chunked bodies are not accepted")
        length = self.headers.get("Content-Length")
        if length is None:
            return b""
        if not length.isdigit():
            raise Reject(400, "InvalidRequestBody", "bad Content-Length")
        return self.rfile.read(int(length))

    def handle_any(self, method):
        state = self.server.state
        raw_target = self.path
        path, _, query = raw_target.partition("?")
        if path.startswith("/_faults"):
            state.plan.control(self, method, path, self.read_body())
            return None

        def run():
            try:
                body = self.read_body()
                if path.startswith("/_sim/"):
                    return self.control(method, path, body)
                with state.lock:
                    state.stats["requests"] += 1
                self.authenticate(method, raw_target)
                self.check_version()
                status, payload = self.route(method, path, query, body)
                self.send_json(status, payload)
            except Reject as r:
                refuse(r)

        def refuse(r, headers=None):
            if isinstance(r, int):
                codes = {429: "TooManyRequests", 413: "RequestEntityTooLarge",
                         500: "InternalServerError", 502: "BadGateway",
                         503: "ServiceUnavailable"}
                r = Reject(r, codes.get(r, "Injected"), f"injected fault {r}", headers)
            with state.lock:
                state.reject_count(r.status)
            self.send_json(r.status, {"code": r.code, "message": r.message}, r.headers)

        if path.startswith("/_sim/"):
            return run()
        return faults.serve(state.plan, self, method, path, run, refuse)

    def do_GET(self):
        self.handle_any("GET")

    def do_POST(self):
        self.handle_any("POST")

    def do_PUT(self):
        self.handle_any("PUT")

    def do_DELETE(self):
        self.handle_any("DELETE")

    def do_PATCH(self):
        self.handle_any("PATCH")

    # -- test control ---------------------------------------------------------------------

    def control(self, method, path, body):
        state = self.server.state
        with state.lock:
            if method == "GET" and path == "/_sim/stats":
                return self.send_json(200, state.stats)
            if method == "POST" and path == "/_sim/reset":
                state.reset()
                state.plan.reset()
                return self.send_json(204, None)
            if method == "POST" and path == "/_sim/seed":
                spec = json.loads(body or b"{}")
                made = []
                for item in spec.get("snapshots", []):
                    volume = state.volumes.get(item.get("volume_id"))
                    snap = state.new_snapshot(
                        name=item.get("name"),
                        volume_id=item.get("volume_id"),
                        size=volume["size"] if volume else item.get("size", MIN_GB),
                        description=item.get("description"),
                        metadata=item.get("metadata"),
                        delay=0.0,
                        mode="normal",
                        created_at=item.get("created_at"),
                    )
                    made.append(snap["id"])
                volumes = []
                for item in spec.get("volumes", []):
                    stamp = item.get("created_at") or now_rfc3339()
                    vol = {
                        "id": str(uuid.uuid4()),
                        "seq": state.next_seq(),
                        "name": item.get("name"),
                        "size": item.get("size", MIN_GB),
                        "snapshot_id": None,
                        "volume_type": "SSD",
                        "created_at": stamp,
                        "modified_at": stamp,
                        "ready_at": 0.0,
                        "servers": [],
                    }
                    state.volumes[vol["id"]] = vol
                    volumes.append(vol["id"])
                return self.send_json(200, {"snapshots": made, "volumes": volumes})
        raise Reject(404, "NotFound", f"no control endpoint {method} {path}")

    # -- authentication and versions ------------------------------------------------------

    def authenticate(self, method, raw_target):
        state = self.server.state
        for name in SIGNED_HEADERS:
            if not self.headers.get(name):
                raise Reject(401, "Unauthorized", f"missing header {name}")
        if not self.headers.get("Accept-Language"):
            raise Reject(400, "InvalidRequest", "missing header Accept-Language")
        client_type = self.headers["Scp-ClientType"]
        if client_type != CLIENT_TYPE:
            raise Reject(401, "Unauthorized", f"Scp-ClientType must be {CLIENT_TYPE}")
        timestamp = self.headers["Scp-Timestamp"]
        if not timestamp.isdigit():
            raise Reject(401, "Unauthorized", "Scp-Timestamp must be Unix time in milliseconds")
        skew = abs(int(time.time() * 1000) - int(timestamp))
        if skew > state.window_ms:
            raise Reject(
                401,
                "Unauthorized",
                f"Scp-Timestamp is {skew // 1000} s away from the server clock "
                f"(a signature is valid for {state.window_ms // 60000} minutes)",
            )
        access_key = self.headers["Scp-Accesskey"]
        known = state.credentials.get(access_key)
        if known is None:
            raise Reject(401, "Unauthorized", "unknown access key")
        secret_key, bound_account = known
        account_id = self.headers.get("Scp-AccountId", "")
        if bound_account is not None and account_id and account_id != bound_account:
            raise Reject(403, "Forbidden", "the access key does not belong to that account")
        host = self.headers.get("Host")
        if not host:
            raise Reject(400, "InvalidRequest", "missing header Host")
        url = self.server.scheme + "://" + host + raw_target
        message = method + url + timestamp + access_key + account_id + client_type
        expected = base64.b64encode(
            hmac.new(secret_key.encode(), message.encode(), hashlib.sha256).digest()
        ).decode()
        if not hmac.compare_digest(expected, self.headers["Scp-Signature"]):
            raise Reject(
                401,
                "Unauthorized",
                "the request signature does not match (method, URL, Scp-Timestamp, "
                "Scp-Accesskey, Scp-AccountId and Scp-ClientType are signed)",
            )

    def check_version(self):
        state = self.server.state
        header = self.headers.get("Scp-Api-Version")
        if header is None:
            version = NEWEST
            with state.lock:
                state.stats["without_version"] += 1
        else:
            service, _, version = header.partition(" ")
            if service != SERVICE or not version:
                raise Reject(
                    400,
                    "InvalidApiVersion",
                    f"Scp-Api-Version must read '{SERVICE} <version>', got {header!r}",
                )
        info = VERSIONS.get(version)
        if info is None:
            raise Reject(400, "InvalidApiVersion", f"unknown API version {SERVICE} {version}")
        status, not_before = info
        if status == "DEPRECATED" and not_before is not None and state.today >= not_before:
            raise Reject(
                400,
                "UnsupportedApiVersion",
                f"API version {SERVICE} {version} is DEPRECATED and its Not Before date "
                f"{not_before.strftime('%Y%m%d')} has passed: it is no longer supported; "
                f"use {SERVICE} {NEWEST}",
            )
        with state.lock:
            state.stats["versions"][version] = state.stats["versions"].get(version, 0) + 1

    def json_body(self, body):
        ctype = self.headers.get("Content-Type", "")
        media, _, params = ctype.partition(";")
        if media.strip().lower() != "application/json":
            raise Reject(400, "InvalidRequestBody", f"Content-Type must be application/json, got {ctype!r}")
        charset = params.strip().lower()
        if charset and charset not in ("charset=utf-8", "charset=\"utf-8\""):
            raise Reject(400, "InvalidRequestBody", f"only UTF-8 bodies are accepted, got {charset!r}")
        try:
            return json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise Reject(400, "InvalidRequestBody", f"the body is not UTF-8 JSON: {e}")

    # -- the API --------------------------------------------------------------------------

    def route(self, method, path, query, body):
        parts = [urllib.parse.unquote(p) for p in path.split("/")[1:]]
        if len(parts) < 2 or parts[0] != "v1" or parts[1] not in ("snapshots", "volumes"):
            raise Reject(404, "NotFound", f"no such resource {path}")
        if method in ("GET", "DELETE") and body:
            raise Reject(400, "InvalidRequestBody", f"{method} takes no body")
        collection, rest = parts[1], parts[2:]
        # (collection, number of segments after it, the second one, method)
        handlers = {
            ("snapshots", 0, None, "GET"): self.list_snapshots,
            ("snapshots", 0, None, "POST"): self.create_snapshot,
            ("snapshots", 1, None, "GET"): self.show_snapshot,
            ("snapshots", 1, None, "DELETE"): self.delete_snapshot,
            ("volumes", 0, None, "GET"): self.list_volumes,
            ("volumes", 0, None, "POST"): self.create_volume,
            ("volumes", 1, None, "GET"): self.show_volume,
            ("volumes", 1, None, "DELETE"): self.delete_volume,
            ("volumes", 2, "size", "PUT"): self.extend_volume,
            ("volumes", 2, "servers", "POST"): self.attach_volume,
            ("volumes", 3, "servers", "DELETE"): self.detach_volume,
        }
        second = rest[1] if len(rest) > 1 else None
        handler = handlers.get((collection, len(rest), second, method))
        if handler is None:
            known = {(c, n, s) for (c, n, s, _) in handlers}
            if (collection, len(rest), second) in known:
                raise Reject(405, "MethodNotAllowed", f"{method} is not allowed on {path}")
            raise Reject(404, "NotFound", f"no such resource {path}")
        if len(rest) == 3:
            return handler(rest[0], rest[2], query, body)
        return handler(rest[0] if rest else None, query, body)

    def list_snapshots(self, _id, query, _body):
        state = self.server.state
        q = parse_query(query, {"volume_id", "name", "limit", "offset", "marker", "with_count"})
        with_count = bool_param(q, "with_count")
        with state.lock:
            items = sorted(state.snapshots.values(), key=lambda s: s["seq"])
            if "volume_id" in q:
                items = [s for s in items if s["volume_id"] == q["volume_id"]]
            if "name" in q:
                items = [s for s in items if s["name"] == q["name"]]
            count = len(items)
            shown = page(state, state.snapshots, items, q, state.snapshot_view)
        return 200, {"count": count if with_count else None, "snapshots": shown}

    def create_snapshot(self, _id, query, body):
        state = self.server.state
        parse_query(query, set())
        data = self.json_body(body)
        check_fields(
            data,
            {
                "name": (True, (str,)),
                "volume_id": (True, (str,)),
                "description": (False, (str, None)),
                "force": (False, (bool, None)),
                "metadata": (False, (dict, None)),
            },
        )
        check_name(data["name"])
        metadata = check_metadata(data.get("metadata"))
        with state.lock:
            volume = state.volumes.get(data["volume_id"])
            if volume is None:
                raise Reject(404, "VolumeNotFound", f"volume {data['volume_id']} not found")
            current = state.volume_state(volume)
            if current == "in-use" and not data.get("force"):
                raise Reject(
                    400,
                    "InvalidVolumeState",
                    f"volume {volume['id']} is in-use: snapshot it with force",
                )
            if current not in ("available", "in-use"):
                raise Reject(
                    400,
                    "InvalidVolumeState",
                    f"volume {volume['id']} is {current}, not available",
                )
            snap = state.new_snapshot(
                name=data["name"],
                volume_id=volume["id"],
                size=volume["size"],
                description=data.get("description"),
                metadata=metadata,
                delay=state.snapshot_delay,
                mode=state.snapshot_mode,
            )
            return 202, state.snapshot_view(snap)

    def show_snapshot(self, snapshot_id, query, _body):
        state = self.server.state
        parse_query(query, set())
        with state.lock:
            snap = state.snapshots.get(snapshot_id)
            if snap is None:
                raise Reject(404, "SnapshotNotFound", f"snapshot {snapshot_id} not found")
            return 200, state.snapshot_view(snap)

    def delete_snapshot(self, snapshot_id, query, _body):
        state = self.server.state
        parse_query(query, set())
        with state.lock:
            snap = state.snapshots.get(snapshot_id)
            if snap is None:
                raise Reject(404, "SnapshotNotFound", f"snapshot {snapshot_id} not found")
            current = state.snapshot_status(snap)
            if current not in ("available", "error", "error_deleting"):
                raise Reject(
                    400,
                    "InvalidSnapshotState",
                    f"snapshot {snapshot_id} is {current}: only an available or failed "
                    "snapshot can be deleted",
                )
            if state.snapshot_mode == "error_deleting" and snap["mode"] != "error_deleting":
                # The delete is accepted, then fails in the service: the snapshot stays,
                # in `error_deleting`; the next delete removes it.
                snap["mode"] = "error_deleting"
                state.snapshot_mode = "normal"
            else:
                del state.snapshots[snapshot_id]
        return 204, None

    def list_volumes(self, _id, query, _body):
        state = self.server.state
        q = parse_query(
            query, {"name", "state", "bootable", "limit", "offset", "marker", "with_count", "sort"}
        )
        if "sort" in q:
            raise Reject(400, "InvalidParameter", "sort is not modelled by this simulator")
        with_count = bool_param(q, "with_count")
        bootable = bool_param(q, "bootable")
        with state.lock:
            items = sorted(state.volumes.values(), key=lambda v: v["seq"])
            if "name" in q:
                items = [v for v in items if v["name"] == q["name"]]
            if "state" in q:
                items = [v for v in items if state.volume_state(v) == q["state"]]
            if bootable:
                # No volume here is bootable.
                items = []
            count = len(items)
            shown = page(state, state.volumes, items, q, state.volume_view)
        return 200, {"count": count if with_count else None, "volumes": shown}

    def create_volume(self, _id, query, body):
        state = self.server.state
        parse_query(query, set())
        data = self.json_body(body)
        check_fields(
            data,
            {
                "name": (True, (str,)),
                "size": (True, (int,)),
                "volume_type": (False, (str, None)),
                "snapshot_id": (False, (str, None)),
                "tags": (False, (list, None)),
            },
        )
        check_name(data["name"])
        check_size(data["size"])
        for tag in data.get("tags") or []:
            check_fields(tag, {"key": (True, (str,)), "value": (False, (str, None))})
        with state.lock:
            snapshot_id = data.get("snapshot_id")
            if snapshot_id is not None:
                snap = state.snapshots.get(snapshot_id)
                if snap is None:
                    raise Reject(404, "SnapshotNotFound", f"snapshot {snapshot_id} not found")
                current = state.snapshot_status(snap)
                if current != "available":
                    raise Reject(
                        400,
                        "InvalidSnapshotState",
                        f"snapshot {snapshot_id} is {current}, not available",
                    )
                if data["size"] < snap["size"]:
                    raise Reject(
                        400,
                        "InvalidParameter",
                        f"size {data['size']} is smaller than the snapshot ({snap['size']} GB)",
                    )
            stamp = now_rfc3339()
            vol = {
                "id": str(uuid.uuid4()),
                "seq": state.next_seq(),
                "name": data["name"],
                "size": data["size"],
                "snapshot_id": snapshot_id,
                "volume_type": data.get("volume_type") or "SSD",
                "created_at": stamp,
                "modified_at": stamp,
                "ready_at": time.monotonic() + state.volume_delay,
                "servers": [],
            }
            state.volumes[vol["id"]] = vol
            return 202, state.volume_view(vol)

    def show_volume(self, volume_id, query, _body):
        state = self.server.state
        parse_query(query, set())
        with state.lock:
            vol = state.volumes.get(volume_id)
            if vol is None:
                raise Reject(404, "VolumeNotFound", f"volume {volume_id} not found")
            return 200, state.volume_view(vol)

    def delete_volume(self, volume_id, query, _body):
        state = self.server.state
        q = parse_query(query, {"cascade"})
        cascade = bool_param(q, "cascade")
        with state.lock:
            vol = state.volumes.get(volume_id)
            if vol is None:
                raise Reject(404, "VolumeNotFound", f"volume {volume_id} not found")
            current = state.volume_state(vol)
            if current == "in-use":
                raise Reject(
                    400,
                    "VolumeInUse",
                    f"volume {volume_id} is attached to {len(vol['servers'])} server(s)",
                )
            if current not in DELETABLE:
                raise Reject(
                    400,
                    "InvalidVolumeState",
                    f"volume {volume_id} is {current}: only an available or failed volume "
                    "can be deleted",
                )
            dependents = [s for s in state.snapshots.values() if s["volume_id"] == volume_id]
            if dependents and not cascade:
                raise Reject(
                    400,
                    "VolumeHasSnapshots",
                    f"volume {volume_id} still has {len(dependents)} snapshot(s)",
                )
            for s in dependents:
                del state.snapshots[s["id"]]
            del state.volumes[volume_id]
        return 204, None

    def extend_volume(self, volume_id, query, body):
        state = self.server.state
        parse_query(query, set())
        data = self.json_body(body)
        check_fields(data, {"size": (True, (int,))})
        check_size(data["size"])
        with state.lock:
            vol = state.volumes.get(volume_id)
            if vol is None:
                raise Reject(404, "VolumeNotFound", f"volume {volume_id} not found")
            current = state.volume_state(vol)
            if current not in ("available", "in-use"):
                raise Reject(
                    400,
                    "InvalidVolumeState",
                    f"volume {volume_id} is {current}, not available",
                )
            if data["size"] <= vol["size"]:
                raise Reject(
                    400,
                    "InvalidParameter",
                    f"new size {data['size']} must be greater than the current {vol['size']} GB",
                )
            vol["size"] = data["size"]
            vol["modified_at"] = now_rfc3339()
            vol["extended_at"] = time.monotonic() + state.volume_delay
            return 200, state.volume_view(vol)

    def attach_volume(self, volume_id, query, body):
        state = self.server.state
        parse_query(query, set())
        data = self.json_body(body)
        check_fields(
            data,
            {"server_id": (True, (str,)), "delete_on_termination": (False, (bool, None))},
        )
        with state.lock:
            vol = state.volumes.get(volume_id)
            if vol is None:
                raise Reject(404, "VolumeNotFound", f"volume {volume_id} not found")
            current = state.volume_state(vol)
            if current != "available":
                raise Reject(
                    400, "InvalidVolumeState", f"volume {volume_id} is {current}, not available"
                )
            attachment = {
                "id": data["server_id"],
                "device": "/dev/vdb",
                "attached_at": now_rfc3339(),
            }
            vol["servers"].append(attachment)
            return 200, {
                "volume_id": volume_id,
                "server_id": data["server_id"],
                "device": attachment["device"],
                "delete_on_termination": bool(data.get("delete_on_termination")),
            }

    def detach_volume(self, volume_id, server_id, query, _body):
        state = self.server.state
        parse_query(query, set())
        with state.lock:
            vol = state.volumes.get(volume_id)
            if vol is None:
                raise Reject(404, "VolumeNotFound", f"volume {volume_id} not found")
            kept = [s for s in vol["servers"] if s["id"] != server_id]
            if len(kept) == len(vol["servers"]):
                raise Reject(404, "NotFound", f"volume {volume_id} is not attached to {server_id}")
            vol["servers"] = kept
        return 204, None


def main():
    parser = argparse.ArgumentParser(description="SCP Virtual Server OpenAPI simulator")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--credential", action="append", default=[], help="AK:SK[:ACCOUNT]")
    parser.add_argument("--snapshot-delay", type=float, default=0.0)
    parser.add_argument("--volume-delay", type=float, default=0.0)
    parser.add_argument("--today", help="YYYY-MM-DD for the version policy (default: UTC today)")
    parser.add_argument("--window", type=float, default=900.0, help="signature validity, seconds")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--tls-cert", help="serve HTTPS with this PEM certificate chain")
    parser.add_argument("--tls-key", help="the certificate's PEM private key")
    args = parser.parse_args()
    if not args.credential:
        raise SystemExit("at least one --credential AK:SK is required")
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    server.state = State(args)
    server.verbose = args.verbose
    server.scheme = "http"
    if args.tls_cert:
        import ssl

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        server.scheme = "https"
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
