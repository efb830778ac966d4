"""Runs a real OpenStack Nova 34 (API + conductor + scheduler + compute) and Placement 16 in ONE
process for tests: native threads (Nova's `threading` concurrency backend), sqlite databases,
oslo.messaging's in-process `fake:/` transport, Keystone auth, and Nova's own fake virt driver.

What is added to the real code, and why:

- One message exchange for every transport. Nova opens a transport per cell (the API and the
  conductor reach cell1 through its mapping's URL); oslo.messaging's fake driver keeps its
  queues per transport object, so a cast on one would never reach a server listening on
  another. All fake transports share the first one's queues here, as they would share a
  broker.
- A hypervisor for the fake virt driver (HookedFakeDriver). Nova's fake driver records an
  attachment and nothing else; when NOVA_BY_ID_DIR is set, this one does what a KVM host and
  the guest's udev do together: attach_volume gives the volume a disk (a sparse file under
  NOVA_DISK_DIR, kept across attachments like the volume's data, on a loop device) and makes
  the guest's by-id link `virtio-<first 20 characters of the volume id>` point at it;
  detach_volume removes the link and the loop device; extend_volume (Cinder's
  volume-extended event for an in-use volume) grows the file and tells the loop device.

- sqlite transactions that queue (_serialize_sqlite_writers below) instead of failing with
  "database is locked" when the threads contend.
- An empty network endpoint (NEUTRON_PORT). The servers here have no ports (`networks:
  none`), but Nova's server views still ask Neutron for the servers' ports and security
  groups; this answers those reads with empty lists, and nothing else. Neutron itself is not
  under test and is not installed.

Usage: python nova_allinone.py   (OS_NOVA_CONFIG_DIR holds nova.conf and api-paste.ini,
OS_PLACEMENT_CONFIG_DIR placement.conf; NOVA_API_PORT and PLACEMENT_PORT the listen ports)
"""
# Nova's own entry points do this first: the threading backend, no eventlet.
from nova import monkey_patch

monkey_patch.patch(backend="threading")

import atexit  # noqa: E402
import os  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import types  # noqa: E402
from socketserver import ThreadingMixIn  # noqa: E402
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server  # noqa: E402

from oslo_messaging._drivers import impl_fake  # noqa: E402

_shared_exchanges = []
_original_fake_init = impl_fake.FakeDriver.__init__


def _shared_fake_init(self, *args, **kwargs):
    _original_fake_init(self, *args, **kwargs)
    if _shared_exchanges:
        self._exchange_manager = _shared_exchanges[0]
    else:
        _shared_exchanges.append(self._exchange_manager)


impl_fake.FakeDriver.__init__ = _shared_fake_init


def _serialize_sqlite_writers():
    """Every sqlite transaction starts with BEGIN IMMEDIATE, so it waits its turn.

    Nova's services are threads of this one process sharing sqlite files, and oslo.db opens
    each transaction with a plain (deferred) BEGIN. A transaction that reads first and writes
    later then holds a shared lock; if another thread is already waiting to commit, sqlite
    answers "database is locked" at once instead of waiting (waiting could deadlock), and a
    server build failed that way under load. Taking the write lock at the start of each
    transaction makes them queue on sqlite's busy timeout instead (120 s in the connection
    URLs). This listener runs before oslo.db's and sets the marker oslo.db checks, so oslo.db
    does not emit its own BEGIN (its commit/rollback listeners clear the marker).
    """
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    @event.listens_for(Engine, "begin", insert=True)
    def _begin_immediate(connection):
        if connection.dialect.name == "sqlite" and "in_transaction" not in connection.info:
            connection.exec_driver_sql("BEGIN IMMEDIATE")
            connection.info["in_transaction"] = True


_serialize_sqlite_writers()


class ThreadedServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class QuietHandler(WSGIRequestHandler):
    prefix = "wsgi"

    def log_message(self, fmt, *args):
        sys.stderr.write("%s: %s\n" % (self.prefix, fmt % args))


def serve(app, port, prefix):
    handler = type("Handler", (QuietHandler,), {"prefix": prefix})
    server = make_server("127.0.0.1", port, app, server_class=ThreadedServer, handler_class=handler)
    thread = threading.Thread(target=server.serve_forever, name=prefix, daemon=True)
    thread.start()
    return server


def empty_network(environ, start_response):
    """Answers the reads Nova's server views make of Neutron: no ports, no groups."""
    import json

    path = environ.get("PATH_INFO", "")
    collection = path.rstrip("/").rsplit("/", 1)[-1].replace("-", "_").split(".")[0]
    if environ["REQUEST_METHOD"] != "GET" or collection not in (
            "ports", "security_groups", "networks", "extensions", "floatingips", "subnets"):
        start_response("404 Not Found", [("Content-Type", "application/json")])
        return [b'{"NeutronError": {"message": "not served here", "type": "HTTPNotFound"}}']
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({collection: []}).encode()]


# --- the simulated hypervisor -------------------------------------------------------------

_disks_lock = threading.Lock()
_attached = {}  # volume id -> loop device


def _run(*argv):
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout.strip()


def _link(volume_id):
    return os.path.join(os.environ["NOVA_BY_ID_DIR"], "virtio-" + volume_id[:20])


def _disk_file(volume_id):
    return os.path.join(os.environ["NOVA_DISK_DIR"], volume_id + ".img")


def _plug(volume_id, size_gib):
    with _disks_lock:
        if volume_id in _attached:
            return
        os.makedirs(os.environ["NOVA_DISK_DIR"], exist_ok=True)
        os.makedirs(os.environ["NOVA_BY_ID_DIR"], exist_ok=True)
        path = _disk_file(volume_id)
        with open(path, "a"):
            pass
        want = int(size_gib) << 30
        if os.path.getsize(path) < want:
            os.truncate(path, want)
        device = _run("losetup", "--find", "--show", path)
        link = _link(volume_id)
        tmp = link + ".tmp"
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.symlink(device, tmp)
        os.replace(tmp, link)
        _attached[volume_id] = device


def _unplug(volume_id):
    with _disks_lock:
        device = _attached.pop(volume_id, None)
        link = _link(volume_id)
        if os.path.lexists(link):
            os.unlink(link)
        if device:
            # A guest's disk goes away whether or not something still has it open.
            subprocess.run(["losetup", "-d", device], check=False, capture_output=True)


def _grow(volume_id, size_bytes):
    with _disks_lock:
        path = _disk_file(volume_id)
        if os.path.exists(path) and os.path.getsize(path) < size_bytes:
            os.truncate(path, size_bytes)
        device = _attached.get(volume_id)
        if device:
            _run("losetup", "-c", device)


def _unplug_all():
    for volume_id in list(_attached):
        _unplug(volume_id)


def _driver_class():
    from nova.virt import fake
    from nova.volume import cinder

    class HookedFakeDriver(fake.FakeDriver):
        def attach_volume(self, context, connection_info, instance, mountpoint, disk_bus=None,
                          device_type=None, encryption=None):
            super().attach_volume(context, connection_info, instance, mountpoint, disk_bus,
                                  device_type, encryption)
            if os.environ.get("NOVA_BY_ID_DIR"):
                volume_id = connection_info["serial"]
                size = cinder.API().get(context, volume_id)["size"]
                _plug(volume_id, size)

        def detach_volume(self, context, connection_info, instance, mountpoint, encryption=None):
            super().detach_volume(context, connection_info, instance, mountpoint, encryption)
            if os.environ.get("NOVA_BY_ID_DIR"):
                _unplug(connection_info["serial"])

        def extend_volume(self, context, connection_info, instance, requested_size):
            super().extend_volume(context, connection_info, instance, requested_size)
            if os.environ.get("NOVA_BY_ID_DIR"):
                _grow(connection_info["serial"], requested_size)

    return HookedFakeDriver


def main():
    sys.argv = [sys.argv[0]]
    # Nova loads `compute_driver` from the nova.virt package: nova.conf names
    # snapcsi_fake.HookedFakeDriver, which lives here.
    module = types.ModuleType("nova.virt.snapcsi_fake")
    module.HookedFakeDriver = _driver_class()
    sys.modules[module.__name__] = module
    atexit.register(_unplug_all)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))

    from placement.wsgi import init_application as placement_app

    serve(placement_app(), int(os.environ["PLACEMENT_PORT"]), "placement")
    serve(empty_network, int(os.environ["NEUTRON_PORT"]), "network")

    # Parses nova.conf, sets up logging and the API service record.
    from nova.api.openstack import wsgi_app

    api = wsgi_app.init_application("osapi_compute", "nova-api-os-compute")

    from nova.compute import rpcapi as compute_rpcapi
    from nova import service

    services = [
        service.Service.create(binary="nova-conductor", topic="conductor"),
        service.Service.create(binary="nova-scheduler", topic="scheduler"),
        service.Service.create(binary="nova-compute", topic=compute_rpcapi.RPC_TOPIC,
                               topic_alt=compute_rpcapi.RPC_TOPIC_ALT),
    ]
    for s in services:
        s.start()
    serve(api, int(os.environ["NOVA_API_PORT"]), "nova-api")
    try:
        threading.Event().wait()
    finally:
        for s in services:
            try:
                s.stop()
            except Exception:  # noqa: BLE001 - shutting down anyway
                pass
        _unplug_all()


if __name__ == "__main__":
    main()
