#!/usr/bin/env python3
"""A fault-injecting HTTP proxy in front of a real server (the real Cinder in tests/cinder.rs
and tests/faults.rs), so that the HTTP-level faults of tests/sims/faults.py (statuses, resets,
timeouts, slow and malformed bodies) reach the driver from a real cloud's answers. Requests
are forwarded unchanged to --upstream; answers come back unchanged (request-id headers
included) unless a rule fires. A refused request is answered the way Cinder answers a fault
(`{"<faultName>": {"code": n, "message": ...}}`, an `x-openstack-request-id`).

Usage: faultproxy.py --port 0 --upstream http://127.0.0.1:8776
(port 0: a free port, printed as `LISTENING <port>` on the first line of stdout).
Control: /_faults as in tests/sims/faults.py (snapshot modes are the real server's business).
"""

import argparse
import http.client
import json
import sys
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import faults

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "te",
              "trailer", "upgrade", "proxy-connection"}
FAULT_NAMES = {413: "overLimit", 429: "overLimit", 500: "computeFault", 502: "computeFault",
               503: "serviceUnavailable"}


def make_handler(upstream, plan):
    target = urllib.parse.urlsplit(upstream)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "faultproxy"

        def log_message(self, fmt, *args):
            pass

        def body(self):
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def answer(self, status, headers, data):
            self.send_response(status)
            for key, value in headers:
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if data:
                self.wfile.write(data)

        def forward(self, method):
            data = self.body()
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=120)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["Host"] = target.netloc
                conn.request(method, self.path, body=data or None, headers=headers)
                reply = conn.getresponse()
                self.answer(reply.status, reply.getheaders(), reply.read())
            finally:
                conn.close()

        def refuse(self, status, headers):
            fault = {FAULT_NAMES.get(status, "computeFault"): {
                "code": status, "message": "injected fault %d" % status}}
            extra = [("x-openstack-request-id", "req-" + str(uuid.uuid4())),
                     ("Content-Type", "application/json")] + list(headers.items())
            self.answer(status, extra, json.dumps(fault).encode())

        def handle_any(self, method):
            path = urllib.parse.urlsplit(self.path).path
            if path.startswith("/_faults"):
                plan.control(self, method, path, self.body())
                return
            faults.serve(plan, self, method, path, lambda: self.forward(method), self.refuse)

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

    return Handler


def main():
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--upstream", required=True)
    args = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port),
                                 make_handler(args.upstream, faults.Plan()))
    server.daemon_threads = True
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
