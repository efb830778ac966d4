#!/usr/bin/env python3
"""Relays byte streams between a TCP port of 127.0.0.1 and a unix socket, either way.

    bridge.py LISTEN TARGET      each is unix:/path or tcp:127.0.0.1:PORT

tests/k8s/cbt-e2e.sh runs the external-snapshot-metadata sidecar in a network namespace of its
own, because it listens on every address (`:PORT`) and this machine's servers may listen on
127.0.0.1 only. Two bridges carry the kube-apiserver's port into that namespace through a unix
socket (unix sockets are reached by path, across network namespaces). Standard library only.
"""

import asyncio
import os
import sys


def parse(spec):
    kind, _, rest = spec.partition(":")
    if kind == "unix" and rest:
        return ("unix", rest)
    if kind == "tcp":
        host, _, port = rest.rpartition(":")
        if host == "127.0.0.1" and port.isdigit():
            return ("tcp", (host, int(port)))
    raise SystemExit(f"bridge.py: bad endpoint {spec!r} (unix:/path or tcp:127.0.0.1:PORT)")


async def pipe(reader, writer):
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        try:
            writer.close()
        except Exception:  # noqa: BLE001 - the peer may be gone already
            pass


async def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    listen, target = parse(sys.argv[1]), parse(sys.argv[2])

    async def connect():
        if target[0] == "unix":
            return await asyncio.open_unix_connection(target[1])
        return await asyncio.open_connection(*target[1])

    async def handle(reader, writer):
        try:
            upstream_reader, upstream_writer = await connect()
        except OSError as e:
            print(f"bridge.py: cannot reach {sys.argv[2]}: {e}", file=sys.stderr)
            writer.close()
            return
        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    if listen[0] == "unix":
        if os.path.exists(listen[1]):
            os.unlink(listen[1])
        server = await asyncio.start_unix_server(handle, listen[1])
    else:
        server = await asyncio.start_server(handle, *listen[1])
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
