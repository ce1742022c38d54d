import assert from 'node:assert/strict';
import { test } from 'node:test';
import { UnitSupervisor } from '../../agent/daemon/units.ts';
import type { Clock, SystemdPort } from '../../agent/daemon/ports.ts';
import type { UnitState } from '../../agent/systemd/dbus.ts';

const clock: Clock = { now: () => 0, sleep: async () => undefined };
const st = (activeState: string, result = 'success'): UnitState => ({ activeState, subState: activeState === 'active' ? 'running' : 'dead', result, execMainStatus: activeState === 'active' ? 0 : 1 });

test('poll: both units in one states() call; a unit it does not answer for, or a failing call, falls back to state()', async () => {
  const calls: string[] = [];
  let failStates = false;
  const port = {
    states: async (units: readonly string[]) => {
      calls.push(`states ${units.join(',')}`);
      if (failStates) throw new Error('D-Bus timeout');
      return new Map([['a.service', st('active')]]);
    },
    state: async (u: string) => { calls.push(`state ${u}`); return st('active'); },
  } as unknown as SystemdPort;
  const sup = new UnitSupervisor({ systemd: port, clock, alive: async () => true, aliveUrl: 'http://x/alive' });
  const opts = { excused: () => false, signal: new AbortController().signal, onDown: async () => assert.fail('nothing is down'), onBack: async () => undefined };
  await sup.poll(['a.service', 'b.service'], opts);
  assert.deepEqual(calls, ['states a.service,b.service', 'state b.service']);
  calls.length = 0;
  failStates = true;
  await sup.refresh(['a.service', 'b.service']);
  assert.deepEqual(calls, ['states a.service,b.service', 'state a.service', 'state b.service']);
});

test('poll: a unit found down through states() is restarted, its outcome described', async () => {
  const started: string[] = [];
  const down: string[] = [];
  let up = false;
  const port = {
    states: async () => new Map([['a.service', st('active')], ['b.service', up ? st('active') : st('failed', 'exit-code')]]),
    state: async () => st('active'),
    start: async (u: string) => { started.push(u); up = true; return 'done'; },
  } as unknown as SystemdPort;
  const sup = new UnitSupervisor({ systemd: port, clock, alive: async () => true, aliveUrl: 'http://x/alive' });
  await sup.poll(['a.service', 'b.service'], { excused: () => false, signal: new AbortController().signal, onDown: async (_u, what) => { down.push(what); }, onBack: async () => undefined });
  assert.deepEqual(started, ['b.service']);
  assert.deepEqual(down, ['b.service failed/dead (result exit-code, exit status 1)']);
});
