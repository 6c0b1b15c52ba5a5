# Shared by the scripts: root check, and system packages installed only when missing.

die() { echo "error: $*" >&2; exit 1; }

need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            exec sudo -E "PATH=$PATH" "$0" "$@"
        fi
        die "run as root: the tests and the demo create network namespaces"
    fi
}

# ensure_tools CMD:PACKAGE ... — apt-get installs the packages whose command is missing.
ensure_tools() {
    local missing=()
    local pair
    for pair in "$@"; do
        command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    echo "==> installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# ensure_reference_plugins WITHOUT — the reference plugins (Debian's containernetworking-plugins,
# in /usr/lib/cni), installed with apt-get when missing; best effort: when they cannot be had,
# says so ("could not install …: WITHOUT") and returns 0.
ensure_reference_plugins() {
    [ -x /usr/lib/cni/bridge ] && [ -x /usr/lib/cni/portmap ] && return 0
    if command -v apt-get >/dev/null 2>&1; then
        echo "==> installing the reference plugins (containernetworking-plugins)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null || true
        apt-get install -y -qq --no-install-recommends containernetworking-plugins >/dev/null \
            && return 0
    fi
    echo "(could not install containernetworking-plugins: $1)"
}

ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs)"
}

# What the integration tests and the demo run: ip, bridge, ping, nft, iptables, conntrack, unshare.
TEST_TOOLS=(ip:iproute2 bridge:iproute2 ping:iputils-ping nft:nftables iptables:iptables ip6tables:iptables conntrack:conntrack unshare:util-linux flock:util-linux)

# build_shipped — the release build we ship, into SHIPPED_DIR: static musl binaries when the
# Rust toolchain has (or, through rustup, can get) the x86_64-unknown-linux-musl target. A
# static musl process starts in ~0.2 ms where a glibc one takes ~0.9 ms on the development VM
# (glibc's start-up probes the CPU with CPUID, a trap to the hypervisor each; then the dynamic
# loader), and a chain ADD starts four. Without the target: the glibc build, said so.
# Static musl binaries cannot dlopen libnftables; they run the `nft` binary for the rare
# table setup and for listings (see shared/src/firewall/nftexec.rs).
MUSL_TARGET=x86_64-unknown-linux-musl
build_shipped() {
    local sysroot
    sysroot=$(rustc --print sysroot 2>/dev/null || true)
    if [ "$(uname -m)" = x86_64 ] && [ ! -d "$sysroot/lib/rustlib/$MUSL_TARGET/lib" ] \
        && command -v rustup >/dev/null 2>&1; then
        echo "==> adding the Rust target $MUSL_TARGET (static binaries)"
        rustup target add "$MUSL_TARGET" >/dev/null 2>&1 || true
    fi
    if [ -n "$sysroot" ] && [ -d "$sysroot/lib/rustlib/$MUSL_TARGET/lib" ]; then
        echo "==> building the release binaries (static, $MUSL_TARGET)"
        cargo build --release --workspace --bins --locked --target "$MUSL_TARGET"
        SHIPPED_DIR=target/$MUSL_TARGET/release
    else
        echo "==> building the release binaries (glibc: the Rust target $MUSL_TARGET is not available)"
        cargo build --release --workspace --bins --locked
        SHIPPED_DIR=target/release
    fi
}
