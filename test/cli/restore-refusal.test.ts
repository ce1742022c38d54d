import assert from 'node:assert/strict';
import { test } from 'node:test';
import { writerRefusal } from '../../agent/cli/restore.ts';
import { EXIT } from '../../agent/errors.ts';

// restore (--force, --backup, or over an empty vault) refuses while a writer runs without the agent.
const VW = 'vwstream-vaultwarden.service';
const LS = 'vwstream-litestream.service';

test('no writer running: no refusal', () => {
  assert.equal(writerRefusal([{ unit: VW, activeState: 'inactive' }, { unit: LS, activeState: 'failed' }]), undefined);
});

test('a running, starting, stopping or reloading writer: one line naming it and the command, exit 1', () => {
  for (const st of ['active', 'activating', 'deactivating', 'reloading']) {
    const e = writerRefusal([{ unit: VW, activeState: 'inactive' }, { unit: LS, activeState: st }]);
    assert.ok(e, st);
    assert.equal(e.message, `${LS} is ${st} without vwstream-agent; nothing was restored; stop it first: systemctl stop ${LS}`);
    assert.equal(e.hint, undefined, 'one line: the command is in the message');
    assert.equal(e.exitCode, EXIT.FAILED);
    assert.ok(!e.message.includes('\n'));
  }
});

test('both running: Vaultwarden (the one writing the database) is named first', () => {
  const e = writerRefusal([{ unit: VW, activeState: 'active' }, { unit: LS, activeState: 'active' }]);
  assert.match(e!.message, /^vwstream-vaultwarden\.service is active /);
});
