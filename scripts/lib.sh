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

ensure_cargo() {
    if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
        export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust (https://rustup.rs)"
}

# What the integration tests and the demo run: ip, bridge, ping, nft, iptables, conntrack, unshare.
TEST_TOOLS=(ip:iproute2 bridge:iproute2 ping:iputils-ping nft:nftables iptables:iptables ip6tables:iptables conntrack:conntrack unshare:util-linux flock:util-linux)
