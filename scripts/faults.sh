#!/usr/bin/env bash
# The fault suite (issue 11) and its figures: backups through a faulty S3 front, a killed
# etcd member, a full file:// target and bad inputs, then a table per fault kind.
#   bash scripts/faults.sh           the bounded suite (what `cargo test` runs in CI)
#   bash scripts/faults.sh --long    five times as many cases (ETCD_OFFSITE_FAULTS_LONG=1)
#   ETCD_OFFSITE_FAULTS_LONG=N bash scripts/faults.sh    N times as many cases
# Needs root (the full-disk case mounts a tmpfs). Exits non-zero when a test fails or a
# backup was lost.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

for arg in "$@"; do
    case "$arg" in
        --long) export ETCD_OFFSITE_FAULTS_LONG="${ETCD_OFFSITE_FAULTS_LONG:-1}" ;;
        -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
        *) echo "faults.sh: unknown argument $arg (use --long)" >&2; exit 2 ;;
    esac
done

bash scripts/setup.sh

log="$(mktemp "${TMPDIR:-/tmp}/etcd-offsite-faults.XXXXXX")"
trap 'rm -f "$log"' EXIT
echo "== cargo test --release --test faults (ETCD_OFFSITE_FAULTS_LONG=${ETCD_OFFSITE_FAULTS_LONG:-unset})" >&2
started=$(date +%s)
set +e
cargo test --release --test faults -- --nocapture 2>&1 | tee "$log" >&2
status=${PIPESTATUS[0]}
set -e
elapsed=$(( $(date +%s) - started ))

echo
echo "| fault kind | cases tried | survived (backup succeeded) | failed cleanly | backups lost | notes |"
echo "|---|---:|---:|---:|---:|---|"
grep -a '^FAULTS ' "$log" | sort -u | awk '
{
    delete f; notes = ""
    for (i = 2; i <= NF; i++) {
        split($i, kv, "=")
        f[kv[1]] = kv[2]
        if (kv[1] !~ /^(kind|tried|survived|clean_failures|lost)$/) notes = notes (notes ? ", " : "") $i
    }
    printf "| %s | %s | %s | %s | %s | %s |\n", f["kind"], f["tried"], f["survived"], f["clean_failures"], f["lost"], notes
    lost += f["lost"]
}
END { if (NR == 0) print "| (no figures: the tests did not get far enough to print them) | | | | | |" }'
echo
echo "wall time: ${elapsed} s; cargo test exit status: ${status}"
exit "$status"
