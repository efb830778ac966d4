#!/usr/bin/env python3
"""Packs files into a single-layer OCI image archive that `ctr images import` and
`kind load image-archive` take, without a container daemon or a registry.

    oci-image.py OUT.tar NAME:TAG [--entrypoint JSON] [--cmd JSON] [--user UID] SRC=DEST...

Each SRC (a file or a directory) lands at DEST in the image root; directories are copied
whole. A dynamically linked executable brings the shared libraries and the loader that `ldd`
names, at the paths it names (a Go binary built with cgo needs libc). Files keep their mode;
owners are root; times are zero, so the same inputs give the same image digest.
"""
import argparse
import hashlib
import io
import json
import os
import subprocess
import tarfile


def libraries(path):
    """(real file, path in the image) of each library `ldd` names for a dynamic executable."""
    with open(path, "rb") as f:
        if f.read(4) != b"\x7fELF":
            return []
    out = subprocess.run(["ldd", path], capture_output=True, text=True)
    if out.returncode != 0:  # "not a dynamic executable"
        return []
    found = []
    for line in out.stdout.splitlines():
        words = line.split()
        if "=>" in words and len(words) > 2 and words[2].startswith("/"):
            found.append(words[2])
        elif words and words[0].startswith("/"):
            found.append(words[0])
    return [(os.path.realpath(lib), lib) for lib in found]


def add(layer, src, dest):
    dest = dest.lstrip("/")
    parts = dest.split("/")
    for i in range(1, len(parts)):
        parent = "/".join(parts[:i])
        if parent not in layer.getnames():
            info = tarfile.TarInfo(parent)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            layer.addfile(info)
    info = layer.gettarinfo(src, arcname=dest)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mtime = 0
    if info.isreg():
        with open(src, "rb") as f:
            layer.addfile(info, f)
    else:
        layer.addfile(info)
    if os.path.isdir(src) and not os.path.islink(src):
        for name in sorted(os.listdir(src)):
            add(layer, os.path.join(src, name), dest + "/" + name)


def blob(out, data, media_type):
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo("blobs/sha256/" + digest[7:])
    info.size = len(data)
    out.addfile(info, io.BytesIO(data))
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("name")
    p.add_argument("--entrypoint", type=json.loads)
    p.add_argument("--cmd", type=json.loads)
    p.add_argument("--user")
    p.add_argument("files", nargs="+")
    a = p.parse_args()

    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as layer:
        libs = {}
        for spec in a.files:
            src, _, dest = spec.partition("=")
            add(layer, src, dest or "/" + os.path.basename(src))
            if os.path.isfile(src) and os.access(src, os.X_OK):
                libs.update((dest, real) for real, dest in libraries(src))
        for dest, real in sorted(libs.items()):
            add(layer, real, dest)
    # Uncompressed: the archive only travels to a local containerd, and gzip would be most of
    # the time spent here.
    layer_bytes = raw.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()

    config = {"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]}
    if a.entrypoint:
        config["Entrypoint"] = a.entrypoint
    if a.cmd:
        config["Cmd"] = a.cmd
    if a.user:
        config["User"] = a.user
    image_config = {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    with tarfile.open(a.out, "w") as out:
        layer_desc = blob(out, layer_bytes, "application/vnd.oci.image.layer.v1.tar")
        config_desc = blob(out, json.dumps(image_config).encode(),
                           "application/vnd.oci.image.config.v1+json")
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "config": config_desc, "layers": [layer_desc]}
        manifest_desc = blob(out, json.dumps(manifest).encode(),
                             "application/vnd.oci.image.manifest.v1+json")
        name = a.name if "/" in a.name.split(":")[0] or "." in a.name else "docker.io/library/" + a.name
        manifest_desc["platform"] = {"architecture": "amd64", "os": "linux"}
        manifest_desc["annotations"] = {"io.containerd.image.name": name,
                                        "org.opencontainers.image.ref.name": a.name.rsplit(":", 1)[-1]}
        index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                 "manifests": [manifest_desc]}
        for fname, data in (("index.json", json.dumps(index).encode()),
                            ("oci-layout", b'{"imageLayoutVersion": "1.0.0"}')):
            info = tarfile.TarInfo(fname)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    main()
