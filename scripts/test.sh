#!/usr/bin/env bash
# Run every test: unit tests, and the integration tests that run the built plugins in sandbox
# network namespaces — against the debug build, then again against the release build we ship
# (static musl when the toolchain has the target: see build_shipped in scripts/lib.sh).
# Installs what the tests need (apt-get, only when missing). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root "$@"
ensure_cargo
ensure_tools "${TEST_TOOLS[@]}"
# The switch-over tests run the reference plugins' ADD before our DEL.
ensure_reference_plugins "the tests that need them say SKIPPED"
modprobe -q br_netfilter 2>/dev/null || true

echo "==> building the plugins"
cargo build --workspace --bins --locked
echo "==> running the tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --all-targets --no-fail-fast --locked "$@" 2>&1 | tee "$log" || status=$?
build_shipped
echo "==> running the integration tests against the shipped build ($SHIPPED_DIR)"
CNI_TEST_BIN_DIR="$PWD/$SHIPPED_DIR" cargo test -p cni-tests --tests --no-fail-fast --locked "$@" 2>&1 |
    tee -a "$log" || status=$?
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i } }
     END { printf "summary: %d passed, %d failed, %d skipped\n", p, f, g }' "$log"
exit "$status"
