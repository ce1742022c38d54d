import assert from 'node:assert/strict';
import { test } from 'node:test';
import { drainBudget } from '../../agent/config/budget.ts';
import { backupLocalPaths, backupWritePaths, renderDropins, replicaWritePaths } from '../../agent/systemd/dropins.ts';

test('a directory replica other than the default is opened to the sandboxed agent and Litestream', () => {
  assert.equal(replicaWritePaths(undefined), '');
  assert.equal(replicaWritePaths('/var/backups/vwstream/replica'), '', 'in the static units');
  // Litestream's static unit does not open /var/lib/vwstream: an explicit path there needs it.
  assert.equal(replicaWritePaths('/var/lib/vwstream/replica'), 'ReadWritePaths=-/var/lib/vwstream/replica\n');
  assert.equal(replicaWritePaths('/srv/vault-replica'), 'ReadWritePaths=-/srv/vault-replica\n');
  assert.equal(replicaWritePaths('/mnt/usb disk/replica'), 'ReadWritePaths="-/mnt/usb disk/replica"\n');
  const files = renderDropins(drainBudget(300_000, { litestreamShutdownMs: 60_000, syncShutdownMs: 60_000 }), 300_000, undefined, undefined, '/srv/vault-replica');
  assert.match(files['vwstream-agent.service.d/50-vwstream.conf']!, /^ReadWritePaths=-\/srv\/vault-replica$/m);
  assert.match(files['vwstream-litestream.service.d/50-vwstream.conf']!, /^ReadWritePaths=-\/srv\/vault-replica$/m);
  assert.doesNotMatch(files['vwstream-vaultwarden.service.d/50-vwstream.conf']!, /ReadWritePaths/);
});

test('the backup unit may write the local rclone destinations of BACKUP_REMOTES, nothing else', () => {
  const env = {
    RCLONE_CONFIG_LOCALBK_TYPE: 'local',
    RCLONE_CONFIG_VAULTCRYPT_TYPE: 'crypt', RCLONE_CONFIG_VAULTCRYPT_REMOTE: '/var/backups/vw-crypt',
    RCLONE_CONFIG_OFFSITE_TYPE: 'crypt', RCLONE_CONFIG_OFFSITE_REMOTE: 'S3:bucket/enc',
    RCLONE_CONFIG_USB_TYPE: 'alias', RCLONE_CONFIG_USB_REMOTE: '/mnt/usb',
    RCLONE_CONFIG_MY_DISK_TYPE: 'local',
  };
  assert.deepEqual(
    backupLocalPaths(['LOCALBK:/var/backups/vw', 'S3:vault-backups/archives', 'vaultcrypt:archives', 'offsite:x', 'usb:vault/../vw', '/srv/plain/', 'my-disk:/data/bk', 'LOCALBK:relative', 'unknown:/x', '/'], env),
    ['/data/bk', '/mnt/usb/vw', '/srv/plain', '/var/backups/vw', '/var/backups/vw-crypt'],
  );
  assert.equal(backupWritePaths([]), '');
  assert.equal(backupWritePaths(['/var/backups/vw', '/mnt/usb disk']),
    'ExecStartPre=+/bin/mkdir -p -m 0700 /var/backups/vw\nExecStartPre=+/bin/mkdir -p -m 0700 "/mnt/usb disk"\nReadWritePaths=-/var/backups/vw "-/mnt/usb disk"\n');
  const files = renderDropins(drainBudget(300_000, { litestreamShutdownMs: 60_000, syncShutdownMs: 60_000 }), 300_000, '0 3 * * *', undefined, undefined, ['/var/backups/vw']);
  assert.match(files['vwstream-backup.service.d/50-vwstream.conf']!, /^ReadWritePaths=-\/var\/backups\/vw$/m);
});
