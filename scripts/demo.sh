#!/usr/bin/env bash
# The main job: build the release plugins and cnitool, then — entirely inside network namespaces
# made here — wire sandbox containers into the example networks of conf/, show that they talk,
# CHECK, DEL, and verify nothing is left. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
need_root "$@"
ensure_cargo
ensure_tools "${TEST_TOOLS[@]}"
build_shipped
exec "$SHIPPED_DIR/cni-demo"
