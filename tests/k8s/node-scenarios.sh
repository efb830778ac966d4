# shellcheck shell=bash
# shellcheck disable=SC2154  # data, kubelet_root, ... are set by node-e2e.sh, which sources this
# The scenarios of the node e2e, sourced by tests/k8s/node-e2e.sh once snapcsi runs as pods on
# its node. Each prints `scenario <name>: OK (<seconds>s)` or stops the run with what failed.
# Uses from node-e2e.sh: KUBECTL, SNAPCSI_BIN (for `snapcsi ctl`), data (the local backend's
# directory on the host), kubelet_root, busybox_image, healthz_port, restart_kubelet, ctr, say.
#
#   a fs-restore        fs PVC (pod as uid 1000, fsGroup 2000) writes 8 MiB -> VolumeSnapshot
#                       -> restored PVC -> a second pod reads the same sha256; the snapshot of
#                       the mounted ext4 is clean (frozen, no journal to replay)
#   b block-restore     the same with volumeDevices, sha256 of the device's first 4 MiB
#   c online-expand     a mounted xfs PVC grows 320Mi -> 480Mi; `df` in the running pod sees it
#                       (xfs: online ext4 growth needs CAP_SYS_RESOURCE, which this machine
#                       gives no process, root included)
#   d group-snapshot    VolumeGroupSnapshot of two PVCs while a pod appends to both (each line
#                       synced before the next write to the other); both restored, each log
#                       whole and the two within one line of each other
#   e cleanup           the pods of a and b deleted -> no mount, no loop device, no staged marker
#   f kubelet-restart   kubelet restarted while a pod runs: the pod keeps its volume and writes;
#                       then the pod is deleted and everything is cleaned up
#   g scheduled         the snapcsi-scheduler Deployment snapshots a mounted PVC on its schedule
#   h kill-create       the driver container SIGKILLed while it writes a snapshot image -> the
#                       VolumeSnapshot still ends readyToUse, one snapshot in the driver
#   i kind-example      deploy/kind/up.sh's own example manifests, as up.sh runs them (only the
#                       busybox image is ours): write, snapshot, restore, read

k() { "$KUBECTL" "$@"; }
scenario_fail() { say "scenario $current: FAILED: $*"; exit 1; }

# until_true SECONDS WHAT COMMAND...
until_true() {
    local limit=$1 what=$2; shift 2
    local deadline=$((SECONDS + limit))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || scenario_fail "timed out after ${limit}s waiting for $what"
        sleep 0.5
    done
}

pvc() { # pvc NAME SIZE [Filesystem|Block] [SNAPSHOT] [LABEL=VALUE] [CLASS]
    local name=$1 size=$2 mode=${3:-Filesystem} snap=${4:-} label=${5:-} class=${6:-snapcsi}
    {
        echo "apiVersion: v1"
        echo "kind: PersistentVolumeClaim"
        echo "metadata:"
        echo "  name: $name"
        [[ -n $label ]] && echo "  labels: {${label%%=*}: ${label#*=}}"
        echo "spec:"
        echo "  accessModes: [ReadWriteOnce]"
        echo "  storageClassName: $class"
        echo "  volumeMode: $mode"
        echo "  resources: {requests: {storage: $size}}"
        if [[ -n $snap ]]; then
            echo "  dataSource: {apiGroup: snapshot.storage.k8s.io, kind: VolumeSnapshot, name: $snap}"
        fi
    } | k apply -f - >/dev/null
}

# pod NAME SCRIPT READY_FILE VOLUME_SPEC...: a busybox pod running SCRIPT (a TERM trap is added),
# ready once READY_FILE exists. VOLUME_SPEC is CLAIM:/path (mounted) or CLAIM@/dev/x (device).
# Mounting pods run as uid 1000 with fsGroup 2000: only the fsGroup lets them write.
pod() {
    local name=$1 script=$2 ready=$3; shift 3
    local mounts='' devices='' volumes='' spec claim user=1000 i=0
    for spec in "$@"; do
        i=$((i + 1))
        if [[ $spec == *@* ]]; then
            claim=${spec%%@*}
            devices+="        - {name: v$i, devicePath: ${spec#*@}}"$'\n'
            user=0
        else
            claim=${spec%%:*}
            mounts+="        - {name: v$i, mountPath: ${spec#*:}}"$'\n'
        fi
        volumes+="    - {name: v$i, persistentVolumeClaim: {claimName: $claim}}"$'\n'
    done
    k apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: $name
spec:
  terminationGracePeriodSeconds: 5
  securityContext: {runAsUser: $user, runAsGroup: $user, fsGroup: 2000}
  containers:
    - name: main
      image: $busybox_image
      command: [sh, -c, "trap 'exit 0' TERM; $script; while :; do sleep 1; done"]
      readinessProbe:
        exec: {command: [test, -e, $ready]}
        periodSeconds: 1
${mounts:+      volumeMounts:
$mounts}${devices:+      volumeDevices:
$devices}  volumes:
$volumes
EOF
}

pod_ready() { k wait --for condition=Ready "pod/$1" --timeout="${2:-120}s" >/dev/null || {
    k describe pod "$1" | tail -n 20
    scenario_fail "pod $1 is not ready"
}; }
pod_gone() { k delete pod "$@" --wait=true --timeout=90s >/dev/null || scenario_fail "pods $* not deleted"; }

snapshot() { # snapshot NAME CLAIM
    k apply -f - >/dev/null <<EOF
apiVersion: snapshot.storage.k8s.io/v1
kind: VolumeSnapshot
metadata: {name: $1}
spec:
  volumeSnapshotClassName: snapcsi
  source: {persistentVolumeClaimName: $2}
EOF
}
snapshot_ready() {
    until_true "${2:-120}" "VolumeSnapshot $1 readyToUse" \
        sh -c "'$KUBECTL' get volumesnapshot '$1' -o jsonpath='{.status.readyToUse}' | grep -qx true"
}
# The driver's id of a VolumeSnapshot's snapshot.
snapshot_handle() {
    local content
    content=$(k get volumesnapshot "$1" -o jsonpath='{.status.boundVolumeSnapshotContentName}')
    k get volumesnapshotcontent "$content" -o jsonpath='{.status.snapshotHandle}'
}
volume_handle() { # volume_handle CLAIM
    local pv
    pv=$(k get pvc "$1" -o jsonpath='{.spec.volumeName}')
    k get pv "$pv" -o jsonpath='{.spec.csi.volumeHandle}'
}
in_pod() { k exec "$1" -- sh -c "$2"; }

# Loop devices whose backing file is IMAGE (same inode and device, whatever path the kernel
# shows for a file opened inside a container).
loops_for() {
    local ino dev
    ino=$(stat -c %i "$1") dev=$(stat -c '%d' "$1")
    losetup -l -n -O NAME,BACK-INO,BACK-MAJ:MIN | while read -r name bino bdev; do
        [[ $bino == "$ino" ]] || continue
        local major=${bdev%%:*} minor=${bdev#*:}
        (((major << 20 | minor) == dev || (major << 8 | minor) == dev)) && echo "$name"
    done
    return 0
}
# Why the volume VOLUME_ID (PV PV) is not released from the node yet (a mount whose source or
# target names it, a loop device on its image, its staged marker); nothing and status 0 once
# it is, status 1 otherwise.
not_released() { # not_released VOLUME_ID PV
    local image=$data/volumes/$1.img mounts loops
    mounts=$(findmnt -rn -o TARGET | grep -F -e "$2" -e "$1" || true)
    [[ -z $mounts ]] || { echo "still mounted at: $mounts"; return 1; }
    if [[ -e $image ]]; then
        loops=$(loops_for "$image")
        [[ -z $loops ]] || { echo "still attached to $loops"; return 1; }
    fi
    [[ ! -e $data/staged/$1 ]] || { echo "still has its staged marker"; return 1; }
}
assert_released() { # assert_released VOLUME_ID PV: waits up to 60 s
    local deadline=$((SECONDS + 60)) why
    until why=$(not_released "$1" "$2"); do
        ((SECONDS < deadline)) || scenario_fail "volume $1 not released after 60s: $why"
        sleep 0.5
    done
}
# Loop devices the kubelet attaches over a block volume's device file (its "device lock").
kubelet_loops() { losetup -l -n -O NAME,BACK-FILE | awk -v r="$kubelet_root" 'index($2, r) == 1 || $2 ~ /^\/dev\/loop/ {print $1}'; }

# ------------------------------------------------------------------ a ---
scenario_a() {
    pvc a-src 64Mi
    pod a-writer 'head -c 8388608 /dev/urandom > /data/blob && sync && touch /data/done' /data/done a-src:/data
    pod_ready a-writer
    local sum group
    sum=$(in_pod a-writer 'sha256sum /data/blob' | cut -d' ' -f1)
    group=$(in_pod a-writer 'stat -c %g /data')
    [[ $group == 2000 ]] || scenario_fail "fsGroup: the volume root has group $group, not 2000"
    snapshot a-snap a-src
    snapshot_ready a-snap
    local handle image features
    handle=$(snapshot_handle a-snap)
    image=$data/snapshots/$handle.img
    [[ -f $image ]] || scenario_fail "no image $image for snapshot $handle"
    # A clone taken while the ext4 was frozen has an empty journal.
    features=$(dumpe2fs -h "$image" 2>/dev/null | sed -n 's/^Filesystem features: *//p')
    [[ -n $features ]] || scenario_fail "snapshot image $image holds no ext4"
    [[ $features != *needs_recovery* ]] \
        || scenario_fail "snapshot $handle of the mounted volume needs journal recovery: it was not frozen"
    pvc a-restored 64Mi Filesystem a-snap
    pod a-reader true /data/done a-restored:/data
    pod_ready a-reader
    local got
    got=$(in_pod a-reader 'sha256sum /data/blob' | cut -d' ' -f1)
    [[ $got == "$sum" ]] || scenario_fail "restored file has sha256 $got, written $sum"
    say "a: 8 MiB written as uid 1000 (fsGroup 2000), snapshot $handle clean, restored: sha256 ${sum:0:16}... matches"
}

# ------------------------------------------------------------------ b ---
scenario_b() {
    pvc b-src 32Mi Block
    pod b-writer 'head -c 4194304 /dev/urandom > /tmp/x && dd if=/tmp/x of=/dev/xvda bs=1048576 conv=fsync 2>/dev/null && touch /tmp/done' \
        /tmp/done b-src@/dev/xvda
    pod_ready b-writer
    local sum got
    sum=$(in_pod b-writer 'head -c 4194304 /dev/xvda | sha256sum' | cut -d' ' -f1)
    [[ $sum == $(in_pod b-writer 'sha256sum /tmp/x' | cut -d' ' -f1) ]] \
        || scenario_fail "the device does not hold what was written to it"
    snapshot b-snap b-src
    snapshot_ready b-snap
    pvc b-restored 32Mi Block b-snap
    pod b-reader 'touch /tmp/done' /tmp/done b-restored@/dev/xvdb
    pod_ready b-reader
    got=$(in_pod b-reader 'head -c 4194304 /dev/xvdb | sha256sum' | cut -d' ' -f1)
    [[ $got == "$sum" ]] || scenario_fail "restored device has sha256 $got, written $sum"
    say "b: 4 MiB written to a block PVC, restored as a block PVC: sha256 ${sum:0:16}... matches"
}

# ------------------------------------------------------------------ c ---
df_kib() { in_pod "$1" 'df -k /data' | awk 'NR == 2 {print $2}'; }
scenario_c() {
    k apply -f - >/dev/null <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: snapcsi-xfs}
provisioner: snapcsi.dev
volumeBindingMode: WaitForFirstConsumer
allowVolumeExpansion: true
parameters: {csi.storage.k8s.io/fstype: xfs}
EOF
    pvc c-vol 320Mi Filesystem '' '' snapcsi-xfs
    pod c-user 'touch /data/done' /data/done c-vol:/data
    pod_ready c-user
    local before after fs
    fs=$(in_pod c-user 'grep " /data " /proc/mounts' | awk '{print $3}')
    [[ $fs == xfs ]] || scenario_fail "c-vol is mounted as $fs, not xfs"
    before=$(df_kib c-user)
    k patch pvc c-vol --type merge -p '{"spec":{"resources":{"requests":{"storage":"480Mi"}}}}' >/dev/null
    until_true 120 "PVC c-vol capacity 480Mi" \
        sh -c "'$KUBECTL' get pvc c-vol -o jsonpath='{.status.capacity.storage}' | grep -qx 480Mi"
    until_true 60 "df in pod c-user to see the new size" \
        sh -c "[ \$('$KUBECTL' exec c-user -- df -k /data | awk 'NR == 2 {print \$2}') -gt $((before + 120000)) ]"
    after=$(df_kib c-user)
    in_pod c-user 'head -c 400000000 /dev/zero > /data/fill && sync && rm /data/fill' \
        || scenario_fail "cannot write 400 MB into the grown volume"
    say "c: xfs, df in the running pod: ${before} KiB -> ${after} KiB; 400 MB written"
}

# ------------------------------------------------------------------ d ---
scenario_d() {
    pvc d-one 64Mi Filesystem '' snapcsi-e2e-group=d
    pvc d-two 64Mi Filesystem '' snapcsi-e2e-group=d
    # Line i goes to one.log, is synced, then to two.log, synced: any instant has
    # one.log at i or i+1 lines when two.log has i.
    # shellcheck disable=SC2016  # the pod's shell expands it
    pod d-writer 'i=0; while [ $i -lt 1000000 ]; do i=$((i + 1)); echo $i >> /one/one.log; sync; echo $i >> /two/two.log; sync; [ $i = 50 ] && touch /one/started; done' \
        /one/started d-one:/one d-two:/two
    pod_ready d-writer
    k apply -f - >/dev/null <<EOF
apiVersion: groupsnapshot.storage.k8s.io/v1
kind: VolumeGroupSnapshot
metadata: {name: d-group}
spec:
  volumeGroupSnapshotClassName: snapcsi
  source: {selector: {matchLabels: {snapcsi-e2e-group: d}}}
EOF
    until_true 120 "VolumeGroupSnapshot d-group readyToUse" \
        sh -c "'$KUBECTL' get volumegroupsnapshot d-group -o jsonpath='{.status.readyToUse}' | grep -qx true"
    local members
    until_true 60 "two ready member VolumeSnapshots of d-group" sh -c \
        "[ \$('$KUBECTL' get volumesnapshot -o jsonpath='{range .items[?(@.metadata.ownerReferences[0].name==\"d-group\")]}{.status.readyToUse}{\"\\n\"}{end}' | grep -c true) = 2 ]"
    members=$(k get volumesnapshot -o jsonpath='{range .items[?(@.metadata.ownerReferences[0].name=="d-group")]}{.metadata.name}{" "}{end}')
    local m i=0 specs=()
    for m in $members; do
        i=$((i + 1))
        pvc "d-restored-$i" 64Mi Filesystem "$m"
        specs+=("d-restored-$i:/r$i")
    done
    ((i == 2)) || scenario_fail "d-group has $i members, not 2"
    pod d-reader 'touch /tmp/done' /tmp/done "${specs[@]}"
    pod_ready d-reader
    local one two
    one=$(in_pod d-reader 'cat /r1/one.log /r2/one.log 2>/dev/null || true')
    two=$(in_pod d-reader 'cat /r1/two.log /r2/two.log 2>/dev/null || true')
    local n_one n_two
    n_one=$(grep -c . <<<"$one"); n_two=$(grep -c . <<<"$two")
    [[ $one == "$(seq 1 "$n_one")" ]] || scenario_fail "restored one.log is not the lines 1..$n_one"
    [[ $two == "$(seq 1 "$n_two")" ]] || scenario_fail "restored two.log is not the lines 1..$n_two"
    ((n_one >= 50 && (n_one == n_two || n_one == n_two + 1))) \
        || scenario_fail "restored logs are not of one instant: one.log $n_one lines, two.log $n_two"
    local written
    written=$(in_pod d-writer 'wc -l < /one/one.log')
    ((written > n_one)) || scenario_fail "the writer stopped: $written lines, snapshot $n_one"
    say "d: group of 2 cut while writing: restored logs hold $n_one and $n_two lines (writer now at $written)"
}

# ------------------------------------------------------------------ e ---
scenario_e() {
    local claim vols=() pvs=()
    for claim in a-src a-restored b-src b-restored; do
        vols+=("$(volume_handle "$claim")")
        pvs+=("$(k get pvc "$claim" -o jsonpath='{.spec.volumeName}')")
    done
    local image
    image=$data/volumes/${vols[0]}.img
    [[ -n $(loops_for "$image") ]] || scenario_fail "a-src is not attached while its pod runs"
    pod_gone a-writer a-reader b-writer b-reader
    local i
    for i in "${!vols[@]}"; do
        assert_released "${vols[$i]}" "${pvs[$i]}"
    done
    local left
    left=$(kubelet_loops)
    [[ -z $left ]] || scenario_fail "loop devices left over block volumes: $left"
    say "e: 4 pods deleted: 4 volumes (2 fs, 2 block) unpublished, unstaged, detached"
}

# ------------------------------------------------------------------ f ---
scenario_f() {
    pvc f-vol 64Mi
    pod f-user 'echo before > /data/before && sync && touch /data/done' /data/done f-vol:/data
    pod_ready f-user
    local started
    started=$(k get pod f-user -o jsonpath='{.status.containerStatuses[0].state.running.startedAt}')
    restart_kubelet
    until_true 60 "kubelet healthz after the restart" curl -sf "http://127.0.0.1:$healthz_port/healthz"
    # The kubelet reconstructs its volumes and takes the pod back (exec goes through it).
    until_true 90 "exec into f-user through the restarted kubelet" in_pod f-user true
    until_true 60 "pod f-user Ready after the kubelet restart" \
        "$KUBECTL" wait --for condition=Ready pod/f-user --timeout=1s
    [[ $(k get pod f-user -o jsonpath='{.status.containerStatuses[0].state.running.startedAt}') == "$started" ]] \
        || scenario_fail "the container of f-user was restarted with the kubelet"
    [[ $(in_pod f-user 'echo after > /data/after && sync && cat /data/before') == before ]] \
        || scenario_fail "the volume of f-user is not the one it wrote before the restart"
    local vol pv
    vol=$(volume_handle f-vol)
    pv=$(k get pvc f-vol -o jsonpath='{.spec.volumeName}')
    pod_gone f-user
    assert_released "$vol" "$pv"
    say "f: kubelet restarted under a running pod: same container, volume still written; cleanup after it works"
}

# ------------------------------------------------------------------ g ---
scenario_g_setup() {
    pvc g-vol 64Mi Filesystem '' snapcsi-e2e-schedule=g
    pod g-user 'echo scheduled > /data/file && sync && touch /data/done' /data/done g-vol:/data
    k apply -f - >/dev/null <<EOF
apiVersion: snapcsi.dev/v1alpha1
kind: SnapshotSchedule
metadata: {name: g-every-minute}
spec:
  selector: {matchLabels: {snapcsi-e2e-schedule: g}}
  schedule: "* * * * *"
  volumeSnapshotClassName: snapcsi
  retention: {maxCount: 3}
EOF
}
scenario_g() {
    pod_ready g-user
    until_true 150 "a ready VolumeSnapshot of g-vol made by g-every-minute" sh -c \
        "'$KUBECTL' get volumesnapshot -l snapcsi.dev/schedule=g-every-minute -o jsonpath='{range .items[*]}{.spec.source.persistentVolumeClaimName} {.status.readyToUse}{\"\\n\"}{end}' | grep -qx 'g-vol true'"
    local name last
    name=$(k get volumesnapshot -l snapcsi.dev/schedule=g-every-minute -o jsonpath='{.items[0].metadata.name}')
    until_true 30 "the schedule's status.lastRun" \
        sh -c "[ -n \"\$('$KUBECTL' get snapshotschedule g-every-minute -o jsonpath='{.status.lastRun}')\" ]"
    last=$(k get snapshotschedule g-every-minute -o jsonpath='{.status.lastRun}')
    say "g: snapcsi-scheduler cut $name of the mounted g-vol (slot $last)"
}

# ------------------------------------------------------------------ h ---
scenario_h() {
    pvc h-vol 400Mi
    pod h-writer 'head -c 268435456 /dev/urandom > /data/big && sync && touch /data/done' /data/done h-vol:/data
    pod_ready h-writer 180
    local pod cid restarts before
    pod=$(k get pods -n snapcsi -l app.kubernetes.io/component=controller -o jsonpath='{.items[0].metadata.name}')
    cid=$(k get pod -n snapcsi "$pod" -o jsonpath='{.status.containerStatuses[?(@.name=="snapcsi")].containerID}')
    restarts=$(k get pod -n snapcsi "$pod" -o jsonpath='{.status.containerStatuses[?(@.name=="snapcsi")].restartCount}')
    before=$(ls "$data/snapshots")
    snapshot h-snap h-vol
    # Kill the driver the moment a new snapshot image appears: the clone is under way.
    local deadline=$((SECONDS + 60)) new='' killed_at=''
    while ((SECONDS < deadline)); do
        new=$(comm -13 <(echo "$before") <(ls "$data/snapshots") | head -n 1)
        if [[ -n $new ]]; then
            ctr tasks kill -s SIGKILL "${cid#containerd://}" >/dev/null
            killed_at=$(stat -c %s "$data/snapshots/$new" 2>/dev/null || echo gone)
            break
        fi
        sleep 0.02
    done
    [[ -n $new ]] || scenario_fail "no snapshot image appeared within 60s"
    snapshot_ready h-snap 180
    local now
    now=$(k get pod -n snapcsi "$pod" -o jsonpath='{.status.containerStatuses[?(@.name=="snapcsi")].restartCount}')
    ((now > restarts)) || scenario_fail "the driver container was not killed (restarts $restarts -> $now)"
    local handle vol after count
    handle=$(snapshot_handle h-snap)
    vol=$(volume_handle h-vol)
    after=$(comm -13 <(echo "$before") <(ls "$data/snapshots"))
    [[ $after == "$handle.img" ]] || scenario_fail "new snapshot images: $(echo "$after" | tr '\n' ' '), expected only $handle.img"
    # The driver's own view, through the controller's socket.
    local uid socket
    uid=$(k get pod -n snapcsi "$pod" -o jsonpath='{.metadata.uid}')
    socket=$kubelet_root/pods/$uid/volumes/kubernetes.io~empty-dir/socket-dir/csi.sock
    # A unix socket path is at most 107 bytes; the pod's is longer: reach it through a link.
    ln -sfn "$socket" "$run/controller.sock"
    local listed
    listed=$("$SNAPCSI_BIN" ctl --endpoint "unix://$run/controller.sock" --output json snapshot list \
        --volume "$vol" 2>&1) || scenario_fail "snapcsi ctl snapshot list: $listed"
    count=$(python3 -c 'import json,sys; print(len(json.load(sys.stdin)))' <<<"$listed")
    ((count == 1)) || scenario_fail "the driver lists $count snapshots of $vol, expected 1"
    say "h: driver SIGKILLed with the image of $new at $killed_at bytes; restarted; h-snap ready as $handle, the only snapshot of $vol"
}

# ------------------------------------------------------------------ i ---
scenario_i() {
    local dir=$root/deploy/kind got
    sed "s#image: busybox:1.36#image: $busybox_image#" "$dir/example.yaml" | k apply -f - >/dev/null
    pod_ready snapcsi-writer
    in_pod snapcsi-writer 'echo "hello from snapcsi" > /data/hello.txt && sync'
    k apply -f "$dir/example-snapshot.yaml" >/dev/null
    snapshot_ready snapcsi-example
    sed "s#image: busybox:1.36#image: $busybox_image#" "$dir/example-restore.yaml" | k apply -f - >/dev/null
    pod_ready snapcsi-reader
    got=$(in_pod snapcsi-reader 'cat /data/hello.txt')
    [[ $got == "hello from snapcsi" ]] || scenario_fail "restored example holds '$got'"
    say "i: deploy/kind/up.sh's example: the restored volume holds the file written before the snapshot"
}

run_scenarios() {
    local all=(a b c d e f g h i) name start
    local -A names=([a]=fs-restore [b]=block-restore [c]=online-expand [d]=group-snapshot
        [e]=cleanup [f]=kubelet-restart [g]=scheduled [h]=kill-create [i]=kind-example)
    local wanted=" ${SCENARIOS:-${all[*]}} "
    # The schedule ticks each minute: set it up first, check it last but one.
    [[ $wanted == *" g "* ]] && scenario_g_setup
    for current in "${all[@]}"; do
        [[ $wanted == *" $current "* ]] || continue
        [[ $current == e && $wanted != *" a "* ]] && continue
        start=$SECONDS
        "scenario_$current"
        echo "scenario ${names[$current]}: OK ($((SECONDS - start))s)"
    done
}
