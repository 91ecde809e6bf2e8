#!/usr/bin/env bash
# etcd_profile.sh 3.4|3.5 SIZE_MB CASE...: etcd put p99 and /metrics differences around each case
# (idle etcdctl pipeline off auto r70 r40), on a Kubernetes-shaped database of $RES (150)
# resource prefixes; builds nothing (uses target/release/etcd-offsite). Loopback only.
set -euo pipefail
V=$1; SIZE=$2; shift 2
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
W=$(mktemp -d "${TMPDIR:-/tmp}/etcd-profile.XXXXXX")
BIN=$W/etcd-offsite; cp $REPO/target/release/etcd-offsite $BIN
if [ "$V" = 3.5 ]; then D=/opt/etcd-v3.5.1; else D=/usr/bin; fi
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
CP=$(port); PP=$(port); EP=http://127.0.0.1:$CP
$D/etcd --name p --data-dir $W/data --listen-client-urls $EP --advertise-client-urls $EP --listen-peer-urls http://127.0.0.1:$PP --initial-advertise-peer-urls http://127.0.0.1:$PP --initial-cluster p=http://127.0.0.1:$PP --quota-backend-bytes 8589934592 --max-request-bytes 33554432 --max-txn-ops 10000 > $W/etcd.log 2>&1 &
EPID=$!
trap 'kill $EPID 2>/dev/null; rm -rf "$W"' EXIT
for i in $(seq 100); do ETCDCTL_API=3 $D/etcdctl --endpoints=$EP endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
python3 $REPO/tests/support/etcd_load.py --endpoint $EP --count $((SIZE*5)) --value-size 100000 --resources ${RES:-150} --prefix /kubernetes.io/ >&2
python3 $REPO/tests/support/etcd_load.py --endpoint $EP --count $((SIZE*500000/4096)) --value-size 4096 --start 1000000 --resources ${RES:-150} --prefix /kubernetes.io/ >&2
age-keygen -o $W/k 2>/dev/null; R=$(age-keygen -y $W/k)
cfg() { cat > $W/c-$1.yaml <<Y
version: 1
cluster: p
source:
  etcd:
    endpoints: ["$EP"]
$2
compression: { level: 3 }
priority: low
encryption:
  snapshot: { recipients: ["$R"] }
targets:
  snapshot: { url: "file://$W/t" }
Y
}
mkdir -p $W/t
cfg auto "    pace: auto"; cfg off "    pace: off"; cfg r70 "    pace: off
    read_rate_limit: 70MiB"; cfg r40 "    pace: off
    read_rate_limit: 40MiB"
for c in "$@"; do
  curl -s --noproxy '*' $EP/metrics > $W/m0
  python3 $REPO/scripts/etcd_latency.py --endpoint $EP --rate 200 --max-seconds 300 --out $W/probe.out --samples $W/probe-$c.samples & PP=$!
  sleep 0.5
  t0=$EPOCHREALTIME
  case $c in
    idle) sleep 8 ;;
    etcdctl) ETCDCTL_API=3 $D/etcdctl --endpoints=$EP snapshot save $W/s.db >/dev/null 2>&1; rm -f $W/s.db ;;
    pipeline) ETCDCTL_API=3 $D/etcdctl --endpoints=$EP snapshot save $W/s.db >/dev/null 2>&1; zstd -3 -T0 -q $W/s.db -o $W/s.zst; age -r $R -o $W/s.age $W/s.zst; rm -f $W/s.db $W/s.zst $W/s.age ;;
    *) $BIN --config $W/c-$c.yaml --log-format json backup --no-prune > $W/out-$c.log 2> $W/err-$c.log || { echo "backup $c failed"; tail -3 $W/err-$c.log; } ;;
  esac
  t1=$EPOCHREALTIME
  kill -TERM $PP; wait $PP || true
  curl -s --noproxy '*' $EP/metrics > $W/m1
  p99=$(awk -v a=$t0 -v b=$t1 '$1>=a && $1<=b {print $2}' $W/probe-$c.samples | sort -g | awk '{v[NR]=$1} END{i=int(NR*0.99); if(i<1)i=1; print v[i], "n="NR, "max="v[NR]}')
  echo "== $c wall $(awk -v a=$t0 -v b=$t1 'BEGIN{printf "%.2f", b-a}') s, put p99 $p99"
  python3 $REPO/scripts/etcd_metrics_diff.py $W/m0 $W/m1 | sed 's/^/   /'
  if [ -f $W/err-$c.log ]; then grep -o '"message":"etcd latency[^}]*' $W/err-$c.log | sed 's/^/   /' || true; fi
done

