#!/usr/bin/env bash
# Benchmark: etcd-offsite against the shell pipeline users run today.
#
#   bash scripts/bench.sh [--etcd 3.4|3.5] [--size-mb N] [--runs N] [--resources N] [--plot FILE] [--keep]
#
#   --etcd V      etcd release: 3.4 (Debian's, on PATH; default) or 3.5 (/opt/etcd-v3.5.1, setup.sh)
#   --size-mb N   load about N MB (10^6 bytes) of Kubernetes-like data into etcd (default 200)
#   --runs N      timed runs per case; the table shows the median (default 3)
#   --resources N spread the keys over N resource prefixes, as real clusters have (default 150)
#   --plot FILE   the p99-over-time PNG (default docs/bench/p99-over-time-etcd-V.png)
#   --keep        keep the work dir (snapshots, artifacts, logs, configs)
#   env BENCH_UPLOADER=boto3   upload with boto3 instead of awscli in case c
#
# It builds the release binary, starts a throwaway etcd on free loopback ports, loads the
# data, makes two age keys and then runs, one case after another, N times each:
#   a. shell pipeline → directory   etcdctl snapshot save, zstd, age, rm the temporaries
#   b. etcd-offsite backup → file:// target
#   c. shell pipeline → S3 (moto)   as a., then the .age file is uploaded
#   d. etcd-offsite backup → s3:// on moto
# then reads back case b's last backup from its file:// target, N times each:
#   r. stock decode: age -d | zstd -d -T0 > file, then sha256sum of the file
#   s. etcd-offsite restore (snapshot + keys archive, every digest checked)
#   v. etcd-offsite verify with identities (deep verify: decrypt, decompress, digests, trailer, tar)
#   x. etcd-offsite drill (restore into a scratch etcd, key counts, encrypted values)
#   y. stock drill: r, then etcdctl snapshot restore, start etcd, count the keys
# and case d's last backup from S3 on moto:
#   t. stock: aws s3 cp to a file, then age -d | zstd -d -T0 > file, sha256sum
#   u. etcd-offsite restore from the s3:// target
# and checks once per case that the stored artifact decrypts (age -d) and decompresses
# (zstd -d) to a snapshot of the same size and `etcdctl snapshot status` as a reference
# `etcdctl snapshot save`. It prints one table, the machine and the exact commands.
# Idempotent: every run uses a fresh work dir under ${TMPDIR:-/tmp}; etcd and moto are
# stopped on exit. Needs etcd, etcdctl, age, age-keygen, zstd, curl, GNU time, python3
# with moto[server] and boto3; installs awscli with pip when `aws` is missing.
# The plot needs python3's matplotlib, installed with pip when missing (benchmark only).
# CPU is shared with etcd on this host (as on a control-plane node): keep the machine quiet.
set -euo pipefail
export LC_ALL=C
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then . "$HOME/.cargo/env"; fi

SIZE_MB=200
RUNS=3
KEEP=0
ETCD_V=3.4
RESOURCES=150
PLOT=""
usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --etcd) ETCD_V=${2:?--etcd needs 3.4 or 3.5}; shift 2 ;;
    --etcd=*) ETCD_V=${1#*=}; shift ;;
    --resources) RESOURCES=${2:?--resources needs a number}; shift 2 ;;
    --resources=*) RESOURCES=${1#*=}; shift ;;
    --plot) PLOT=${2:?--plot needs a file}; shift 2 ;;
    --plot=*) PLOT=${1#*=}; shift ;;
    --size-mb) SIZE_MB=${2:?--size-mb needs a number}; shift 2 ;;
    --size-mb=*) SIZE_MB=${1#*=}; shift ;;
    --runs) RUNS=${2:?--runs needs a number}; shift 2 ;;
    --runs=*) RUNS=${1#*=}; shift ;;
    --keep) KEEP=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "bench.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
[[ "$SIZE_MB" =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: --size-mb must be a positive integer" >&2; exit 2; }
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: --runs must be a positive integer" >&2; exit 2; }
[[ "$RESOURCES" =~ ^[1-9][0-9]*$ ]] || { echo "bench.sh: --resources must be a positive integer" >&2; exit 2; }
case "$ETCD_V" in
  3.4) ETCD_DIR=$(dirname "$(command -v etcd || echo /usr/bin/etcd)") ;;
  3.5) ETCD_DIR=/opt/etcd-v3.5.1
       [ -x "$ETCD_DIR/etcdutl" ] || { echo "bench.sh: etcd 3.5 is missing from $ETCD_DIR: run bash scripts/setup.sh" >&2; exit 1; }
       # etcd, etcdctl, etcdutl of 3.5 first on PATH: the pipeline, the stock drill and etcd-offsite's drill use them.
       export PATH="$ETCD_DIR:$PATH" ;;
  *) echo "bench.sh: --etcd must be 3.4 or 3.5" >&2; exit 2 ;;
esac
etcd --version | grep -q "^etcd Version: $ETCD_V\." || { echo "bench.sh: $(command -v etcd) is not etcd $ETCD_V" >&2; exit 1; }
ETCD_FULL=$(etcd --version | sed -n 's/^etcd Version: //p')
[ -n "$PLOT" ] || PLOT="$REPO/docs/bench/p99-over-time-etcd-$ETCD_V.png"

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
log() { echo "bench: $*" >&2; }
die() { echo "bench: ERROR: $*" >&2; exit 1; }

for tool in etcd etcdctl age age-keygen zstd curl python3 cargo; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (bash scripts/setup.sh installs the test tools)"
done
[ -x /usr/bin/time ] || die "GNU time (/usr/bin/time) is missing: apt-get install time"
python3 -c 'import moto, boto3' 2>/dev/null || die "python3 needs moto[server] and boto3: pip install 'moto[server]' boto3"
if ! python3 -c 'import matplotlib' 2>/dev/null; then
  log "matplotlib missing (for the p99 plot): python3 -m pip install --quiet matplotlib"
  python3 -m pip install --quiet --disable-pip-version-check matplotlib >&2 || die "could not install matplotlib for the plot"
fi
# The stock restore tool: etcdutl where the release has it (3.5+), else etcdctl (3.4).
if command -v etcdutl >/dev/null 2>&1 && [ "$ETCD_V" != 3.4 ]; then RESTORE_TOOL=etcdutl; else RESTORE_TOOL=etcdctl; fi

# Loopback only: never send benchmark traffic through a proxy.
export NO_PROXY=127.0.0.1,localhost no_proxy=127.0.0.1,localhost
unset HTTP_PROXY HTTPS_PROXY http_proxy https_proxy ALL_PROXY all_proxy
export ETCDCTL_API=3

# ------------------------------------------------------------------ build
log "building etcd-offsite (cargo build --release --quiet)"
cargo build --release --quiet
W=$(mktemp -d "${TMPDIR:-/tmp}/etcd-offsite-bench.XXXXXX")
# A private copy: colleagues rebuilding target/ during the benchmark cannot swap the binary.
BIN="$W/etcd-offsite"
cp "$REPO/target/release/etcd-offsite" "$BIN"

# ------------------------------------------------------------------ cleanup
ETCD_PID=""
MOTO_PID=""
stop_pid() {  # stop_pid PID: TERM, wait up to 5 s, then KILL (only processes this script started)
  local pid=$1
  [ -n "$pid" ] || return 0
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  local rc=$?
  stop_pid "${PROBE_PID:-}"
  stop_pid "$MOTO_PID"
  stop_pid "$ETCD_PID"
  stop_pid "${DRILL_PID:-}"
  if [ "$KEEP" = 1 ]; then
    log "work dir kept: $W"
  else
    rm -rf "$W"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ------------------------------------------------------------------ uploader for the shell pipeline
# awscli if present (pip-installed when missing); boto3 when that fails or BENCH_UPLOADER=boto3.
find_aws() {  # prints a working aws executable, the real one rather than a pyenv shim (saves its startup)
  local c dir
  hash -r
  for c in "$(pyenv which aws 2>/dev/null || true)" "$(command -v aws || true)"; do
    [ -n "$c" ] && "$c" --version >/dev/null 2>&1 && { echo "$c"; return 0; }
  done
  # a fresh pip install may not be on PATH yet (pyenv shims need a rehash; --user goes to ~/.local/bin)
  for dir in "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')" \
             "$(python3 -c 'import os, sysconfig; print(sysconfig.get_path("scripts", os.name + "_user"))')"; do
    [ -x "$dir/aws" ] && "$dir/aws" --version >/dev/null 2>&1 && { echo "$dir/aws"; return 0; }
  done
  return 1
}
AWS_BIN=""
if [ "${BENCH_UPLOADER:-awscli}" = boto3 ]; then
  log "BENCH_UPLOADER=boto3: the S3 pipeline uploads with boto3"
elif AWS_BIN=$(find_aws); then
  :
else
  AWS_BIN=""
  log "awscli missing: python3 -m pip install --quiet awscli"
  if python3 -m pip install --quiet awscli >"$W/pip.log" 2>&1 && AWS_BIN=$(find_aws); then
    log "installed $("$AWS_BIN" --version 2>&1)"
  else
    AWS_BIN=""
    log "could not install awscli (see $W/pip.log); the S3 pipeline uploads with boto3 instead"
  fi
fi
if [ -n "$AWS_BIN" ]; then
  UPLOADER="awscli $("$AWS_BIN" --version 2>&1 | awk '{print $1}' | cut -d/ -f2) (aws s3 cp: 8 MiB parts, 10 threads)"
else
  UPLOADER="boto3 $(python3 -c 'import boto3; print(boto3.__version__)') upload_file (8 MiB parts, 10 threads)"
fi

# ------------------------------------------------------------------ helpers
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { echo "$EPOCHREALTIME"; }
sub() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.3f", a-b}'; }
fsize() { stat -c %s "$1"; }
commas() { echo "$1" | sed ':a;s/\B[0-9]\{3\}\>/,&/;ta'; }
mb() { awk -v b="$1" 'BEGIN{printf "%.1f", b/1e6}'; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{if (NR%2) print a[(NR+1)/2]; else print (a[NR/2]+a[NR/2+1])/2}'; }
# timed FILE CMD...: GNU time writes "wall-s maxrss-KiB fs-output-blocks user-s sys-s" to FILE.
# %O is getrusage's ru_oublock: the kernel's per-process write_bytes/512, counted when page
# cache pages are dirtied, so a temporary file that is deleted before writeback still counts.
timed() { local out=$1; shift; /usr/bin/time -f '%e %M %O %U %S' -o "$out" "$@"; }
tfield() { tail -n1 "$1" | awk -v f="$2" '{print $f}'; }   # 1 wall 2 rss 3 blocks 4 user 5 sys
proc_cpu() { awk '{printf "%.2f", ($14+$15)/100}' "/proc/$1/stat"; }   # user+sys s of a process (all threads)
# cpu_snap: "etcd-s moto-s machine-busy-s"; cpu_delta SNAP0 SNAP1 CLIENT_S sets D_ETCD D_MOTO D_OTHER,
# where D_OTHER is what every other process on the machine used meanwhile (noise from other work).
cpu_snap() {
  local m=0
  [ -n "$MOTO_PID" ] && m=$(proc_cpu "$MOTO_PID")
  echo "$(proc_cpu "$ETCD_PID") $m $(awk '/^cpu /{printf "%.2f", ($2+$3+$4+$7+$8+$9)/100}' /proc/stat)"
}
cpu_delta() {
  local e0 m0 b0 e1 m1 b1
  read -r e0 m0 b0 <<<"$1"; read -r e1 m1 b1 <<<"$2"
  D_ETCD=$(sub "$e1" "$e0"); D_MOTO=$(sub "$m1" "$m0")
  D_OTHER=$(awk -v b="$(sub "$b1" "$b0")" -v c="$3" -v e="$D_ETCD" -v m="$D_MOTO" 'BEGIN{printf "%.2f", b-c-e-m}')
}
etcdctl_() { etcdctl --endpoints="$EP" "$@"; }
# probe_start / probe_stop CASE: 200 small puts per second against etcd during a run;
# probe_stop records "p50 p99 max" ms of those puts for the case.
PROBE_PID=""
probe_start() {
  python3 "$REPO/scripts/etcd_latency.py" --endpoint "$EP" --rate 200 --max-seconds 900 --out "$W/probe.out" --samples "$W/probe.samples" &
  PROBE_PID=$!
  sleep 0.5   # its connection is up and a few puts are in before the case starts
}
# window_p99 CASE FROM TO: p99 ms of the puts sent between two unix times (the snapshot
# stream: the pipeline's etcdctl step, etcd-offsite's whole run), for a fair comparison.
window_p99() {
  local p
  p=$(awk -v a="$2" -v b="$3" '$1 >= a && $1 <= b {print $2}' "$W/probe.samples" | sort -g \
    | awk '{v[NR]=$1} END{if (NR==0) print 0; else {i=int(NR*0.99); if (i<1) i=1; print v[i]}}')
  R_SP99[$1]+="$p "
  PROBE_LAST+=", p99 during the snapshot stream $p ms"
  # The last run of each case, for the plot: its puts and its start.
  mkdir -p "$W/plot"
  cp "$W/probe.samples" "$W/plot/$1.samples"
  echo "$2 $3" > "$W/plot/$1.window"
}
probe_stop() {
  kill -TERM "$PROBE_PID" 2>/dev/null || true
  wait "$PROBE_PID" 2>/dev/null || true
  PROBE_PID=""
  local n p50 p99 max
  read -r n p50 p99 max < "$W/probe.out"
  R_P50[$1]+="$p50 "; R_P99[$1]+="$p99 "; R_PMAX[$1]+="$max "
  PROBE_LAST="etcd puts: $n, p50 $p50 ms, p99 $p99 ms, max $max ms"
}
s3py() {  # s3py get|size|sum-prefix BUCKET KEY [OUT]: boto3 against moto (independent of awscli)
  python3 - "$MOTO_URL" "$@" <<'PY'
import sys, boto3
url, op, bucket, key = sys.argv[1:5]
s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                  aws_access_key_id="test", aws_secret_access_key="test")
if op == "get":
    s3.download_file(bucket, key, sys.argv[5])
elif op == "size":
    print(s3.head_object(Bucket=bucket, Key=key)["ContentLength"])
elif op == "sum-prefix":
    total = 0
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
        total += sum(o["Size"] for o in page.get("Contents", []))
    print(total)
PY
}
# The pipeline's upload step and the stock restore's download step as programs, since GNU
# time cannot run a shell function: s3_program NAME AWS-CP-ARGS BOTO3-METHOD.
s3_program() {
  if [ -n "$AWS_BIN" ]; then
    printf '#!/usr/bin/env bash\nexec env AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 %q --endpoint-url "$1" s3 cp --only-show-errors %s\n' \
      "$AWS_BIN" "$2" > "$W/$1"
  else
    printf '#!/usr/bin/env bash\nexec python3 -c %q "$@"\n' \
      "import sys, boto3; boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1', aws_access_key_id='test', aws_secret_access_key='test').$3(sys.argv[2], sys.argv[3], sys.argv[4])" \
      > "$W/$1"
  fi
  chmod +x "$W/$1"
}
# shellcheck disable=SC2016  # the arguments are the programs' own, expanded when they run
s3_program upload '"$2" "s3://$3/$4"' upload_file       # $W/upload ENDPOINT FILE BUCKET KEY
# shellcheck disable=SC2016
s3_program download '"s3://$2/$3" "$4"' download_file   # $W/download ENDPOINT BUCKET KEY FILE

# ------------------------------------------------------------------ etcd
CLIENT_PORT=$(free_port); PEER_PORT=$(free_port)
mkdir -p "$W/srv"   # etcd's data and the servers' logs (excluded from the du fallback)
EP="http://127.0.0.1:$CLIENT_PORT"
log "starting a throwaway etcd on $EP (work dir $W)"
etcd --name bench --data-dir "$W/srv/etcd-data" \
  --listen-client-urls "$EP" --advertise-client-urls "$EP" \
  --listen-peer-urls "http://127.0.0.1:$PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$PEER_PORT" \
  --initial-cluster "bench=http://127.0.0.1:$PEER_PORT" \
  --quota-backend-bytes 8589934592 --max-request-bytes 33554432 --max-txn-ops 10000 \
  >"$W/srv/etcd.log" 2>&1 &
ETCD_PID=$!
for _ in $(seq 100); do
  etcdctl_ endpoint health >/dev/null 2>&1 && break
  kill -0 "$ETCD_PID" 2>/dev/null || die "etcd exited: $(tail -n 5 "$W/srv/etcd.log")"
  sleep 0.2
done
etcdctl_ endpoint health >/dev/null 2>&1 || die "etcd did not become healthy; see $W/srv/etcd.log"

# Kubernetes-like mix: half the bytes in 100 kB objects (big ConfigMaps/Secrets), half in
# 4 KiB objects (pods, endpoints, events), spread over $RESOURCES resource prefixes under
# /kubernetes.io/ (core types, API groups, CRDs). Values are k8s JSON text that zstd -3 shrinks ~3x.
BIG_COUNT=$(( SIZE_MB * 5 ))                 # × 100000 B = SIZE_MB/2 MB
SMALL_COUNT=$(( SIZE_MB * 500000 / 4096 ))   # × 4096 B  ≈ SIZE_MB/2 MB
log "loading $BIG_COUNT × 100 kB + $SMALL_COUNT × 4 KiB values"
python3 tests/support/etcd_load.py --endpoint "$EP" --count "$BIG_COUNT" --value-size 100000 \
  --prefix /kubernetes.io/ --resources "$RESOURCES" >&2
python3 tests/support/etcd_load.py --endpoint "$EP" --count "$SMALL_COUNT" --value-size 4096 --start 1000000 \
  --prefix /kubernetes.io/ --resources "$RESOURCES" >&2

# Reference snapshot for the size and the correctness checks (the data does not change
# after loading, so every snapshot has the same revision, keys and bbolt hash).
etcdctl_ snapshot save "$W/ref.db" >"$W/ref.log" 2>&1 || die "reference snapshot failed: $(tail -n 3 "$W/ref.log")"
DB_BYTES=$(fsize "$W/ref.db")
REF_STATUS=$("$RESTORE_TOOL" snapshot status -w json "$W/ref.db")
ETCD_DBSIZE=$(etcdctl_ endpoint status -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)[0]["Status"]["dbSize"])')
snap_fields() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print("revision=%d keys=%d hash=%08x" % (d["revision"], d["totalKey"], d["hash"]))' "$1"; }
REF_FIELDS=$(snap_fields "$REF_STATUS")
log "database: $(commas "$DB_BYTES") bytes snapshot ($REF_FIELDS)"

# ------------------------------------------------------------------ keys, static resources
age-keygen -o "$W/snapshot.key" 2>/dev/null
age-keygen -o "$W/static.key" 2>/dev/null
chmod 600 "$W"/*.key
SNAP_R=$(age-keygen -y "$W/snapshot.key")
STATIC_R=$(age-keygen -y "$W/static.key")
KUBE="$W/kubernetes"
POD="$KUBE/static-pod-resources/kube-apiserver-pod-7"
mkdir -p "$POD/secrets/encryption-config" "$POD/secrets/serving-cert" "$POD/configmaps/config" "$POD/configmaps/audit"
printf 'kind: EncryptionConfiguration\napiVersion: apiserver.config.k8s.io/v1\nresources:\n- resources: [secrets]\n  providers:\n  - aescbc:\n      keys:\n      - name: key1\n        secret: %s\n  - identity: {}\n' \
  "$(head -c 32 /dev/urandom | base64)" > "$POD/secrets/encryption-config/encryption-config"
head -c 1200 /dev/urandom | base64 -w 64 > "$POD/secrets/serving-cert/tls.crt"
head -c 1200 /dev/urandom | base64 -w 64 > "$POD/secrets/serving-cert/tls.key"
python3 - "$POD/configmaps/config/config.yaml" <<'PY'
import random, sys
r = random.Random(7)
with open(sys.argv[1], "w") as f:
    for i in range(12000):
        f.write("  - name: arg-%d\n    value: %s-%d\n" % (i, r.choice(["true", "false", "kube-system", "openshift-etcd", "10m"]), r.randrange(10**6)))
PY
head -c 300000 /dev/urandom | base64 -w 76 > "$POD/configmaps/audit/policy.yaml"
STATIC_BYTES=$(du -sb "$KUBE" | cut -f1)

# ------------------------------------------------------------------ fs-write calibration
# The temp-bytes figure of etcd-offsite rests on %O; show that it sees writes on this fs.
timed "$W/calib.time" dd if=/dev/zero of="$W/calib" bs=1M count=8 status=none
CALIB_BYTES=$(( $(tfield "$W/calib.time" 3) * 512 ))
rm -f "$W/calib"
FS_TYPE=$(df -T "$W" | awk 'NR==2{print $2}')
if [ "$CALIB_BYTES" -ge 8388608 ]; then OBLOCK_OK=1; else OBLOCK_OK=0; log "WARNING: %O does not count writes on $FS_TYPE; etcd-offsite temp bytes fall back to du of files left behind"; fi

# ------------------------------------------------------------------ moto
BUCKET=bench
MOTO_URL=""
start_moto() {
  local port; port=$(free_port)
  MOTO_URL="http://127.0.0.1:$port"
  python3 -m moto.server -H 127.0.0.1 -p "$port" >"$W/srv/moto-$1.log" 2>&1 &
  MOTO_PID=$!
  for _ in $(seq 100); do
    curl -s --noproxy '*' -o /dev/null "$MOTO_URL/" && break
    kill -0 "$MOTO_PID" 2>/dev/null || die "moto exited: $(tail -n 5 "$W/srv/moto-$1.log")"
    sleep 0.2
  done
  curl -sf --noproxy '*' -X PUT "$MOTO_URL/$BUCKET" >/dev/null || die "could not create bucket $BUCKET on moto ($MOTO_URL)"
}
stop_moto() { stop_pid "$MOTO_PID"; MOTO_PID=""; }

# ------------------------------------------------------------------ etcd-offsite configs
write_config() {  # write_config FILE TARGET-YAML [PRIORITY [THREADS [READ_RATE_LIMIT [PACE]]]]
  cat > "$1" <<YAML
version: 1
cluster: bench
source:
  etcd:
    endpoints: ["$EP"]${5:+
    read_rate_limit: $5}${6:+
    pace: $6}
  static_resources:
    base_dir: $KUBE
    paths: ["$POD"]
compression: { level: 3${4:+, threads: $4} }
priority: ${3:-low}
encryption:
  snapshot: { recipients: ["$SNAP_R"] }
  static_resources: { recipients: ["$STATIC_R"] }
targets:
$2
YAML
}

# ------------------------------------------------------------------ results
declare -A R_WALL R_RSS R_TEMP R_STORED R_CPU R_ECPU R_MCPU R_OCPU R_P50 R_P99 R_PMAX R_SP99 CHECK
CASES=(a b e f c d)
GENTLE_RATE=50MiB
declare -A NAME=(
  [a]="a. shell pipeline → directory"
  [b]="b. etcd-offsite → file:// (defaults: pace auto, priority low, zstd workers half the cores)"
  [e]="e. etcd-offsite → file://, fastest (pace off, priority normal, zstd workers on all cores)"
  [f]="f. etcd-offsite → file://, gentlest (pace auto, priority low, 1 zstd thread, read_rate_limit $GENTLE_RATE)"
  [c]="c. shell pipeline → S3 (moto)"
  [d]="d. etcd-offsite → s3:// (moto)"
)
RUN_LINES=()
say_run() { echo "$1" >&2; RUN_LINES+=("$1"); }
record() {  # record CASE WALL RSS_BYTES TEMP STORED CLIENT_CPU (and D_ETCD D_MOTO D_OTHER from cpu_delta)
  R_WALL[$1]+="$2 "; R_RSS[$1]+="$3 "; R_TEMP[$1]+="$4 "; R_STORED[$1]+="$5 "; R_CPU[$1]+="$6 "
  R_ECPU[$1]+="$D_ETCD "; R_MCPU[$1]+="$D_MOTO "; R_OCPU[$1]+="$D_OTHER "
}

# check_artifact CASE FILE: decrypt + decompress, compare with the reference snapshot. The
# latency probe puts small keys during the runs, so the snapshot must hold the reference's
# key revisions plus exactly one per revision since, with a valid hash trailer.
check_artifact() {
  local case=$1 file=$2 out="$W/check.db" size status
  age -d -i "$W/snapshot.key" "$file" | zstd -d -q -c > "$out"
  size=$(fsize "$out")
  [ "$size" -ge "$DB_BYTES" ] || die "case $case: decrypted snapshot is $size bytes, smaller than the reference's $DB_BYTES"
  status=$("$RESTORE_TOOL" snapshot status -w json "$out") || die "case $case: $RESTORE_TOOL snapshot status rejects the decrypted snapshot"
  python3 - "$status" "$REF_STATUS" "$out" <<'PY' || die "case $case: the decrypted snapshot does not match the reference"
import hashlib, json, sys
got, ref = json.loads(sys.argv[1]), json.loads(sys.argv[2])
data = open(sys.argv[3], "rb").read()
assert hashlib.sha256(data[:-32]).digest() == data[-32:], "hash trailer"
assert got["revision"] >= ref["revision"], ("revision", got["revision"], ref["revision"])
# Every put of the probe adds one revision and one stored key revision, nothing else.
assert got["totalKey"] - ref["totalKey"] == got["revision"] - ref["revision"], ("keys", got, ref)
PY
  CHECK[$case]="ok: $(commas "$size") bytes, hash trailer valid, snapshot status $(snap_fields "$status") (reference $REF_FIELDS; the latency probe's keys added)"
  rm -f "$out"
}

# ---- a/c: the shell pipeline
run_pipeline() {  # run_pipeline a|c RUN
  local case=$1 i=$2 d="$W/$1/run$2"
  local T="$d/tmp" OUT="$d/out" t0 t1 tr0 tr1 cpu0 cpu1 snap zst agesz temp stored rss=0 blocks=0 user=0 steps="" key
  mkdir -p "$T" "$OUT"
  sync
  probe_start
  cpu0=$(cpu_snap)
  t0=$(now)
  timed "$d/1.time" etcdctl --endpoints="$EP" snapshot save "$T/snap.db" >"$d/etcdctl.log" 2>&1
  timed "$d/2.time" zstd -3 -T0 -q "$T/snap.db" -o "$T/snap.db.zst"
  if [ "$case" = a ]; then
    timed "$d/3.time" age -r "$SNAP_R" -o "$OUT/snap.db.zst.age" "$T/snap.db.zst"
    tr0=$(now)
    snap=$(fsize "$T/snap.db"); zst=$(fsize "$T/snap.db.zst")
    rm "$T/snap.db" "$T/snap.db.zst"
    tr1=$(now)
    stored=$(fsize "$OUT/snap.db.zst.age")
    temp=$(( snap + zst ))
    names=(etcdctl zstd age)
  else
    timed "$d/3.time" age -r "$SNAP_R" -o "$T/snap.db.zst.age" "$T/snap.db.zst"
    key="pipeline/run$i/snap.db.zst.age"
    timed "$d/4.time" "$W/upload" "$MOTO_URL" "$T/snap.db.zst.age" "$BUCKET" "$key"
    tr0=$(now)
    snap=$(fsize "$T/snap.db"); zst=$(fsize "$T/snap.db.zst"); agesz=$(fsize "$T/snap.db.zst.age")
    rm "$T/snap.db" "$T/snap.db.zst" "$T/snap.db.zst.age"
    tr1=$(now)
    stored=$agesz
    temp=$(( snap + zst + agesz ))
    names=(etcdctl zstd age upload)
  fi
  t1=$(now)
  cpu1=$(cpu_snap)
  probe_stop "$case"
  window_p99 "$case" "$t0" "$(awk -v a="$t0" -v b="$(tfield "$d/1.time" 1)" 'BEGIN{printf "%.6f", a+b}')"
  local n=1
  for name in "${names[@]}"; do
    local f="$d/$n.time" r
    r=$(tfield "$f" 2); [ "$r" -gt "$rss" ] && rss=$r
    blocks=$(( blocks + $(tfield "$f" 3) ))
    user=$(awk -v u="$user" -v a="$(tfield "$f" 4)" -v b="$(tfield "$f" 5)" 'BEGIN{printf "%.2f", u+a+b}')
    steps+="$name $(tfield "$f" 1), "
    n=$((n + 1))
  done
  steps+="rm $(sub "$tr1" "$tr0")"
  local wall; wall=$(sub "$t1" "$t0")
  cpu_delta "$cpu0" "$cpu1" "$user"
  record "$case" "$wall" $(( rss * 1024 )) "$temp" "$stored" "$user"
  say_run "$(printf '  %s run %d/%d: wall %s s [%s] | peak RSS %s MB | temp %s B | stored %s MB | cpu: tools %s s, etcd %s s, moto %s s, other processes %s s | fs writes (%%O) %s MB | %s' \
    "$case" "$i" "$RUNS" "$wall" "$steps" "$(mb $(( rss * 1024 )))" "$(commas "$temp")" "$(mb "$stored")" \
    "$user" "$D_ETCD" "$D_MOTO" "$D_OTHER" "$(mb $(( blocks * 512 )))" "$PROBE_LAST")"
}

# ---- b/d: etcd-offsite
sum_files_rounded() {  # bytes of the files under DIR, each rounded up to 4 KiB pages
  find "$1" -type f -printf '%s\n' | awk '{t += int(($1 + 4095) / 4096) * 4096} END{print t+0}'
}
run_offsite() {  # run_offsite b|d RUN CONFIG TARGET_DIR(b only)
  local case=$1 i=$2 cfg=$3 tdir=${4:-} d="$W/$1/run$2" t0 t1 cpu0 cpu1 out id wall rss blocks user
  local stored target_bytes temp du0=0 du1=0
  mkdir -p "$d"
  [ "$OBLOCK_OK" = 1 ] || du0=$(du -sb --exclude="$W/$case" --exclude="$W/target-*" --exclude="$W/srv" "$W" | cut -f1)
  sync
  probe_start
  cpu0=$(cpu_snap)
  t0=$(now)
  # stdout and stderr go to a pipe (command substitution), so %O holds only the files it wrote.
  if ! out=$(timed "$d/time" "$BIN" --config "$cfg" backup --no-prune 2>&1); then
    printf '%s\n' "$out" > "$d/output.log"
    die "case $case run $i: etcd-offsite backup failed: $(tail -n 3 "$d/output.log")"
  fi
  t1=$(now)
  cpu1=$(cpu_snap)
  probe_stop "$case"
  window_p99 "$case" "$t0" "$t1"
  printf '%s\n' "$out" > "$d/output.log"
  id=$(printf '%s\n' "$out" | tail -n1)
  [[ "$id" =~ ^[0-9]{8}T[0-9]{6}Z(-[0-9]{2})?$ ]] || die "case $case run $i: no backup id on the last line: $id"
  echo "$id" > "$d/id"
  wall=$(sub "$t1" "$t0")
  rss=$(( $(tfield "$d/time" 2) * 1024 ))
  blocks=$(tfield "$d/time" 3)
  user=$(awk -v a="$(tfield "$d/time" 4)" -v b="$(tfield "$d/time" 5)" 'BEGIN{printf "%.2f", a+b}')
  if [ "$case" != d ]; then
    PROBE_LAST+=$(python3 -c 'import json,sys; p=json.load(open(sys.argv[1]))["source"].get("pacing") or {}; d=p.get("during",{}); print(", its probe: pace %s, baseline %s ms, target %s ms, p99 %s ms, mean %.1f MiB/s, slowdowns %s, target raised to %s ms" % (p.get("mode"), p.get("baseline_ms"), p.get("target_ms"), d.get("p99_ms"), p.get("mean_rate",0)/1048576, p.get("slowdowns", 0), p.get("raised_target_ms", "-")))' "$tdir/bench/$id/manifest.json")
    stored=$(fsize "$tdir/bench/$id/snapshot.db.zst.age")
    target_bytes=$(sum_files_rounded "$tdir/bench/$id")
  else
    stored=$(s3py size "$BUCKET" "offsite/bench/$id/snapshot.db.zst.age")
    target_bytes=0   # nothing of the target is on local disk
  fi
  if [ "$OBLOCK_OK" = 1 ]; then
    temp=$(( blocks * 512 - target_bytes ))
  else
    du1=$(du -sb --exclude="$W/$case" --exclude="$W/target-*" --exclude="$W/srv" "$W" | cut -f1)
    temp=$(( du1 - du0 ))
  fi
  cpu_delta "$cpu0" "$cpu1" "$user"
  record "$case" "$wall" "$rss" "$temp" "$stored" "$user"
  say_run "$(printf '  %s run %d/%d: wall %s s | peak RSS %s MB | temp %s B | stored %s MB (backup %s) | cpu: etcd-offsite %s s, etcd %s s, moto %s s, other processes %s s | fs writes (%%O) %s B, files left in target %s B | %s' \
    "$case" "$i" "$RUNS" "$wall" "$(mb "$rss")" "$(commas "$temp")" "$(mb "$stored")" "$id" \
    "$user" "$D_ETCD" "$D_MOTO" "$D_OTHER" "$(commas $(( blocks * 512 )))" "$(commas "$target_bytes")" "$PROBE_LAST")"
}

check_static() {  # check_static CASE FILE: the keys archive opens with the static key only
  local n
  n=$(age -d -i "$W/static.key" "$2" | zstd -d -q -c | tar -tf - | grep -c .) || die "case $1: static resources artifact does not read"
  if age -d -i "$W/snapshot.key" "$2" >/dev/null 2>&1; then die "case $1: the snapshot key opens the static resources artifact"; fi
  CHECK[$1]+="; static tar: $n members, opens with the static key only"
}


# ---- etcd at rest: the same puts with nothing else running
log "idle: etcd put latency for 10 s with nothing else running"
probe_start; T_IDLE=$(now); sleep 10; probe_stop idle
IDLE_LATENCY=$PROBE_LAST
mkdir -p "$W/plot"; cp "$W/probe.samples" "$W/plot/idle.samples"; echo "$T_IDLE $(now)" > "$W/plot/idle.window"

# ---- a
log "case a: shell pipeline → directory, $RUNS runs"
for i in $(seq "$RUNS"); do run_pipeline a "$i"; done
check_artifact a "$W/a/run$RUNS/out/snap.db.zst.age"

# ---- b
TARGET_B="$W/target-b"
mkdir -p "$TARGET_B"
CFG_B="$W/config-file.yaml"
write_config "$CFG_B" "  snapshot: { url: \"file://$TARGET_B\" }"
"$BIN" --config "$CFG_B" config check --connect >"$W/config-check-b.log" 2>&1 || die "config check failed: $(tail -n 3 "$W/config-check-b.log")"
log "case b: etcd-offsite → file://, $RUNS runs"
for i in $(seq "$RUNS"); do run_offsite b "$i" "$CFG_B" "$TARGET_B"; done
ID_B=$(cat "$W/b/run$RUNS/id")
check_artifact b "$TARGET_B/bench/$ID_B/snapshot.db.zst.age"
check_static b "$TARGET_B/bench/$ID_B/static_kuberesources.tar.zst.age"
STATIC_STORED=$(fsize "$TARGET_B/bench/$ID_B/static_kuberesources.tar.zst.age")
MANIFEST_BYTES=$(fsize "$TARGET_B/bench/$ID_B/manifest.json")

# ---- e, f: the same target kind at other priority settings
for c in e f; do
  mkdir -p "$W/target-$c"
  if [ "$c" = e ]; then prio=normal; threads=0; rate=""; pace=off; else prio=low; threads=1; rate=$GENTLE_RATE; pace=auto; fi
  write_config "$W/config-$c.yaml" "  snapshot: { url: \"file://$W/target-$c\" }" "$prio" "$threads" "$rate" "$pace"
  log "case $c: ${NAME[$c]}, $RUNS runs"
  for i in $(seq "$RUNS"); do run_offsite "$c" "$i" "$W/config-$c.yaml" "$W/target-$c"; done
  check_artifact "$c" "$W/target-$c/bench/$(cat "$W/$c/run$RUNS/id")/snapshot.db.zst.age"
done

# ---- reading back case b's last backup: r (stock), s (restore), v (deep verify), x (drill)
declare -A B_WALL B_RSS B_SELF
READ_CASES=(r s v y x)
S3_READ_CASES=(t u)
declare -A READ_NAME=(
  [r]="r. stock: age -d | zstd -d -T0 > file; sha256sum file"
  [s]="s. etcd-offsite restore (snapshot + keys archive)"
  [v]="v. etcd-offsite verify --identity (deep)"
  [x]="x. etcd-offsite drill"
  [y]="y. stock drill: as r, then $RESTORE_TOOL snapshot restore, start etcd, count the keys"
  [t]="t. stock: aws s3 cp to a file, then as r; rm the download"
  [u]="u. etcd-offsite restore from s3:// (snapshot + keys archive)"
)
ART_B="$TARGET_B/bench/$ID_B/snapshot.db.zst.age"
# stock_drill DIR: what a person does by hand to prove DIR/snapshot.db restores.
stock_drill() {
  local d=$1 cp pp n
  cp=$(free_port); pp=$(free_port)
  timed "$d/4.time" env ETCDCTL_API=3 "$RESTORE_TOOL" snapshot restore "$d/snapshot.db" --data-dir "$d/etcd" --name drill \
    --initial-cluster "drill=http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" >"$d/restore.log" 2>&1 \
    || die "case y: $RESTORE_TOOL snapshot restore failed: $(tail -n 3 "$d/restore.log")"
  etcd --name drill --data-dir "$d/etcd" --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
    --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
    --initial-cluster "drill=http://127.0.0.1:$pp" >"$d/etcd.log" 2>&1 &
  DRILL_PID=$!
  for _ in $(seq 300); do
    etcdctl --endpoints="http://127.0.0.1:$cp" endpoint health >/dev/null 2>&1 && break
    kill -0 "$DRILL_PID" 2>/dev/null || die "case y: the restored etcd exited: $(tail -n 3 "$d/etcd.log")"
    sleep 0.1
  done
  n=$(etcdctl --endpoints="http://127.0.0.1:$cp" get "" --from-key --keys-only --limit 1 -w json | python3 -c 'import json,sys; print(json.load(sys.stdin)["count"])') \
    || die "case y: counting keys in the restored etcd failed"
  stop_pid "$DRILL_PID"; DRILL_PID=""
  [ "$n" -gt 0 ] || die "case y: the restored etcd holds no keys"
  rm -rf "$d/etcd"
}
run_read() {  # run_read r|s|v|x|y RUN
  local case=$1 i=$2 d="$W/read-$1/run$2" t0 t1 wall rss=0 self="" f
  mkdir -p "$d"
  sync
  t0=$(now)
  case "$case" in
    t)
      timed "$d/0.time" "$W/download" "$MOTO_URL" "$BUCKET" "offsite/bench/$ID_D/snapshot.db.zst.age" "$d/snapshot.age"
      timed "$d/1.time" age -d -i "$W/snapshot.key" "$d/snapshot.age" \
        | timed "$d/2.time" zstd -d -T0 -q -c > "$d/snapshot.db"
      timed "$d/3.time" sha256sum "$d/snapshot.db" > "$d/sha256"
      rm "$d/snapshot.age" ;;
    u)
      timed "$d/1.time" "$BIN" --config "$CFG_D" --log-format json restore "$ID_D" --to "$d/out" \
        --identity "$W/snapshot.key" --identity "$W/static.key" >"$d/output.log" 2>&1 \
        || die "case u run $i: restore failed: $(tail -n 3 "$d/output.log")" ;;
    r|y)
      timed "$d/1.time" age -d -i "$W/snapshot.key" "$ART_B" \
        | timed "$d/2.time" zstd -d -T0 -q -c > "$d/snapshot.db"
      timed "$d/3.time" sha256sum "$d/snapshot.db" > "$d/sha256"
      [ "$case" = y ] && stock_drill "$d" ;;
    s)
      timed "$d/1.time" "$BIN" --config "$CFG_B" --log-format json restore "$ID_B" --to "$d/out" \
        --identity "$W/snapshot.key" --identity "$W/static.key" >"$d/output.log" 2>&1 \
        || die "case s run $i: restore failed: $(tail -n 3 "$d/output.log")" ;;
    v)
      timed "$d/1.time" "$BIN" --config "$CFG_B" verify "$ID_B" \
        --identity "$W/snapshot.key" --identity "$W/static.key" >"$d/output.log" 2>&1 \
        || die "case v run $i: verify failed: $(tail -n 3 "$d/output.log")" ;;
    x)
      mkdir -p "$W/scratch"
      timed "$d/1.time" "$BIN" --config "$CFG_B" --log-format json drill "$ID_B" --scratch-dir "$W/scratch" \
        --identity "$W/snapshot.key" --identity "$W/static.key" >"$d/output.log" 2>&1 \
        || die "case x run $i: drill failed: $(tail -n 3 "$d/output.log")"
      # The drill's own peak (GNU time's %M is the largest of it and the etcd it started).
      self=$(grep -o '"peak_rss_bytes":[0-9]*' "$d/output.log" | tail -n1 | cut -d: -f2) ;;
  esac
  t1=$(now)
  wall=$(sub "$t1" "$t0")
  for f in "$d"/*.time; do
    local r; r=$(tfield "$f" 2); [ "$r" -gt "$rss" ] && rss=$r
  done
  B_WALL[$case]+="$wall "; B_RSS[$case]+="$(( rss * 1024 )) "
  [ -n "$self" ] && B_SELF[$case]+="$self "
  say_run "$(printf '  %s run %d/%d: wall %s s | peak RSS %s MB%s' "$case" "$i" "$RUNS" "$wall" "$(mb $(( rss * 1024 )))" \
    "${self:+ (etcd-offsite itself $(mb "$self") MB)}")"
  rm -rf "$d/snapshot.db" "$d/out"
}
for c in "${READ_CASES[@]}"; do
  log "case $c: ${READ_NAME[$c]}, $RUNS runs"
  for i in $(seq "$RUNS"); do run_read "$c" "$i"; done
done

# ---- c (fresh moto)
start_moto c
log "case c: shell pipeline → S3 on moto ($MOTO_URL), $RUNS runs"
for i in $(seq "$RUNS"); do run_pipeline c "$i"; done
s3py get "$BUCKET" "pipeline/run$RUNS/snap.db.zst.age" "$W/c/download.age"
check_artifact c "$W/c/download.age"; rm -f "$W/c/download.age"
MOTO_URL_C=$MOTO_URL
stop_moto

# ---- d (fresh moto)
start_moto d
CFG_D="$W/config-s3.yaml"
write_config "$CFG_D" "  snapshot:
    url: s3://$BUCKET/offsite
    options:
      aws_endpoint: $MOTO_URL
      aws_allow_http: \"true\"
      aws_region: us-east-1
      aws_access_key_id: test
      aws_secret_access_key: test
      aws_virtual_hosted_style_request: \"false\""
"$BIN" --config "$CFG_D" config check --connect >"$W/config-check-d.log" 2>&1 || die "config check failed: $(tail -n 3 "$W/config-check-d.log")"
log "case d: etcd-offsite → s3:// on moto ($MOTO_URL), $RUNS runs"
for i in $(seq "$RUNS"); do run_offsite d "$i" "$CFG_D"; done
ID_D=$(cat "$W/d/run$RUNS/id")
s3py get "$BUCKET" "offsite/bench/$ID_D/snapshot.db.zst.age" "$W/d/download.age"
check_artifact d "$W/d/download.age"; rm -f "$W/d/download.age"
s3py get "$BUCKET" "offsite/bench/$ID_D/static_kuberesources.tar.zst.age" "$W/d/static.age"
check_static d "$W/d/static.age"; rm -f "$W/d/static.age"
for c in "${S3_READ_CASES[@]}"; do
  log "case $c: ${READ_NAME[$c]}, $RUNS runs"
  for i in $(seq "$RUNS"); do run_read "$c" "$i"; done
done
stop_moto

# ------------------------------------------------------------------ plot
mkdir -p "$(dirname "$PLOT")"
python3 "$REPO/scripts/plot_p99.py" --out "$PLOT" \
  --title "etcd $ETCD_FULL, $(commas "$DB_BYTES") B database in $RESOURCES prefixes: put p99 per 0.5 s, last run of each case" \
  "idle=$W/plot/idle.samples:$W/plot/idle.window" \
  "a. shell pipeline (etcdctl step dotted)=$W/plot/a.samples:$W/plot/a.window" \
  "b. etcd-offsite default (pace auto)=$W/plot/b.samples:$W/plot/b.window" \
  "e. etcd-offsite fastest (pace off)=$W/plot/e.samples:$W/plot/e.window" \
  || die "the plot failed"
log "plot written to $PLOT"

# ------------------------------------------------------------------ report
CPU_MODEL=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
MEM_GB=$(awk '/^MemTotal/{printf "%.1f", $2/1048576}' /proc/meminfo)
{
echo
echo "## etcd-offsite benchmark on etcd $ETCD_FULL (runs per case: $RUNS; each column is the median over the runs)"
echo
echo "| case | wall s | MB/s (db size / wall) | peak RSS MB | temp bytes written | stored MB | etcd put p50 / p99 / max ms | p99 ms during the snapshot stream |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
# shellcheck disable=SC2086
printf '| idle (no backup) | | | | | | %.1f / %.1f / %.1f | |\n' "$(median ${R_P50[idle]})" "$(median ${R_P99[idle]})" "$(median ${R_PMAX[idle]})"
for c in "${CASES[@]}"; do
  # shellcheck disable=SC2086
  w=$(median ${R_WALL[$c]}); r=$(median ${R_RSS[$c]}); t=$(median ${R_TEMP[$c]}); s=$(median ${R_STORED[$c]})
  # shellcheck disable=SC2086
  printf '| %s | %.2f | %.1f | %.1f | %s | %.1f | %.1f / %.1f / %.1f | %.1f |\n' "${NAME[$c]}" "$w" \
    "$(awk -v b="$DB_BYTES" -v w="$w" 'BEGIN{print b/1e6/w}')" "$(awk -v r="$r" 'BEGIN{print r/1e6}')" \
    "$(commas "$(printf '%.0f' "$t")")" "$(awk -v s="$s" 'BEGIN{print s/1e6}')" \
    "$(median ${R_P50[$c]})" "$(median ${R_P99[$c]})" "$(median ${R_PMAX[$c]})" "$(median ${R_SP99[$c]})"
done
echo
echo "p99 over time (one run each of idle, a, b, e): $PLOT"
echo
echo "etcd put latency: 200 puts/s of ~100 B through etcd's JSON gateway during each run (scripts/etcd_latency.py;"
echo "each put timed from sending to etcd's answer; idle: $IDLE_LATENCY). Medians over the runs of each percentile."
echo "The last column counts only the puts sent while etcd served the snapshot: the pipeline's etcdctl step (its"
echo "zstd, age and upload steps leave etcd alone and would dilute its p99), etcd-offsite's whole run."
echo
echo "Reading back case b's last backup ($(commas "$DB_BYTES") byte snapshot) from its file:// target (median of $RUNS runs):"
echo
echo "| case | wall s | MB/s (db size / wall) | peak RSS MB | vs stock (r; x: vs y) |"
echo "| --- | ---: | ---: | ---: | ---: |"
for c in "${READ_CASES[@]}"; do
  # shellcheck disable=SC2086
  if [ "$c" = x ]; then STOCK_W=$(median ${B_WALL[y]}); else STOCK_W=$(median ${B_WALL[r]}); fi
  # shellcheck disable=SC2086
  w=$(median ${B_WALL[$c]}); r=$(median ${B_RSS[$c]}); extra=""
  # shellcheck disable=SC2086
  [ -n "${B_SELF[$c]:-}" ] && extra=" (itself $(awk -v r="$(median ${B_SELF[$c]})" 'BEGIN{printf "%.1f", r/1e6}'))"
  printf '| %s | %.2f | %.1f | %.1f%s | %.2fx |\n' "${READ_NAME[$c]}" "$w" \
    "$(awk -v b="$DB_BYTES" -v w="$w" 'BEGIN{print b/1e6/w}')" "$(awk -v r="$r" 'BEGIN{print r/1e6}')" "$extra" \
    "$(awk -v w="$w" -v s="$STOCK_W" 'BEGIN{print w/s}')"
done
echo
echo "Reading back case d's last backup from S3 on moto (median of $RUNS runs):"
echo
echo "| case | wall s | MB/s (db size / wall) | peak RSS MB | vs stock |"
echo "| --- | ---: | ---: | ---: | ---: |"
# shellcheck disable=SC2086
STOCK_W=$(median ${B_WALL[t]})
for c in "${S3_READ_CASES[@]}"; do
  # shellcheck disable=SC2086
  w=$(median ${B_WALL[$c]}); r=$(median ${B_RSS[$c]})
  printf '| %s | %.2f | %.1f | %.1f | %.2fx |\n' "${READ_NAME[$c]}" "$w" \
    "$(awk -v b="$DB_BYTES" -v w="$w" 'BEGIN{print b/1e6/w}')" "$(awk -v r="$r" 'BEGIN{print r/1e6}')" \
    "$(awk -v w="$w" -v s="$STOCK_W" 'BEGIN{print w/s}')"
done
echo
echo "Peak RSS of r and t is their largest process (age, zstd, sha256sum; y adds etcdctl snapshot restore); of x the largest of etcd-offsite and the scratch etcd"
echo "(etcd-offsite's own peak, from its log, in parentheses). s, u and x write the snapshot to disk, as r and t do."
echo
echo "Where the time goes: CPU seconds (user+sys, median over the runs) on $(nproc) cores. \"other\" is what every other"
echo "process on the machine used during the runs: noise from other work (0 on a quiet machine)."
echo
echo "| case | client CPU s | etcd CPU s | moto CPU s | benchmark CPU / wall | other processes CPU s |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
for c in "${CASES[@]}"; do
  # shellcheck disable=SC2086
  w=$(median ${R_WALL[$c]}); u=$(median ${R_CPU[$c]}); e=$(median ${R_ECPU[$c]}); m=$(median ${R_MCPU[$c]}); o=$(median ${R_OCPU[$c]})
  printf '| %s | %.2f | %.2f | %.2f | %.2f | %.2f |\n' "${NAME[$c]}" "$u" "$e" "$m" \
    "$(awk -v u="$u" -v e="$e" -v m="$m" -v w="$w" 'BEGIN{print (u+e+m)/w}')" "$o"
done
echo
echo "Runs (pipeline steps in [], wall s each; cpu = user+sys during the run of the client processes, etcd, moto and all other processes):"
echo '```'
printf '%s\n' "${RUN_LINES[@]}"
echo '```'
echo
echo "- Database: $(commas "$DB_BYTES") bytes (\`etcdctl snapshot save\`; etcd reports dbSize $(commas "$ETCD_DBSIZE")), $REF_FIELDS;"
echo "  loaded with tests/support/etcd_load.py: $BIG_COUNT × 100,000 B + $SMALL_COUNT × 4,096 B k8s-like JSON values in $RESOURCES"
echo "  resource prefixes under /kubernetes.io/ (--resources). MB = 10^6 bytes."
echo "- Machine: $(nproc) CPUs ($CPU_MODEL), $MEM_GB GiB RAM, $(uname -sr), work dir on $FS_TYPE;"
echo "  load average (1/5/15 min) $LOAD0 when the script started, before it built or loaded anything. etcd (and moto) run on the same cores."
echo "- Versions: etcd $ETCD_FULL ($(command -v etcd); restore tool $RESTORE_TOOL), $(zstd --version | head -n1 | sed 's/^\*\*\* //; s/ \*\*\*$//'), age $(age --version), $("$BIN" --version), uploader $UPLOADER."
echo "- Correctness (once per case, last run's artifact, \`age -d -i KEY | zstd -d\`, then \`etcdctl snapshot status\`):"
for c in "${CASES[@]}"; do echo "  - $c: ${CHECK[$c]}"; done
echo "- wall s: end to end, from the snapshot request to the stored artifact (the pipeline's steps run back to back, including \`rm\`)."
echo "- peak RSS MB: GNU time %M (max RSS) of the largest single process (pipeline: max over etcdctl, zstd, age, upload; etcd-offsite: the process)."
echo "- temp bytes written: shell pipeline = sizes of the temporary files it creates outside the output"
echo "  (a: snap.db + snap.db.zst; c: snap.db + snap.db.zst + snap.db.zst.age, since the output is in S3)."
if [ "$OBLOCK_OK" = 1 ]; then
echo "  etcd-offsite = bytes the process wrote to any file system (GNU time %O = getrusage ru_oublock × 512, the kernel's"
echo "  per-process write_bytes, counted when page-cache pages are dirtied, so a temp file deleted before writeback still"
echo "  counts) minus the files its backup left in the target (each rounded up to 4 KiB pages; 0 for S3). Its stdout/stderr"
echo "  went to a pipe. The residual (tens of KiB) is the lock and in-progress marker it writes and deletes in the target"
echo "  and partially written pages dirtied twice. The same %O sum over the pipeline's processes (\"fs writes\" in the run"
echo "  lines) equals snap.db + snap.db.zst + the .age file, which cross-checks the method."
echo "  Calibration: dd of 8 MiB in the work dir → %O $(commas "$CALIB_BYTES") bytes."
else
echo "  etcd-offsite = growth of \`du -sb\` of the work dir outside the target and etcd's data (%O does not see writes on $FS_TYPE,"
echo "  so this fallback sees only files left behind, not temporary files deleted before the process exits)."
fi
echo "- stored MB: the snapshot artifact (snapshot.db.zst.age). etcd-offsite also stores the static resources"
echo "  ($(commas "$STATIC_BYTES") B of files → $(commas "$STATIC_STORED") B) and manifest.json ($(commas "$MANIFEST_BYTES") B), which the pipeline does not; both are in its wall time."
echo "- moto (python3 -m moto.server) restarted between c and d; data never leaves loopback."
echo
echo "### Commands (each step of the pipeline wrapped in \`/usr/bin/time -f '%e %M %O %U %S'\`; sync before each run)"
echo '```'
echo "# a. shell pipeline → directory   (T = temp dir, OUT = output dir)"
echo "etcdctl --endpoints=$EP snapshot save \$T/snap.db && zstd -3 -T0 -q \$T/snap.db -o \$T/snap.db.zst && age -r $SNAP_R -o \$OUT/snap.db.zst.age \$T/snap.db.zst && rm \$T/snap.db \$T/snap.db.zst"
echo "# b. etcd-offsite → file://   (config below)"
echo "$BIN --config $CFG_B backup --no-prune"
echo "# c. shell pipeline → S3 (moto at $MOTO_URL_C, restarted before this case)"
if [ -n "$AWS_BIN" ]; then
echo "etcdctl --endpoints=$EP snapshot save \$T/snap.db && zstd -3 -T0 -q \$T/snap.db -o \$T/snap.db.zst && age -r $SNAP_R -o \$T/snap.db.zst.age \$T/snap.db.zst && AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test AWS_DEFAULT_REGION=us-east-1 $AWS_BIN --endpoint-url $MOTO_URL_C s3 cp --only-show-errors \$T/snap.db.zst.age s3://$BUCKET/pipeline/runN/snap.db.zst.age && rm \$T/snap.db \$T/snap.db.zst \$T/snap.db.zst.age"
else
echo "etcdctl --endpoints=$EP snapshot save \$T/snap.db && zstd -3 -T0 -q \$T/snap.db -o \$T/snap.db.zst && age -r $SNAP_R -o \$T/snap.db.zst.age \$T/snap.db.zst && python3 -c 'boto3.client(\"s3\", endpoint_url=\"$MOTO_URL_C\", ...).upload_file(\"\$T/snap.db.zst.age\", \"$BUCKET\", \"pipeline/runN/snap.db.zst.age\")' && rm \$T/snap.db \$T/snap.db.zst \$T/snap.db.zst.age"
fi
echo "# d. etcd-offsite → s3:// on moto (fresh moto; config below)"
echo "$BIN --config $CFG_D backup --no-prune"
echo "# e, f: as b with the config's priority, compression.threads and read_rate_limit changed (${NAME[e]#e. }; ${NAME[f]#f. })"
echo "# r. stock decode of case b's backup   (ID = $ID_B)"
echo "age -d -i snapshot.key $ART_B | zstd -d -T0 -q -c > \$D/snapshot.db && sha256sum \$D/snapshot.db"
echo "# y. as r, then: etcdctl snapshot restore \$D/snapshot.db --data-dir \$D/etcd ...; etcd --data-dir \$D/etcd ... &; etcdctl get \"\" --prefix --count-only; stop etcd"
echo "# s, v, x"
echo "$BIN --config $CFG_B restore $ID_B --to \$D/out --identity snapshot.key --identity static.key"
echo "$BIN --config $CFG_B verify $ID_B --identity snapshot.key --identity static.key"
echo "$BIN --config $CFG_B drill $ID_B --scratch-dir $W/scratch --identity snapshot.key --identity static.key"
echo "# t. stock restore of case d's backup from S3   (ID = $ID_D)"
echo "aws --endpoint-url $MOTO_URL s3 cp --only-show-errors s3://$BUCKET/offsite/bench/$ID_D/snapshot.db.zst.age \$D/snapshot.age && age -d -i snapshot.key \$D/snapshot.age | zstd -d -T0 -q -c > \$D/snapshot.db && sha256sum \$D/snapshot.db && rm \$D/snapshot.age"
echo "# u."
echo "$BIN --config $CFG_D restore $ID_D --to \$D/out --identity snapshot.key --identity static.key"
echo '```'
echo "b config (d differs only in \`targets\`, shown after):"
echo '```yaml'
cat "$CFG_B"
echo "# d:"
sed -n '/^targets:/,$p' "$CFG_D"
echo '```'
}
