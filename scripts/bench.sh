#!/usr/bin/env bash
# Benchmarks: build the release binaries, then run cni-bench (sandbox namespaces, needs root).
# The report (Markdown, the table of docs/benchmarks.md) goes to stdout, progress to stderr.
#   scripts/bench.sh [all] [--quick] [--n 1000] [--rounds 20] [--leases 60000] [--iptables] [--glibc]
#                    [--no-reference] [--only bridge,portmap] [--containers-without-ipv6] [--edge-gap 1]
#                    [--disable-ipv6-link-local] [--dual-stack]
#       everything: binary sizes, host-local at 60k leases, every plugin, the bridge+host-local+
#       portmap chain through cnitool for containers 1..N, peak RSS; --quick: N=20, 10 rounds;
#       --iptables adds ours with the iptables backends, --glibc ours built for glibc (next to
#       the shipped static musl build, see build_shipped in scripts/lib.sh),
#       --disable-ipv6-link-local: then the chain once more, ours alone with that opt-in key;
#       --dual-stack: the chain's network hands out an IPv6 address too
#   scripts/bench.sh chain|plugins|host-local|rss [options]   one part
#   scripts/bench.sh bridge [--attached 200] [--rounds 50]     bridge per masquerade backend
#   scripts/bench.sh portmap [--levels 1,100,1000] [--rounds 20]   portmap at N installed mappings
# The reference plugins (Debian's containernetworking-plugins, in /usr/lib/cni) run side by side
# when installed; when they are not, they are installed with apt-get unless --no-reference is
# given or CNI_BENCH_NO_INSTALL=1.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ " $* " == *" --help "* || " $* " == *" -h "* ]]; then
    sed -n '2,/^# given or/s/^# \{0,1\}//p' "$0"
    exit 0
fi
. scripts/lib.sh
need_root "$@"
ensure_cargo
ensure_tools ip:iproute2 nft:nftables iptables:iptables
if [ "${CNI_BENCH_NO_INSTALL:-0}" != 1 ] && [[ " $* " != *" --no-reference "* ]]; then
    ensure_reference_plugins "running without the reference" >&2
fi
build_shipped >&2
if [[ " $* " == *" --glibc "* ]]; then
    cargo build --release --workspace --bins --locked >&2
    export CNI_BENCH_GLIBC_DIR="$PWD/target/release"
fi
# Not exec: when the run is interrupted (Ctrl-C, a kill), the sandbox namespaces and temporary
# directories it made (named after its pid: cnit-<pid>-...) are removed here; a run that ends
# by itself has removed them already.
"$SHIPPED_DIR/cni-bench" "${@:-all}" &
bench=$!
cleanup() {
    kill "$bench" 2>/dev/null || true
    wait "$bench" 2>/dev/null || true
    local ns
    for ns in $(ip netns list | awk -v p="cnit-$bench-" 'index($1, p) == 1 { print $1 }'); do
        ip netns del "$ns" 2>/dev/null || true
    done
    rm -rf /tmp/cnit-"$bench"-*
}
trap 'cleanup; exit 130' INT TERM
status=0
wait "$bench" || status=$?
cleanup
exit "$status"
