#!/bin/sh
# Run inside the Dockerfile's `tools` stage (Debian, merged /usr): copies the tools the node
# plugin runs, with exactly the shared libraries they load (ldd), into the directory $1, which
# becomes the whole root of the runtime image. Also snapcsi's own libraries (its path is $2) and
# the few files the tools and TLS read. Usage: slim-rootfs.sh ROOTFS SNAPCSI_BINARY
set -eu
rootfs=$1
binary=$2
# What src/node runs (mount.rs, loopdev.rs, format.rs, freeze.rs).
tools="mount umount losetup blkid fsfreeze mkfs.ext4 mkfs.xfs resize2fs e2fsck dumpe2fs xfs_growfs"

mkdir -p "$rootfs/usr/bin" "$rootfs/usr/sbin" "$rootfs/usr/lib" "$rootfs/usr/lib64" \
    "$rootfs/etc/ssl/certs" "$rootfs/tmp" "$rootfs/proc" "$rootfs/dev" "$rootfs/sys"
chmod 1777 "$rootfs/tmp"
# Merged /usr, as in Debian: binaries name their loader /lib64/ld-linux-x86-64.so.2.
for d in bin sbin lib lib64; do ln -sfn "usr/$d" "$rootfs/$d"; done

# copy PATH: the file PATH points to at its real place, and PATH itself as a symlink to it
# when the two differ (ld-linux in /usr/lib64, a tool reached through a link).
copy() {
    real=$(readlink -f "$1")
    dir=$(readlink -f "$(dirname "$1")")
    mkdir -p "$rootfs$(dirname "$real")"
    cp -p "$real" "$rootfs$real"
    if [ "$dir/$(basename "$1")" != "$real" ]; then
        mkdir -p "$rootfs$dir"
        ln -sfn "$real" "$rootfs$dir/$(basename "$1")"
    fi
}

# copy_with_libs PATH: PATH and every library ldd says it loads (the loader included).
copy_with_libs() {
    copy "$1"
    ldd "$1" | while read -r first arrow path _; do
        if [ "$arrow" = "=>" ] && [ -e "$path" ]; then
            copy "$path"
        elif [ -e "$first" ]; then
            copy "$first"
        fi
    done
}

for tool in $tools; do
    path=$(command -v "$tool") || { echo "slim-rootfs: $tool not found" >&2; exit 1; }
    copy_with_libs "$path"
done
copy_with_libs "$binary"
# mke2fs's defaults, the CA bundle (cloud backends verify TLS with the system roots), and the
# mount table where util-linux looks for it.
cp -p /etc/mke2fs.conf "$rootfs/etc/"
cp -p /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/"
ln -sfn ../proc/self/mounts "$rootfs/etc/mtab"
# Names for the two users the manifests run as.
printf 'root:x:0:0:root:/:/usr/sbin/nologin\nsnapcsi:x:65532:65532:snapcsi:/:/usr/sbin/nologin\n' \
    >"$rootfs/etc/passwd"
printf 'root:x:0:\nsnapcsi:x:65532:\n' >"$rootfs/etc/group"
