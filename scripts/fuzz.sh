#!/usr/bin/env bash
# Fuzz the input parsers with cargo-fuzz (libFuzzer). Stable Rust via RUSTC_BOOTSTRAP.
#   scripts/fuzz.sh smoke          a short run of every target (CI)
#   scripts/fuzz.sh TARGET RUNS    one target for RUNS executions (e.g. 10000000)
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
. ../scripts/lib.sh
ensure_cargo
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "==> installing cargo-fuzz"
    cargo install --locked cargo-fuzz >/dev/null
fi
TARGETS=(config_decode result_convert cni_args store_reader)
run() {
    local target=$1 runs=$2 log status=0
    mkdir -p "corpus/$target"
    log=$(mktemp)
    cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
        -runs="$runs" -max_len=8192 -print_final_stats=1 >"$log" 2>&1 || status=$?
    grep -E '^(Done|stat::number_of_executed_units|==[0-9]+==|SUMMARY|thread .* panicked)' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -40 "$log"
        echo "fuzz target $target failed (exit $status); the input is under fuzz/artifacts/$target"
    fi
    rm -f "$log"
    return "$status"
}
case "${1:-smoke}" in
    smoke) for t in "${TARGETS[@]}"; do echo "==> fuzz $t (smoke)"; run "$t" 50000; done ;;
    *) run "$1" "${2:-10000000}" ;;
esac
