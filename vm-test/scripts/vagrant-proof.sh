#!/bin/bash
# Proves `vagrant up` of the root Vagrantfile on this machine: no public box, no usable KVM, other
# users on the host. What it does (as root):
#   1. installs vagrant, vagrant-libvirt, libvirt (Debian packages) if missing;
#   2. builds the local box from Debian packages (vm-test/scripts/build-box.sh) and adds it;
#   3. in a private network namespace AND mount namespace (private /run/libvirt, /var/lib/libvirt,
#      /etc/libvirt, so neither the host's network nor another libvirtd is touched), starts
#      virtlogd + libvirtd by hand and runs `vagrant up` with QEMU TCG, the project over 9p;
#   4. the client's last provisioner is the smoke test: it must print "SMOKE OK";
#   5. `vagrant destroy -f`, stops libvirtd/virtlogd by PID, removes the namespace.
# Not in the default CI run: it takes far more than 10 minutes under TCG (see docs/vagrant.md).
# Log: <cache>/vagrant-proof/proof.log.   Usage: vm-test/scripts/vagrant-proof.sh [--keep]
set -euo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CACHE=${STORPOOL_VM_CACHE:-$HOME/.cache/storpool-vm}
WORK=$CACHE/vagrant-proof
NS=storpool-vagrant
KEEP=${1:-}
[ "$(id -u)" = 0 ] || { echo "vagrant-proof.sh: run as root" >&2; exit 1; }
mkdir -p "$WORK"
exec > >(tee "$WORK/proof.log") 2>&1
say() { echo "[vagrant-proof $(date +%T)] $*"; }
T0=$(date +%s)

need=""
for p in vagrant vagrant-libvirt libvirt-daemon-system libvirt-daemon-driver-qemu libvirt-clients dnsmasq-base debootstrap qemu-system-x86 qemu-utils iptables rsync; do
  dpkg -s "$p" >/dev/null 2>&1 || need="$need $p"
done
if [ -n "$need" ]; then
  say "apt-get install$need"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need
fi

"$REPO/vm-test/scripts/build-box.sh"
# Pre-transpiled daemons and CLI (.vagrant-dist/): no tsx at start-up in the TCG VMs; each must load here first
say "build-dist (esbuild bundles for the VMs)"
node "$REPO/vm-test/scripts/build-dist.mjs" --check
BOXDIR=$CACHE/box
vagrant box add --force --name storpool/debian12-local "$BOXDIR/storpool-debian12.box"

# Private state for libvirt: its sockets, its images/pools, its config (qemu as root, no labels).
mkdir -p "$WORK/run" "$WORK/lib" "$WORK/etc"
rm -rf "$WORK/etc/libvirt" && cp -a /etc/libvirt "$WORK/etc/libvirt"
printf 'user = "root"\ngroup = "root"\nsecurity_driver = "none"\n' >> "$WORK/etc/libvirt/qemu.conf"

ip netns add "$NS" 2>/dev/null || true
cleanup() {
  if [ "$KEEP" != "--keep" ]; then
    ip netns delete "$NS" 2>/dev/null || true
    # `ip netns add` bind-mounts /run/netns onto itself; undo that when no namespace is left
    if [ -z "$(ip netns list)" ] && mountpoint -q /run/netns; then umount /run/netns 2>/dev/null || true; fi
  fi
}
trap cleanup EXIT

cat > "$WORK/inner.sh" <<INNER
#!/bin/bash
# Runs inside the namespaces: private mounts, libvirtd by hand, vagrant up, smoke, destroy.
set -uo pipefail
say() { echo "[vagrant-proof \$(date +%T)] \$*"; }
mount --make-rprivate /
mount --bind "$WORK/run" /run/libvirt 2>/dev/null || { mkdir -p /run/libvirt && mount --bind "$WORK/run" /run/libvirt; }
mount --bind "$WORK/lib" /var/lib/libvirt
mount --bind "$WORK/etc/libvirt" /etc/libvirt
mkdir -p /var/lib/libvirt/images /var/lib/libvirt/qemu /var/lib/libvirt/dnsmasq
ip link set lo up
/usr/sbin/virtlogd -d -p "$WORK/virtlogd.pid"
/usr/sbin/libvirtd -d -p "$WORK/libvirtd.pid"
for i in \$(seq 1 30); do virsh -c qemu:///system version >/dev/null 2>&1 && break; sleep 1; done
virsh -c qemu:///system version || { say "libvirtd did not come up"; exit 1; }
virsh -c qemu:///system pool-info default >/dev/null 2>&1 || {
  virsh -c qemu:///system pool-define-as default dir --target /var/lib/libvirt/images && virsh -c qemu:///system pool-start default && virsh -c qemu:///system pool-autostart default; }
cd "$REPO"
export VAGRANT_DOTFILE_PATH="$WORK/dotvagrant" VAGRANT_DEFAULT_PROVIDER=libvirt
export STORPOOL_BOX=storpool/debian12-local STORPOOL_BOX_KERNEL="$BOXDIR/vmlinuz" STORPOOL_BOX_INITRD="$BOXDIR/initrd.img"
export STORPOOL_VAGRANT_DRIVER=qemu STORPOOL_VAGRANT_SYNC=9p
T1=\$(date +%s)
say "vagrant up (TCG, 4 VMs)"
# every line time-stamped (boot/provision/smoke times for docs/vagrant.md)
timeout \${STORPOOL_PROOF_TIMEOUT:-5400} vagrant up --provider libvirt --no-parallel 2>&1 | while IFS= read -r line; do printf '%(%T)T %s\n' -1 "\$line"; done
rc=\${PIPESTATUS[0]}
say "vagrant up exited \$rc after \$(( \$(date +%s) - T1 )) s"
vagrant status || true
if ! grep -q 'SMOKE OK' "$WORK/proof.log"; then
  # what the services said (the reason for a failure is usually here)
  for m in sp1 sp2 sp3 client; do
    say "journal of \$m"
    timeout 120 vagrant ssh \$m -c 'sudo journalctl --no-pager -o short-precise -u etcd -u storpool-mgmt -u storpool-server -u storpool-block | tail -n 60' 2>&1 || true
  done
fi
if [ "$KEEP" != "--keep" ]; then
  timeout 600 vagrant destroy -f || true
  kill "\$(cat "$WORK/libvirtd.pid")" 2>/dev/null || true
  kill "\$(cat "$WORK/virtlogd.pid")" 2>/dev/null || true
fi
exit \$rc
INNER
chmod 755 "$WORK/inner.sh"
say "entering network namespace $NS + a private mount namespace"
set +e
ip netns exec "$NS" unshare --mount --propagation private "$WORK/inner.sh"
rc=$?
set -e
if [ $rc -eq 0 ] && grep -q 'SMOKE OK' "$WORK/proof.log"; then
  say "PROOF OK: vagrant up + smoke test in $(( $(date +%s) - T0 )) s"
else
  say "PROOF FAILED (rc $rc) after $(( $(date +%s) - T0 )) s; log: $WORK/proof.log"
  exit 1
fi
