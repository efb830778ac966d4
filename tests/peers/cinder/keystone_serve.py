"""Serves Keystone's WSGI application on 127.0.0.1:<port> with a threaded wsgiref server
(tests only; production runs it under uwsgi or mod_wsgi).

Usage: OS_KEYSTONE_CONFIG_FILES=keystone.conf KEYSTONE_SERVE_PORT=<port> python keystone_serve.py
(no arguments: Keystone parses the command line as its own options)
"""
import os
import sys
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from keystone.server import wsgi


class ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    def log_message(self, fmt, *args):
        sys.stderr.write("keystone: " + (fmt % args) + "\n")


def main():
    port = int(os.environ["KEYSTONE_SERVE_PORT"])
    application = wsgi.initialize_public_application()
    server = make_server("127.0.0.1", port, application, server_class=ThreadedServer, handler_class=QuietHandler)
    server.serve_forever()


if __name__ == "__main__":
    main()
