#!/bin/bash
# Client node: storpool-mgmt (API replica over the same etcd, writes the shard map locally),
# storpool-block (SP_OURID=CLIENT_ID; kernel nbd devices in /dev/storpool).
# Env from the Vagrantfile: NODE_IP CLIENT_ID ETCD SP_AUTH_TOKEN [ETCD_TIMEOUT_S DOWN_AFTER_S]
set -euo pipefail
need() { for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || MISSING="${MISSING:-} $p"; done; }
need curl nbd-client e2fsprogs
[ -z "${MISSING:-}" ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $MISSING; }
if ! node --version 2>/dev/null | grep -qE '^v(2[0-9]|[3-9][0-9])\.'; then
  curl -fsSL https://deb.nodesource.com/setup_20.x | bash - && apt-get install -y -qq nodejs
fi
NODE=$(command -v node)
[ -d /opt/storpool/node_modules ] || (cd /opt/storpool && npm ci --omit=dev --no-audit --no-fund)
mkdir -p /var/lib/storpool
# Pre-transpiled bundles (vm-test/scripts/build-dist.mjs, .vagrant-dist/) when present: under TCG, tsx
# costs minutes of CPU per process start; otherwise the workspace's tsx bins.
DIST=/opt/storpool/.vagrant-dist
if [ -f $DIST/storpool-mgmt.mjs ] && [ -f $DIST/storpool-block.mjs ] && [ -f $DIST/storpool.mjs ]; then
  MGMT_BIN=$DIST/storpool-mgmt.mjs BLOCK_BIN=$DIST/storpool-block.mjs CLI_BIN=$DIST/storpool.mjs
else
  MGMT_BIN=/opt/storpool/packages/mgmt/bin/storpool-mgmt.js BLOCK_BIN=/opt/storpool/packages/block/bin/storpool-block.js CLI_BIN=/opt/storpool/packages/cli/bin/storpool.js
fi
echo "binaries: $MGMT_BIN $BLOCK_BIN $CLI_BIN"
echo nbd > /etc/modules-load.d/nbd.conf
modprobe nbd
cat > /etc/storpool.conf <<CONF
SP_API_HTTP_HOST=127.0.0.1
SP_API_HTTP_PORT=8181
SP_AUTH_TOKEN=$SP_AUTH_TOKEN
SP_OURID=$CLIENT_ID
CONF
chmod 600 /etc/storpool.conf
cat > /usr/local/bin/storpool <<SCRIPT
#!/bin/sh
exec $NODE $CLI_BIN "\$@"
SCRIPT
chmod 755 /usr/local/bin/storpool

cat > /etc/systemd/system/storpool-mgmt.service <<UNIT
[Unit]
Description=storpool management API (replica; publishes the shard map for this host)
After=network-online.target
[Service]
ExecStart=$NODE --initial-old-space-size=64 $MGMT_BIN --etcd $ETCD --etcd-timeout ${ETCD_TIMEOUT_S:-5} --listen 127.0.0.1:8181 --token $SP_AUTH_TOKEN --map-file /var/lib/storpool/shardmap.json --down-after ${DOWN_AFTER_S:-5} --log-level info
Restart=always
RestartSec=5
[Install]
WantedBy=multi-user.target
UNIT
cat > /usr/local/sbin/storpool-block-up <<SCRIPT
#!/bin/bash
set -euo pipefail
until curl -fsS -o /dev/null -H 'Authorization: Storpool v1:$SP_AUTH_TOKEN' http://127.0.0.1:8181/ctrl/1.0/DisksList; do sleep 3; done
curl -fsS -X POST -H 'Authorization: Storpool v1:$SP_AUTH_TOKEN' -H 'Content-Type: application/json' -d '{}' http://127.0.0.1:8181/ctrl/1.0/ClientRegister/$CLIENT_ID || true
until [ -s /var/lib/storpool/shardmap.json ]; do sleep 2; done
exec $NODE --initial-old-space-size=64 $BLOCK_BIN --map-file /var/lib/storpool/shardmap.json --attach-method nbd --log-level info
SCRIPT
chmod 755 /usr/local/sbin/storpool-block-up
cat > /etc/systemd/system/storpool-block.service <<UNIT
[Unit]
Description=storpool block service (client $CLIENT_ID)
After=storpool-mgmt.service
[Service]
Environment=STORPOOL_CONF=/etc/storpool.conf
ExecStart=/usr/local/sbin/storpool-block-up
Restart=always
RestartSec=5
[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable storpool-mgmt storpool-block
systemctl restart --no-block storpool-mgmt storpool-block
echo "client $CLIENT_ID ($NODE_IP): storpool-mgmt and storpool-block enabled"
