#!/usr/bin/env bash
# Run every test: unit tests, and the integration tests that run the built plugins in sandbox
# network namespaces. Installs what the tests need (apt-get, only when missing). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root "$@"
ensure_cargo
ensure_tools "${TEST_TOOLS[@]}"
modprobe -q br_netfilter 2>/dev/null || true

echo "==> building the plugins"
cargo build --workspace --bins --locked
echo "==> running the tests"
cargo test --workspace --locked "$@"
