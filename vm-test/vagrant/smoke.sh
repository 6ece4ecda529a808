#!/bin/bash
# Smoke test on the client: create, attach here, mkfs, write, verify; SIGKILL the storage server
# of one node (ssh with the cluster key); write and verify again; detach. Prints "SMOKE OK".
# Env: KILL_NODE (a storage node's IP), STORAGE_IPS (all of them, space-separated), [SMOKE_FILE_MB]
set -euo pipefail
export STORPOOL_CONF=/etc/storpool.conf
MB=${SMOKE_FILE_MB:-16} # size of each of the six files
say() { echo "[smoke $(date +%T)] $*"; }
retry() { local n=$1; shift; for i in $(seq 1 "$n"); do "$@" && return 0; sleep 5; done; "$@"; }
say "waiting for the storage servers ($STORAGE_IPS) to be in the map and listening"
up() { for ip in $STORAGE_IPS; do grep -qE "\"host\": ?\"$ip\"" /var/lib/storpool/shardmap.json 2>/dev/null && timeout 3 bash -c "</dev/tcp/$ip/47001" 2>/dev/null || return 1; done; }
retry 360 up
# a re-run (`vagrant provision client --provision-with smoke`): remove what an earlier run left
if mountpoint -q /mnt/smoke; then umount /mnt/smoke || umount -l /mnt/smoke; fi
if storpool volume list 2>/dev/null | grep -qw smoke; then
  say "removing the volume of an earlier run"
  storpool detach volume smoke here 2>/dev/null || true
  retry 6 storpool volume smoke delete smoke
fi
# kernel messages from here on only (a re-run must not fail on the earlier run's errors)
SINCE=$(cut -d' ' -f1 /proc/uptime)
storpool disk list || true
storpool template smoke replication 3 placeAll default create 2>/dev/null || true
retry 60 storpool volume smoke size 2G template smoke create
say "attach"
retry 30 storpool attach volume smoke here
DEV=/dev/storpool/smoke
[ -b "$DEV" ] || { say "no $DEV"; exit 1; }
say "device $(readlink -f $DEV)"
mkfs.ext4 -q -F "$DEV"
mkdir -p /mnt/smoke
mount "$DEV" /mnt/smoke
for i in 1 2 3 4; do dd if=/dev/urandom of=/mnt/smoke/f$i bs=1M count=$MB status=none; done
(cd /mnt/smoke && sha256sum f* > /root/smoke.sums)
sync
umount /mnt/smoke
e2fsck -fn "$DEV"
mount "$DEV" /mnt/smoke
(cd /mnt/smoke && sha256sum -c /root/smoke.sums)
say "SIGKILL the storage server on $KILL_NODE"
# the file provisioner leaves the key readable by others: ssh refuses such a key
install -D -m 600 /home/vagrant/.ssh/cluster_key /root/.ssh/cluster_key
ssh -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -i /root/.ssh/cluster_key vagrant@"$KILL_NODE" sudo systemctl kill -s KILL storpool-server
for i in 5 6; do dd if=/dev/urandom of=/mnt/smoke/f$i bs=1M count=$MB status=none; done
(cd /mnt/smoke && sha256sum f5 f6 >> /root/smoke.sums)
sync
umount /mnt/smoke
e2fsck -fn "$DEV"
mount -o ro "$DEV" /mnt/smoke
(cd /mnt/smoke && sha256sum -c /root/smoke.sums)
umount /mnt/smoke
if dmesg | awk -v since="$SINCE" '{ t = $0; sub(/^\[ */, "", t); sub(/\].*/, "", t); if (t + 0 >= since) print }' | grep -iE 'I/O error|EXT4-fs error|nbd.*(timed out|Dead connection)'; then say "kernel reported errors"; exit 1; fi
storpool detach volume smoke here
say "SMOKE OK"
