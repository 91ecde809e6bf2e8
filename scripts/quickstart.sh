#!/usr/bin/env bash
# Quickstart: a throwaway local etcd with sample data, two age keys (snapshot and
# static resources), a backup to a local directory target, then list, verify, restore,
# and a restore drill into a throwaway etcd.
#   bash scripts/quickstart.sh          (work dir: ${QUICKSTART_DIR:-/tmp/etcd-offsite-quickstart})
# Idempotent: every run starts from a clean work dir and stops its etcd on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi

bash scripts/setup.sh
echo "== building etcd-offsite (release)" >&2
cargo build --release --quiet
BIN="$PWD/target/release/etcd-offsite"

WORK="${QUICKSTART_DIR:-/tmp/etcd-offsite-quickstart}"
rm -rf "$WORK" && mkdir -p "$WORK"/{backups,restore,kubernetes/static-pod-resources/kube-apiserver-pod-7/secrets}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CLIENT_PORT=$(free_port); PEER_PORT=$(free_port)

echo "== starting a throwaway etcd on 127.0.0.1:$CLIENT_PORT" >&2
etcd --name quickstart --data-dir "$WORK/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$CLIENT_PORT" --advertise-client-urls "http://127.0.0.1:$CLIENT_PORT" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "quickstart=http://127.0.0.1:$PEER_PORT" --max-txn-ops 10000 --max-request-bytes 33554432 \
  >"$WORK/etcd.log" 2>&1 &
ETCD_PID=$!
trap 'kill $ETCD_PID 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  ETCDCTL_API=3 etcdctl --endpoints "127.0.0.1:$CLIENT_PORT" endpoint health >/dev/null 2>&1 && break
  sleep 0.2
done
python3 tests/support/etcd_load.py --endpoint "http://127.0.0.1:$CLIENT_PORT" --count 5000 --value-size 2000

# Sample static pod resources, as an OpenShift control-plane host has them.
echo "sample encryption config" > "$WORK/kubernetes/static-pod-resources/kube-apiserver-pod-7/secrets/encryption-config"
chmod 600 "$WORK/kubernetes/static-pod-resources/kube-apiserver-pod-7/secrets/encryption-config"

echo "== making age keys: one for the snapshot, another for the static resources" >&2
age-keygen -o "$WORK/snapshot.key" 2>/dev/null
age-keygen -o "$WORK/static.key" 2>/dev/null
chmod 600 "$WORK"/*.key

cat > "$WORK/config.yaml" <<YAML
version: 1
cluster: quickstart
source:
  etcd:
    endpoints: ["http://127.0.0.1:$CLIENT_PORT"]
  static_resources:
    base_dir: $WORK/kubernetes
    paths: ["$WORK/kubernetes/static-pod-resources/kube-apiserver-pod-7"]
encryption:
  snapshot: { recipients: ["$(age-keygen -y "$WORK/snapshot.key")"] }
  static_resources: { recipients: ["$(age-keygen -y "$WORK/static.key")"] }
targets:
  snapshot: { url: "file://$WORK/backups" }
retention: { keep_last: 3, min_keep: 1 }
labels: { platform_version: "4.14.7" }
YAML
export ETCD_OFFSITE_CONFIG="$WORK/config.yaml"

set -x
"$BIN" config check --connect
"$BIN" backup
"$BIN" list
"$BIN" verify --latest --identity "$WORK/snapshot.key" --identity "$WORK/static.key"
"$BIN" restore --latest --to "$WORK/restore" --identity "$WORK/snapshot.key" --identity "$WORK/static.key"
ETCDCTL_API=3 etcdctl snapshot status -w table "$WORK"/restore/snapshot_*.db
tar tzf "$WORK"/restore/static_kuberesources_*.tar.gz
# Stock tools read every artifact:
age -d -i "$WORK/snapshot.key" "$WORK"/backups/quickstart/*/snapshot.db.zst.age | zstd -d | wc -c
# Proof it restores: a throwaway etcd started from the backup, key counts checked.
mkdir -p "$WORK/scratch"
"$BIN" drill --latest --scratch-dir "$WORK/scratch" --identity "$WORK/snapshot.key" --identity "$WORK/static.key"
"$BIN" status --max-age 1h --max-drill-age 1h
set +x
echo "quickstart finished: work dir $WORK" >&2
