#!/bin/bash
# Builds a vagrant-libvirt box from Debian packages only (debootstrap from the host's own Debian
# mirror), for the root Vagrantfile where no public box can be downloaded:
#   <cache>/box/storpool-debian12.box   box.img (qcow2, one ext4 file system, no partition table),
#                                       metadata.json, Vagrantfile
#   <cache>/box/vmlinuz, initrd.img     booted directly by libvirt (no boot loader in the image)
# The box has systemd, openssh (user vagrant, Vagrant's insecure key, passwordless sudo),
# ifupdown + DHCP (what vagrant's Debian guest plugin drives), nbd-client, e2fsprogs, xfsprogs,
# etcd, rsync, and this host's `node` in /usr/local/bin (Debian 12's nodejs is 18).
# Usage: vm-test/scripts/build-box.sh [--force]   (root; <cache> = $STORPOOL_VM_CACHE or ~/.cache/storpool-vm)
set -euo pipefail
CACHE=${STORPOOL_VM_CACHE:-$HOME/.cache/storpool-vm}
OUT=$CACHE/box
BOX=$OUT/storpool-debian12.box
MIRROR=${STORPOOL_BOX_MIRROR:-$(grep -h -m1 -oE '^URIs: *http[^ ]*debian/?$' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}' | head -1)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
SUITE=${STORPOOL_BOX_SUITE:-bookworm}
if [ -f "$BOX" ] && [ "${1:-}" != "--force" ]; then echo "box exists: $BOX"; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "build-box.sh: run as root (debootstrap)" >&2; exit 1; }
command -v debootstrap >/dev/null || apt-get install -y debootstrap
mkdir -p "$OUT"
WORK=$(mktemp -d "$OUT/.build-XXXXXX")
cleanup() { for m in proc sys dev; do umount -l "$WORK/root/$m" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
ROOT=$WORK/root
PKGS=systemd-sysv,udev,dbus,openssh-server,sudo,ifupdown,isc-dhcp-client,iproute2,iputils-ping,kmod,procps,less
PKGS=$PKGS,linux-image-amd64,initramfs-tools,nbd-client,e2fsprogs,xfsprogs,etcd-server,etcd-client,rsync,ca-certificates,curl,netbase
echo "debootstrap $SUITE from $MIRROR"
mkdir -p "$OUT/debootstrap-cache"
debootstrap --variant=minbase --cache-dir="$OUT/debootstrap-cache" --include="$PKGS" "$SUITE" "$ROOT" "$MIRROR"
echo storpool-box > "$ROOT/etc/hostname"
printf '/dev/vda / ext4 defaults,errors=remount-ro 0 1\n' > "$ROOT/etc/fstab"
printf 'auto lo\niface lo inet loopback\n\nauto eth0\niface eth0 inet dhcp\n' > "$ROOT/etc/network/interfaces"
# etcd is configured and started by the Vagrantfile's provisioning, on the storage nodes only
chroot "$ROOT" systemctl disable etcd.service 2>/dev/null || rm -f "$ROOT/etc/systemd/system/multi-user.target.wants/etcd.service"
chroot "$ROOT" useradd -m -s /bin/bash vagrant
echo 'vagrant:vagrant' | chroot "$ROOT" chpasswd
echo 'root:vagrant' | chroot "$ROOT" chpasswd
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > "$ROOT/etc/sudoers.d/vagrant"
chmod 440 "$ROOT/etc/sudoers.d/vagrant"
install -d -m 700 -o 1000 -g 1000 "$ROOT/home/vagrant/.ssh"
KEY=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -1)
[ -n "$KEY" ] || { echo "vagrant's insecure public key not found (apt-get install vagrant)" >&2; exit 1; }
install -m 600 -o 1000 -g 1000 "$KEY" "$ROOT/home/vagrant/.ssh/authorized_keys"
echo 'UseDNS no' > "$ROOT/etc/ssh/sshd_config.d/vagrant.conf"
install -m 755 "$(command -v node)" "$ROOT/usr/local/bin/node"
# host keys are made at first boot: each VM gets its own
rm -f "$ROOT"/etc/ssh/ssh_host_*
mkdir -p "$ROOT/etc/systemd/system/ssh.service.d"
# (the list is reset: Debian's unit runs `sshd -t` first, which fails without host keys)
printf '[Service]\nExecStartPre=\nExecStartPre=/usr/bin/ssh-keygen -A\nExecStartPre=/usr/sbin/sshd -t\n' > "$ROOT/etc/systemd/system/ssh.service.d/hostkeys.conf"
: > "$ROOT/etc/machine-id"
chroot "$ROOT" apt-get clean
ls "$ROOT"/boot/initrd.img-* >/dev/null 2>&1 || chroot "$ROOT" update-initramfs -c -k all
cp "$(ls "$ROOT"/boot/vmlinuz-* | sort | tail -1)" "$WORK/vmlinuz"
cp "$(ls "$ROOT"/boot/initrd.img-* | sort | tail -1)" "$WORK/initrd.img"
SIZE_GB=${STORPOOL_BOX_SIZE_GB:-8}
mkfs.ext4 -q -F -L root -d "$ROOT" "$WORK/box.raw" "${SIZE_GB}G"
qemu-img convert -O qcow2 "$WORK/box.raw" "$WORK/box.img"
rm -f "$WORK/box.raw"
printf '{"provider":"libvirt","format":"qcow2","virtual_size":%s}\n' "$SIZE_GB" > "$WORK/metadata.json"
cat > "$WORK/Vagrantfile" <<'VF'
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "kvm"
  end
end
VF
# uncompressed: gzip of the qcow2 costs minutes and saves little
tar -C "$WORK" -cf "$WORK/box.tar" metadata.json Vagrantfile box.img
mv "$WORK/vmlinuz" "$WORK/initrd.img" "$OUT/"
mv "$WORK/box.tar" "$BOX"
echo "built $BOX ($(du -h "$BOX" | cut -f1)); kernel $OUT/vmlinuz, initrd $OUT/initrd.img"
