#!/usr/bin/env bash
# Benchmarks: build the release binaries, then run cni-bench (sandbox namespaces, needs root).
#   scripts/bench.sh host-local [--leases 60000] [--rounds 200]
#   scripts/bench.sh bridge [--attached 200] [--rounds 50]
#   scripts/bench.sh portmap [--levels 1,100,1000] [--rounds 20]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root "$@"
ensure_cargo
ensure_tools ip:iproute2 nft:nftables iptables:iptables
cargo build --release --workspace --bins --locked
exec target/release/cni-bench "${@:-host-local}"
