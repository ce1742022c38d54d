import type { Config } from '../config/config.ts';

/**
 * Which parts of Vaultwarden's data folder the mirror covers (contract behaviour 3),
 * as relative paths. The database is Litestream's, never the mirror's.
 */
export interface Scope { dirs: string[]; rootFiles: (name: string) => boolean }

export function scopeOf(inc: Config['syncInclude']): Scope {
  const dirs = [
    ...(inc.attachments ? ['attachments'] : []),
    ...(inc.sends ? ['sends'] : []),
    ...(inc.iconCache ? ['icon_cache'] : []),
  ];
  return {
    dirs,
    rootFiles: (name) => (inc.config && name === 'config.json') || (inc.rsaKey && /^rsa_key/.test(name)),
  };
}

/** True when a path relative to the data folder belongs to the mirror. */
export function inScope(scope: Scope, rel: string): boolean {
  if (rel === '' || rel.startsWith('/') || rel.split('/').includes('..')) return false;
  const slash = rel.indexOf('/');
  if (slash < 0) return scope.rootFiles(rel);
  return scope.dirs.includes(rel.slice(0, slash));
}

/** The top-level group a path belongs to, for the no-mass-delete guard. */
export function groupOf(rel: string): string {
  const slash = rel.indexOf('/');
  return slash < 0 ? '(root files)' : rel.slice(0, slash);
}
