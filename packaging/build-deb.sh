#!/usr/bin/env bash
# Builds dist/vwstream-agent_<version>_amd64.deb from the tree packaging/stage.sh lays out
# (the same tree the .rpm is made of), plus Debian's control area.
# Usage: packaging/build-deb.sh   (from the repository root; `make deb` calls it)
#   VWS_VERSION: see packaging/stage.sh. DEB_COMPRESS: dpkg-deb options.
set -euo pipefail
cd "$(dirname "$0")/.."

ARCH=amd64
PKG=build/pkg
packaging/stage.sh "$PKG"
VERSION=$(cat "$PKG.version")
OUT=dist/vwstream-agent_${VERSION}_${ARCH}.deb
umask 022
install -d "$PKG/DEBIAN" "$PKG/usr/share/lintian/overrides" dist
install -m 0644 packaging/debian/lintian-overrides "$PKG/usr/share/lintian/overrides/vwstream-agent"

# Control area.
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$PKG/DEBIAN/"
install -m 0644 packaging/debian/conffiles "$PKG/DEBIAN/conffiles"
(cd "$PKG" && find . -type f ! -path './DEBIAN/*' ! -path './etc/*' -printf '%P\0' |
  LC_ALL=C sort -z | xargs -0 md5sum) >"$PKG/DEBIAN/md5sums"
chmod 0644 "$PKG/DEBIAN/md5sums"
INSTALLED_SIZE=$(du -sk --exclude=DEBIAN "$PKG" | cut -f1)
SHLIBS="libc6 (>= 2.34), libgcc-s1 (>= 3.4), libstdc++6 (>= 5.2)"
# Description: the summary line, then the paragraphs indented, blank lines as " .".
DESCRIPTION=$(sed -e '1!s/^$/./' -e '1!s/^/ /' packaging/description)
VERSION=$VERSION ARCH=$ARCH INSTALLED_SIZE=$INSTALLED_SIZE SHLIBS=$SHLIBS DESCRIPTION=$DESCRIPTION \
  perl -pe 's/\@(VERSION|ARCH|INSTALLED_SIZE|SHLIBS|DESCRIPTION)\@/$ENV{$1}/g' \
  packaging/debian/control.in >"$PKG/DEBIAN/control"

rm -f "$OUT"
# DEB_COMPRESS: e.g. "-Zxz -z1" for quick local iterations (~13 s instead of ~55 s).
# shellcheck disable=SC2086
dpkg-deb --root-owner-group ${DEB_COMPRESS:--Zxz} --build "$PKG" "$OUT.tmp" >/dev/null
mv "$OUT.tmp" "$OUT"
echo "built $OUT ($(du -h --apparent-size "$OUT" | cut -f1), installed size ${INSTALLED_SIZE} KiB)"
