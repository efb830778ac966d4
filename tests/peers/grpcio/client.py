"""A CSI client built on the real Python grpcio, with grpcio's default channel options.

Usage: client.py TARGET DRIVER_NAME NAME_PREFIX
  TARGET       a grpcio target such as unix:/run/csi.sock or unix:///run/csi.sock
  DRIVER_NAME  the name GetPluginInfo must answer
  NAME_PREFIX  prefix of the volume and snapshot names it creates (and deletes again)

grpcio on a unix target sends its own `:authority` (the socket path, percent-encoded), not
`localhost` as tonic and grpc-go do; this client exists to check that the driver accepts it.
Nothing is generated from proto/csi.proto: the few messages used are encoded and decoded by
hand below (field numbers from the CSI spec), so only grpcio itself is needed.
Prints one `ok <step>` line per call; exits 1 with the gRPC status on the first failure.
"""

import sys

import grpc


def varint(n):
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, value):
    """One length-delimited field (string, bytes or sub-message)."""
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def field_varint(number, value):
    return varint(number << 3) + varint(value)


def decode(data):
    """Top-level fields of a message: {number: [raw values]} (varints as int, others bytes)."""
    fields, i = {}, 0
    while i < len(data):
        key, i = read_varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, i = read_varint(data, i)
        elif wire == 2:
            length, i = read_varint(data, i)
            value, i = data[i:i + length], i + length
        elif wire == 1:
            value, i = data[i:i + 8], i + 8
        elif wire == 5:
            value, i = data[i:i + 4], i + 4
        else:
            raise ValueError(f"wire type {wire} in answer")
        fields.setdefault(number, []).append(value)
    return fields


def read_varint(data, i):
    shift = result = 0
    while True:
        byte = data[i]
        i += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, i
        shift += 7


def text(fields, number):
    return fields.get(number, [b""])[0].decode()


def main():
    target, driver_name, prefix = sys.argv[1:4]
    # Default options on purpose: no grpc.default_authority, no ssl_target_name_override.
    channel = grpc.insecure_channel(target)

    def call(service, method, request):
        stub = channel.unary_unary(f"/csi.v1.{service}/{method}")
        return stub(request, timeout=30)

    def step(name, service, method, request):
        try:
            answer = decode(call(service, method, request))
        except grpc.RpcError as e:
            print(f"FAILED {name}: {e.code().name}: {e.details()}", flush=True)
            sys.exit(1)
        print(f"ok {name}", flush=True)
        return answer

    info = step("GetPluginInfo", "Identity", "GetPluginInfo", b"")
    if text(info, 1) != driver_name:
        print(f"FAILED GetPluginInfo: name {text(info, 1)!r}, expected {driver_name!r}")
        sys.exit(1)
    step("Probe", "Identity", "Probe", b"")

    # A block volume, SINGLE_NODE_WRITER.
    capability = field(1, b"") + field(3, field_varint(1, 1))
    created = step("CreateVolume", "Controller", "CreateVolume",
                   field(1, f"{prefix}-vol") + field(3, capability))
    volume_id = text(decode(created[1][0]), 2)
    snap = step("CreateSnapshot", "Controller", "CreateSnapshot",
                field(1, volume_id) + field(2, f"{prefix}-snap"))
    snapshot = decode(snap[1][0])
    if text(snapshot, 3) != volume_id:
        print(f"FAILED CreateSnapshot: source {text(snapshot, 3)!r}, expected {volume_id!r}")
        sys.exit(1)

    # An error status travels back as a status, not as a reset stream.
    try:
        call("Controller", "DeleteSnapshot", b"")
        print("FAILED DeleteSnapshot without an id was accepted")
        sys.exit(1)
    except grpc.RpcError as e:
        if e.code() != grpc.StatusCode.INVALID_ARGUMENT:
            print(f"FAILED DeleteSnapshot without an id: {e.code().name}: {e.details()}")
            sys.exit(1)
    print("ok DeleteSnapshot without an id: INVALID_ARGUMENT", flush=True)

    step("DeleteSnapshot", "Controller", "DeleteSnapshot", field(1, text(snapshot, 2)))
    step("DeleteVolume", "Controller", "DeleteVolume", field(1, volume_id))
    print(f"grpcio {grpc.__version__}: every call answered on {target}")


if __name__ == "__main__":
    main()
