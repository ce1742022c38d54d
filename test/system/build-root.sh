#!/usr/bin/env bash
# Builds (once) the cached Debian 12 root that system-test hosts boot from, as a tarball.
# The package's Debian runtime dependencies are pre-installed so that `apt-get install
# ./vwstream-agent_*.deb` inside a host resolves them from the local cache in seconds.
set -euo pipefail
CACHE=${VWS_TEST_CACHE:-/var/cache/vwstream-test}
OUT="$CACHE/bookworm-root.tar"
# Bump when the package list changes so a stale cache is rebuilt.
STAMP="v1:systemd,systemd-sysv,dbus,ca-certificates,curl,sqlite3,openssl,procps,rclone,less,iproute2"
if [[ -f "$OUT" && "$(cat "$OUT.stamp" 2>/dev/null)" == "$STAMP" ]]; then exit 0; fi
mkdir -p "$CACHE"
WORK=$(mktemp -d "$CACHE/root.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
echo "building Debian 12 test root in $WORK (about a minute)" >&2
debootstrap --variant=minbase \
  --include="${STAMP#*:}" \
  bookworm "$WORK/root" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1 \
  || { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
mkdir -p "$WORK/root/var/log/journal"
# No getty on a container console; keep boots quiet and quick.
chroot "$WORK/root" systemctl mask console-getty.service getty@.service systemd-resolved.service >/dev/null 2>&1 || true
echo 'vws-test' > "$WORK/root/etc/hostname"
rm -f "$WORK/root/etc/machine-id"; : > "$WORK/root/etc/machine-id"
chroot "$WORK/root" apt-get clean
tar -C "$WORK/root" -cf "$OUT.tmp" .
mv "$OUT.tmp" "$OUT"
echo "$STAMP" > "$OUT.stamp"
