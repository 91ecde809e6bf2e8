#!/usr/bin/env bash
# Full test run, as CI does it: install what is missing, build, test.
#   bash scripts/test.sh            (CI runs it through .ci/run with CI=true)
# Extra arguments go to `cargo test` (e.g. a test-name filter).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Pass CI through to cargo and the tests when the caller set it.
if [ -n "${CI:-}" ]; then export CI; fi
export RUST_BACKTRACE="${RUST_BACKTRACE:-1}"

# rustup installs into ~/.cargo/bin, which a non-login shell may lack.
if ! command -v cargo >/dev/null 2>&1 && [ -f "$HOME/.cargo/env" ]; then
    # shellcheck disable=SC1091
    . "$HOME/.cargo/env"
fi

bash scripts/setup.sh

echo "== cargo build --all-targets" >&2
cargo build --all-targets

echo "== cargo test" >&2
cargo test "$@"
