"""Fault injection shared by every simulator in tests/sims: one mechanism, one control API.

Control endpoints (no auth, test-only, not part of any cloud's API):

  POST /_faults        {"rules": [RULE, ...], "snapshots": MODE}   both keys optional
  GET  /_faults        {"requests": n, "seen": ["GET /path", ...], "fired": n}
  POST /_faults/reset  drops the rules, the counters and the snapshot mode

RULE: {"fault": KIND, "method": "GET", "path": "/prefix", "count": 1, ...}; `method` and `path`
(a prefix of the URL path) select requests, `count` how many of them get the fault (-1: all).
KIND is one of

  "status"     the request is refused before it is handled: `status` (e.g. 500, 502, 503,
               429, 413) with the cloud's own error body; `retry_after` adds Retry-After
  "reset"      the connection is reset (TCP RST) without an answer; with "after": true the
               request is handled first and only its answer is lost
  "timeout"    nothing is answered for `seconds` (default 5); the request is handled first
               (a server that is slow to answer), or after the wait with "after": false
  "slow_body"  the request is handled, the answer's head is sent, then its body trickles
               one byte every `seconds` (default 0.5) until the client gives up
  "malformed"  the request is handled and its answer's body is cut in half, so that it is
               no longer valid JSON or XML (Content-Length matches the cut body)

MODE ("normal", "stuck", "error", "error_deleting") is handed to the simulator: new snapshots
stay `creating`, end in `error`, or the next delete of a snapshot leaves it in
`error_deleting` (the delete that follows succeeds).
"""

import io
import json
import socket
import struct
import threading
import time

KINDS = ("status", "reset", "timeout", "slow_body", "malformed")
MODES = ("normal", "stuck", "error", "error_deleting")


class Plan:
    """The rules and counters of one simulator."""

    def __init__(self, on_mode=None):
        self.lock = threading.Lock()
        self.on_mode = on_mode
        self.reset()

    def reset(self):
        with self.lock:
            self.rules = []
            self.seen = []
            self.fired = 0
        if self.on_mode:
            self.on_mode("normal")

    def add(self, payload):
        rules = []
        for raw in payload.get("rules", []):
            kind = raw.get("fault")
            if kind not in KINDS:
                raise ValueError(f"fault {kind!r}: one of {KINDS}")
            if kind == "status" and not isinstance(raw.get("status"), int):
                raise ValueError("a status fault needs an integer status")
            rule = {
                "fault": kind,
                "method": raw.get("method"),
                "path": raw.get("path"),
                "count": int(raw.get("count", 1)),
                "status": raw.get("status"),
                "retry_after": raw.get("retry_after"),
                "seconds": float(raw.get("seconds", 0.5 if kind == "slow_body" else 5.0)),
                "after": bool(raw.get("after", kind != "reset")),
            }
            rules.append(rule)
        mode = payload.get("snapshots")
        if mode is not None and mode not in MODES:
            raise ValueError(f"snapshots {mode!r}: one of {MODES}")
        if mode is not None and self.on_mode is None:
            raise ValueError("this server has no snapshot modes")
        with self.lock:
            self.rules.extend(rules)
        if mode is not None and self.on_mode:
            self.on_mode(mode)

    def stats(self):
        with self.lock:
            return {"requests": len(self.seen), "seen": list(self.seen), "fired": self.fired}

    def take(self, method, path):
        """Counts the request and returns the rule it gets, if any."""
        with self.lock:
            self.seen.append(f"{method} {path}")
            for rule in self.rules:
                if rule["count"] == 0:
                    continue
                if rule["method"] and rule["method"] != method:
                    continue
                if rule["path"] and not path.startswith(rule["path"]):
                    continue
                if rule["count"] > 0:
                    rule["count"] -= 1
                self.fired += 1
                return dict(rule)
        return None

    def control(self, handler, method, path, body):
        """Answers a `/_faults` control request; False when `path` is not one."""
        if path not in ("/_faults", "/_faults/reset"):
            return False
        try:
            if method == "GET" and path == "/_faults":
                answer = self.stats()
            elif method == "POST" and path == "/_faults":
                self.add(json.loads(body or b"{}"))
                answer = {}
            elif method == "POST" and path == "/_faults/reset":
                self.reset()
                answer = {}
            else:
                raise ValueError(f"no control endpoint {method} {path}")
            status = 200
        except ValueError as e:
            status, answer = 400, {"error": str(e)}
        data = json.dumps(answer).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)
        return True


def _drain(handler):
    length = handler.headers.get("Content-Length")
    if length and length.isdigit():
        handler.rfile.read(int(length))


def _reset(handler):
    """Closes the connection with a TCP RST (SO_LINGER 0) and no answer."""
    handler.close_connection = True
    try:
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.connection.close()
    except OSError:
        pass


def serve(plan, handler, method, path, run, refuse):
    """Handles one API request through the plan: `run()` handles it normally (writing the
    answer to handler.wfile), `refuse(status, headers)` writes the cloud's error answer."""
    rule = plan.take(method, path)
    if rule is None:
        return run()
    kind = rule["fault"]
    if kind == "status":
        _drain(handler)
        headers = {}
        if rule["retry_after"] is not None:
            headers["Retry-After"] = str(rule["retry_after"])
        return refuse(rule["status"], headers)
    if not rule["after"]:
        if kind == "reset":
            _drain(handler)
            return _reset(handler)
        if kind == "timeout":
            time.sleep(rule["seconds"])
            return run()
    # The request is handled; what happens to its answer is the fault.
    real = handler.wfile
    captured = io.BytesIO()
    handler.wfile = captured
    try:
        run()
        if hasattr(handler, "flush_headers"):
            handler.flush_headers()
    finally:
        handler.wfile = real
    answer = captured.getvalue()
    head, _, body = answer.partition(b"\r\n\r\n")
    try:
        if kind == "reset":
            return _reset(handler)
        if kind == "timeout":
            time.sleep(rule["seconds"])
            real.write(answer)
            return None
        if kind == "malformed":
            cut = body[: len(body) // 2] if body else b"{\"truncated"
            lines = [
                line
                for line in head.split(b"\r\n")
                if not line.lower().startswith(b"content-length:")
            ]
            lines.append(b"Content-Length: " + str(len(cut)).encode())
            real.write(b"\r\n".join(lines) + b"\r\n\r\n" + cut)
            return None
        # slow_body
        real.write(head + b"\r\n\r\n")
        handler.close_connection = True
        for i in range(len(body)):
            real.write(body[i : i + 1])
            time.sleep(rule["seconds"])
    except OSError:
        # The client gave up (that is the point of the fault).
        handler.close_connection = True
    return None
