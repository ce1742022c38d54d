/**
 * Env-file corpora shared by test/config/envfile.test.ts (against bash) and
 * test/system/envfile.test.ts (against systemd's EnvironmentFile=).
 */

/** Values formatEnvValue must write so that systemd and bash read them back byte for byte. */
export const VALUES: Record<string, string> = {
  V_PLAIN: 'plain',
  V_QUOTES: `with "double" and 'single' quotes`,
  V_BACKSLASH: 'back\\slash \\n \\\\ \\" \\$ \\q end\\',
  V_DOLLAR: 'dollar $HOME ${X} $(id) $ $1',
  V_BACKQUOTE: 'back`tick` `id` `',
  V_HASH: 'hash # not a comment',
  V_LEADING_HASH: '#leading hash',
  V_SPACES: '  leading and trailing  ',
  V_ONLY_SPACE: ' ',
  V_EMPTY: '',
  V_TAB: '\ttab\there\t',
  V_NEWLINES: 'first\nsecond\n\nfourth\n',
  V_LEADING_NEWLINE: '\nstarts with a newline',
  V_UNICODE: 'grüße ✓ 🔐 日本語',
  V_SEMICOLON: ';semi; colon & amp | pipe < > ( )',
  V_EQUALS: 'a=b=c',
  V_MIXED: `p@$$w0rd!"'\`\\\n#;~ end`,
};

/**
 * A hand-written file in the forms operators write, where bash and systemd agree: the
 * parser must read exactly `CORPUS_EXPECTED` and warn about nothing.
 */
export const CORPUS_FILE = [
  '# a comment',
  '   # an indented comment',
  '',
  'PLAIN=hello',
  '  INDENTED=value',
  "SQ='single $HOME `x` \"dq\" \\ back \\n'",
  "SQ_MULTI='line one",
  "  line two'",
  'DQ="dq \\$HOME \\`cmd\\` \\"quoted\\" back\\\\slash \\q kept \\n"',
  'DQ_MULTI="first',
  'second"',
  'DQ_CONT="joined \\',
  'line"',
  'UNQ_ESC=a\\ b\\#c\\$d\\"e',
  'UNQ_CONT=abc\\',
  'def',
  'UNQ_TRAIL=trailing   ',
  'HASH=a#b',
  'EMPTY=',
  'EMPTY_DQ=""',
  'EMPTY_SQ=\'\'',
  'LEAD_SP="  lead and trail  "',
  'TAB="tab\tinside"',
  'UNICODE="grüße ✓ 🔐"',
  'UNICODE_UNQ=grüße',
  'JOIN="a"\'b\'"c"',
  'JOIN_UNQ="a b"c',
  'SQ_IN_DQ="it\'s"',
  'DQ_IN_SQ=\'he said "hi"\'',
  'ARGON=\'$argon2id$v=19$m=65540,t=3,p=4$bXBh$Yd1tq\'',
  'URLQ="https://vault.example.com/a?x=1&y=2"',
  'PLAIN="second wins"',
  '',
].join('\n');

export const CORPUS_EXPECTED: Record<string, string> = {
  PLAIN: 'second wins',
  INDENTED: 'value',
  SQ: 'single $HOME `x` "dq" \\ back \\n',
  SQ_MULTI: 'line one\n  line two',
  DQ: 'dq $HOME `cmd` "quoted" back\\slash \\q kept \\n',
  DQ_MULTI: 'first\nsecond',
  DQ_CONT: 'joined line',
  UNQ_ESC: 'a b#c$d"e',
  UNQ_CONT: 'abcdef',
  UNQ_TRAIL: 'trailing',
  HASH: 'a#b',
  EMPTY: '',
  EMPTY_DQ: '',
  EMPTY_SQ: '',
  LEAD_SP: '  lead and trail  ',
  TAB: 'tab\tinside',
  UNICODE: 'grüße ✓ 🔐',
  UNICODE_UNQ: 'grüße',
  JOIN: 'abc',
  JOIN_UNQ: 'a bc',
  SQ_IN_DQ: "it's",
  DQ_IN_SQ: 'he said "hi"',
  ARGON: '$argon2id$v=19$m=65540,t=3,p=4$bXBh$Yd1tq',
  URLQ: 'https://vault.example.com/a?x=1&y=2',
};

/**
 * Lines systemd reads differently from bash, with the agent's reading and systemd's
 * (the system test checks the latter on a real host).
 */
export const SYSTEMD_DIVERGENT: { name: string; text: string; key: string; agent: string | undefined; systemd: string | undefined }[] = [
  { name: 'unquoted value with a comment', text: 'D_COMMENT=value # note\n', key: 'D_COMMENT', agent: 'value', systemd: 'value # note' },
  { name: 'comment after a closing quote', text: 'D_QCOMMENT="x" # note\n', key: 'D_QCOMMENT', agent: 'x', systemd: 'x# note' },
  { name: 'comment ending in a backslash', text: '# note \\\nD_AFTER=1\n', key: 'D_AFTER', agent: '1', systemd: undefined },
  { name: 'export prefix', text: 'export D_EXPORT=1\n', key: 'D_EXPORT', agent: '1', systemd: undefined },
  { name: 'unquoted $ is literal', text: 'D_DOLLAR=a$HOME\n', key: 'D_DOLLAR', agent: 'a$HOME', systemd: 'a$HOME' },
  { name: 'quotes in an unquoted value', text: 'D_MIDQ=a"b c"d\n', key: 'D_MIDQ', agent: 'a"b c"d', systemd: 'a"b c"d' },
];
