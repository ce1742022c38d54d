import assert from 'node:assert/strict';
import { test } from 'node:test';
import { drainBudget } from '../../agent/daemon/budget.ts';
import { renderDropins, replicaWritePaths } from '../../agent/systemd/dropins.ts';

test('a directory replica outside /var/lib/vwstream is opened to the sandboxed agent and Litestream', () => {
  assert.equal(replicaWritePaths(undefined), '');
  assert.equal(replicaWritePaths('/var/lib/vwstream/replica'), '');
  assert.equal(replicaWritePaths('/srv/vault-replica'), 'ReadWritePaths=-/srv/vault-replica\n');
  assert.equal(replicaWritePaths('/mnt/usb disk/replica'), 'ReadWritePaths="-/mnt/usb disk/replica"\n');
  const files = renderDropins(drainBudget(300_000, { litestreamShutdownMs: 60_000, syncShutdownMs: 60_000 }), 300_000, undefined, undefined, '/srv/vault-replica');
  assert.match(files['vwstream-agent.service.d/50-vwstream.conf']!, /^ReadWritePaths=-\/srv\/vault-replica$/m);
  assert.match(files['vwstream-litestream.service.d/50-vwstream.conf']!, /^ReadWritePaths=-\/srv\/vault-replica$/m);
  assert.doesNotMatch(files['vwstream-vaultwarden.service.d/50-vwstream.conf']!, /ReadWritePaths/);
});
