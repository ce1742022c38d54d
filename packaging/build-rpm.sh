#!/usr/bin/env bash
# Builds dist/vwstream-agent-<version>.<arch>.rpm from the same staged tree as the .deb
# (packaging/stage.sh), the same description and the same maintainer scripts.
# Usage: packaging/build-rpm.sh   (from the repository root; `make rpm` calls it)
#   VWS_VERSION: see packaging/stage.sh. RPM_ZSTD_LEVEL: payload level (12).
set -euo pipefail
cd "$(dirname "$0")/.."

RPMARCH=x86_64
STAGE=$PWD/build/rpm-stage
TOP=$PWD/build/rpmbuild
packaging/stage.sh "$STAGE"
VERSION=$(cat "$STAGE.version")
# rpm's version may not contain "-"; the .deb's may (it has none today).
[[ "$VERSION" != *-* ]] || { echo "build-rpm: version $VERSION has a '-'" >&2; exit 1; }
OUT=dist/vwstream-agent-${VERSION}.${RPMARCH}.rpm

# The one Debian-specific difference in layout: systemd's directories are /usr/lib/systemd
# on rpm distributions (/lib is a symlink there). Lintian's overrides are not staged.
mv "$STAGE/lib/systemd" "$STAGE/usr/lib/systemd"
rmdir "$STAGE/lib"

# %files: every file; the directories that belong to this package alone; the conffile.
files() {
  echo '%defattr(-,root,root,-)'
  for d in /usr/lib/vwstream-agent /usr/lib/vwstream-agent/bin /etc/vwstream \
    /usr/share/doc/vwstream-agent /usr/lib/systemd/system/tailscaled.service.d; do
    echo "%dir $d"
  done
  (cd "$STAGE" && find . -type f -printf '/%P\n' | LC_ALL=C sort) | while read -r f; do
    case "$f" in
    /etc/vwstream/vwstream.env) echo "%attr(0600,root,root) %config(noreplace) $f" ;;
    /usr/share/doc/vwstream-agent/copyright) echo "%license $f" ;;
    /usr/share/doc/*) echo "%doc $f" ;;
    *) echo "$f" ;;
    esac
  done
}
# A maintainer script without its first line (#!/bin/sh): rpm gives /bin/sh (-p above).
body() { tail -n +2 "packaging/debian/$1"; }

mkdir -p "$TOP"/{SPECS,RPMS,BUILD,BUILDROOT,SOURCES,SRPMS} dist
SPEC=$TOP/SPECS/vwstream-agent.spec
# The changelog's date: the last commit's, as the .deb's changelog has it.
CHANGELOG_DATE=$(LC_ALL=C date -d "@$(git log -1 --format=%ct 2>/dev/null || date +%s)" '+%a %b %d %Y')
STAGE=$STAGE VERSION=$VERSION RPMARCH=$RPMARCH ZSTD_LEVEL=${RPM_ZSTD_LEVEL:-12} CHANGELOG_DATE=$CHANGELOG_DATE \
  SUMMARY=$(head -n1 packaging/description) DESCRIPTION=$(tail -n +2 packaging/description) \
  FILES=$(files) POSTINST=$(body postinst) PRERM=$(body prerm) POSTRM=$(body postrm) \
  perl -pe 's/\@(CHANGELOG_DATE|STAGE|VERSION|RPMARCH|ZSTD_LEVEL|SUMMARY|DESCRIPTION|FILES|POSTINST|PRERM|POSTRM)\@/$ENV{$1}/g' \
  packaging/rpm/vwstream-agent.spec.in >"$SPEC"

rm -f "$OUT"
rpmbuild -bb --quiet --target "$RPMARCH" \
  --define "_topdir $TOP" --define "_buildhost vwstream-build" \
  --define "source_date_epoch_from_changelog 0" \
  "$SPEC" >"$TOP/rpmbuild.log" 2>&1 || { tail -40 "$TOP/rpmbuild.log" >&2; exit 1; }
mv "$TOP/RPMS/$RPMARCH/vwstream-agent-${VERSION}-1.${RPMARCH}.rpm" "$OUT"
echo "built $OUT ($(du -h --apparent-size "$OUT" | cut -f1))"
