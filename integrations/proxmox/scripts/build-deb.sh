#!/bin/sh
# Builds storpool-pve-plugin_<version>_all.deb into OUTDIR (default: .) with dpkg-deb.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
out=$(cd "${1:-.}" && pwd)
version=$(sed -n 's/^ *"version": *"\(.*\)",$/\1/p' "$here/package.json" | head -n1)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -D -m 0644 "$here/lib/PVE/Storage/Custom/StorPoolPlugin.pm" "$stage/usr/share/perl5/PVE/Storage/Custom/StorPoolPlugin.pm"
install -D -m 0644 "$here/../../docs/proxmox.md" "$stage/usr/share/doc/storpool-pve-plugin/README.md"
install -d "$stage/DEBIAN"
sed "s/@VERSION@/$version/" "$here/debian/control.in" > "$stage/DEBIAN/control"
install -m 0755 "$here/debian/postinst" "$stage/DEBIAN/postinst"
deb="$out/storpool-pve-plugin_${version}_all.deb"
dpkg-deb --root-owner-group -Zgzip --build "$stage" "$deb" >/dev/null
echo "$deb"
