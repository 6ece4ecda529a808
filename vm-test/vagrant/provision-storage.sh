#!/bin/bash
# Storage node: etcd member, storpool-mgmt (etcd backend), one storpool-server on a file disk.
# Env from the Vagrantfile: NODE_NAME NODE_IP DISK_ID ETCD_CLUSTER ETCD SP_AUTH_TOKEN [ETCD_HEARTBEAT_MS ETCD_ELECTION_MS ETCD_TIMEOUT_S DOWN_AFTER_S]
set -euo pipefail
need() { for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || MISSING="${MISSING:-} $p"; done; }
need curl etcd-server etcd-client e2fsprogs
[ -z "${MISSING:-}" ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $MISSING; }
if ! node --version 2>/dev/null | grep -qE '^v(2[0-9]|[3-9][0-9])\.'; then
  # Debian 12's nodejs is 18: NodeSource's Node.js 20 (the local box has node in /usr/local/bin)
  curl -fsSL https://deb.nodesource.com/setup_20.x | bash - && apt-get install -y -qq nodejs
fi
NODE=$(command -v node)
[ -d /opt/storpool/node_modules ] || (cd /opt/storpool && npm ci --omit=dev --no-audit --no-fund)
mkdir -p /var/lib/storpool /etc/storpool.conf.d
# Pre-transpiled bundles (vm-test/scripts/build-dist.mjs, .vagrant-dist/) when present: under TCG, tsx
# costs minutes of CPU per process start; otherwise the workspace's tsx bins.
DIST=/opt/storpool/.vagrant-dist
if [ -f $DIST/storpool-mgmt.mjs ] && [ -f $DIST/storpool-server.mjs ]; then
  MGMT_BIN=$DIST/storpool-mgmt.mjs SERVER_BIN=$DIST/storpool-server.mjs
else
  MGMT_BIN=/opt/storpool/packages/mgmt/bin/storpool-mgmt.js SERVER_BIN=/opt/storpool/packages/server/bin/storpool-server.js
fi
echo "binaries: $MGMT_BIN $SERVER_BIN"

cat > /etc/default/etcd <<CONF
ETCD_NAME=$NODE_NAME
ETCD_DATA_DIR=/var/lib/etcd/storpool
ETCD_LISTEN_PEER_URLS=http://$NODE_IP:2380
ETCD_LISTEN_CLIENT_URLS=http://$NODE_IP:2379,http://127.0.0.1:2379
ETCD_INITIAL_ADVERTISE_PEER_URLS=http://$NODE_IP:2380
ETCD_ADVERTISE_CLIENT_URLS=http://$NODE_IP:2379
ETCD_INITIAL_CLUSTER=$ETCD_CLUSTER
ETCD_INITIAL_CLUSTER_STATE=new
ETCD_INITIAL_CLUSTER_TOKEN=storpool-vagrant
# TCG VMs on a busy host miss etcd's 100 ms heartbeats (hundreds of elections seen): the Vagrantfile raises these there
ETCD_HEARTBEAT_INTERVAL=${ETCD_HEARTBEAT_MS:-100}
ETCD_ELECTION_TIMEOUT=${ETCD_ELECTION_MS:-1000}
CONF
cat > /etc/storpool.conf <<CONF
SP_API_HTTP_HOST=127.0.0.1
SP_API_HTTP_PORT=8181
SP_AUTH_TOKEN=$SP_AUTH_TOKEN
CONF
chmod 600 /etc/storpool.conf

cat > /etc/systemd/system/storpool-mgmt.service <<UNIT
[Unit]
Description=storpool management API (etcd metadata store)
After=network-online.target etcd.service
[Service]
ExecStart=$NODE --initial-old-space-size=64 $MGMT_BIN --etcd $ETCD --etcd-timeout ${ETCD_TIMEOUT_S:-5} --listen 0.0.0.0:8181 --token $SP_AUTH_TOKEN --map-file /var/lib/storpool/shardmap.json --down-after ${DOWN_AFTER_S:-5} --log-level info
# etcd needs a quorum (2 of the 3 nodes) before this can start
Restart=always
RestartSec=5
[Install]
WantedBy=multi-user.target
UNIT

# Registers the disk with the API, formats it with the cluster id from the published map, serves it.
cat > /usr/local/sbin/storpool-server-up <<SCRIPT
#!/bin/bash
set -euo pipefail
api() { curl -fsS -H 'Authorization: Storpool v1:$SP_AUTH_TOKEN' -H 'Content-Type: application/json' "http://127.0.0.1:8181/ctrl/1.0/\$1" "\${@:2}"; }
until api DisksList -o /dev/null; do sleep 3; done
api DiskRegister/$DISK_ID -d '{"serverId":$DISK_ID,"address":{"host":"$NODE_IP","port":47001},"placementGroups":["default"]}' || true
until grep -qE '"host": ?"$NODE_IP"' /var/lib/storpool/shardmap.json 2>/dev/null; do sleep 2; done
CID=\$($NODE -e 'console.log(JSON.parse(require("fs").readFileSync("/var/lib/storpool/shardmap.json","utf8")).clusterId)')
[ -f /var/lib/storpool/disk.img ] || $NODE $SERVER_BIN disk init /var/lib/storpool/disk.img --size 4G --cluster-id "\$CID" --disk-id $DISK_ID
exec $NODE --initial-old-space-size=64 $SERVER_BIN serve --disk /var/lib/storpool/disk.img --map /var/lib/storpool/shardmap.json --listen $NODE_IP:47001 --log-level info
SCRIPT
chmod 755 /usr/local/sbin/storpool-server-up
cat > /etc/systemd/system/storpool-server.service <<UNIT
[Unit]
Description=storpool storage server (disk $DISK_ID)
After=storpool-mgmt.service
[Service]
ExecStart=/usr/local/sbin/storpool-server-up
Restart=always
# long enough for the smoke test to see I/O continue while this server is down
RestartSec=30
[Install]
WantedBy=multi-user.target
UNIT

systemctl daemon-reload
systemctl enable etcd storpool-mgmt storpool-server
# --no-block: etcd reports ready only once a quorum of members is up (the other nodes may still be booting)
systemctl restart --no-block etcd storpool-mgmt storpool-server
echo "storage node $NODE_NAME ($NODE_IP): etcd, storpool-mgmt and storpool-server (disk $DISK_ID) enabled"
