// SQL text for the workbench: a tokenizer for highlighting, the words completion offers, and
// the `$n` / `$name` parameters a statement uses.

export const KEYWORDS = new Set(`
select from where group by order having limit offset join left right full inner outer cross
on using as and or not in is null like ilike between case when then else end distinct all
union intersect except with recursive over partition rows range preceding following unbounded
current row asc desc nulls first last exists any some cast interval true false date timestamp
time explain analyze show describe values filter within lateral natural at zone extract
system_time for of qualify window
`.trim().split(/\s+/));

export const FUNCTIONS = [
  'count', 'sum', 'avg', 'min', 'max', 'round', 'abs', 'coalesce', 'nullif', 'date_trunc',
  'date_part', 'to_timestamp', 'to_char', 'now', 'substr', 'substring', 'length', 'lower',
  'upper', 'trim', 'concat', 'replace', 'regexp_like', 'regexp_replace', 'split_part',
  'starts_with', 'row_number', 'rank', 'dense_rank', 'lag', 'lead', 'approx_distinct',
  'approx_percentile_cont', 'median', 'string_agg', 'array_agg', 'to_unixtime', 'strpos',
];

/**
 * Splits SQL into tokens that cover it exactly: `{type, text, start}` with type one of
 * keyword, function, ident, string, number, comment, param, op, space.
 */
export function tokenize(sql) {
  const tokens = [];
  let i = 0;
  const push = (type, end) => {
    tokens.push({ type, text: sql.slice(i, end), start: i });
    i = end;
  };
  while (i < sql.length) {
    const c = sql[i];
    const rest = sql.slice(i);
    let m;
    if (/\s/.test(c)) {
      m = /^\s+/.exec(rest);
      push('space', i + m[0].length);
    } else if (rest.startsWith('--')) {
      const end = sql.indexOf('\n', i);
      push('comment', end < 0 ? sql.length : end);
    } else if (rest.startsWith('/*')) {
      const end = sql.indexOf('*/', i + 2);
      push('comment', end < 0 ? sql.length : end + 2);
    } else if (c === "'") {
      let j = i + 1;
      while (j < sql.length) {
        if (sql[j] === "'" && sql[j + 1] === "'") j += 2;
        else if (sql[j] === "'") { j += 1; break; } else j += 1;
      }
      push('string', Math.min(j, sql.length));
    } else if (c === '"') {
      const end = sql.indexOf('"', i + 1);
      push('ident', end < 0 ? sql.length : end + 1);
    } else if ((m = /^\$(\d+|[A-Za-z_][A-Za-z0-9_]*)/.exec(rest))) {
      push('param', i + m[0].length);
    } else if ((m = /^\d+(\.\d+)?([eE][+-]?\d+)?/.exec(rest))) {
      push('number', i + m[0].length);
    } else if ((m = /^[\p{L}_][\p{L}\p{N}_]*/u.exec(rest))) {
      const word = m[0].toLowerCase();
      const after = sql.slice(i + m[0].length).trimStart();
      let type = 'ident';
      if (KEYWORDS.has(word)) type = 'keyword';
      else if (after.startsWith('(')) type = 'function';
      push(type, i + m[0].length);
    } else {
      push('op', i + 1);
    }
  }
  return tokens;
}

/** The parameters a statement uses, in order of first use: ['$1', '$2'] or ['$day']. */
export function parameters(sql) {
  const seen = [];
  for (const token of tokenize(sql)) {
    if (token.type === 'param' && !seen.includes(token.text)) seen.push(token.text);
  }
  return seen.sort((a, b) => {
    const [x, y] = [Number(a.slice(1)), Number(b.slice(1))];
    return Number.isNaN(x) || Number.isNaN(y) ? 0 : x - y;
  });
}

/**
 * What to offer at `cursor`: the word being typed and the candidates. After `schema.` only
 * that schema's tables; after `table.` (or an alias the statement gives it) its columns;
 * elsewhere tables, columns of the tables the statement names, keywords and functions.
 */
export function completions(sql, cursor, catalog) {
  const before = sql.slice(0, cursor);
  const m = /([\p{L}_][\p{L}\p{N}_]*)\.([\p{L}\p{N}_]*)$/u.exec(before) || null;
  const prefixMatch = /[\p{L}\p{N}_]*$/u.exec(before);
  const prefix = prefixMatch ? prefixMatch[0] : '';
  const lower = prefix.toLowerCase();
  const starts = (word) => word.toLowerCase().startsWith(lower) && word.toLowerCase() !== lower;
  if (m) {
    const qualifier = m[1].toLowerCase();
    if (catalog.schemas.has(qualifier)) {
      const tables = catalog.tables.filter((t) => t.schema === qualifier).map((t) => t.name);
      return { prefix, items: tables.filter(starts).map((text) => ({ text, kind: 'table' })) };
    }
    const table = tableFor(qualifier, sql, catalog);
    if (table) {
      return {
        prefix,
        items: table.columns.filter((c) => starts(c.name)).map((c) => ({ text: c.name, kind: c.type })),
      };
    }
    return { prefix, items: [] };
  }
  if (prefix === '') return { prefix, items: [] };
  const items = [];
  for (const table of namedTables(sql, catalog)) {
    for (const column of table.columns) {
      if (starts(column.name) && !items.some((i) => i.text === column.name)) {
        items.push({ text: column.name, kind: column.type });
      }
    }
  }
  for (const table of catalog.tables) {
    const full = `${table.schema}.${table.name}`;
    if (starts(full) || starts(table.name)) items.push({ text: full, kind: 'table' });
  }
  for (const word of KEYWORDS) if (starts(word)) items.push({ text: word.toUpperCase(), kind: 'keyword' });
  for (const word of FUNCTIONS) if (starts(word)) items.push({ text: `${word}(`, kind: 'function' });
  return { prefix, items: items.slice(0, 50) };
}

/** The tables a statement names after FROM or JOIN, with their aliases. */
function namedTables(sql, catalog) {
  const found = [];
  const pattern = /\b(?:from|join)\s+([\p{L}_][\p{L}\p{N}_]*)\.([\p{L}_][\p{L}\p{N}_]*)/giu;
  for (const match of sql.matchAll(pattern)) {
    const table = catalog.tables.find(
      (t) => t.schema === match[1].toLowerCase() && t.name === match[2].toLowerCase(),
    );
    if (table && !found.includes(table)) found.push(table);
  }
  return found;
}

function tableFor(qualifier, sql, catalog) {
  const direct = catalog.tables.find((t) => t.name === qualifier);
  const pattern = /\b(?:from|join)\s+([\p{L}_][\p{L}\p{N}_]*)\.([\p{L}_][\p{L}\p{N}_]*)(?:\s+as)?\s+([\p{L}_][\p{L}\p{N}_]*)/giu;
  for (const match of sql.matchAll(pattern)) {
    if (match[3].toLowerCase() === qualifier) {
      return catalog.tables.find(
        (t) => t.schema === match[1].toLowerCase() && t.name === match[2].toLowerCase(),
      );
    }
  }
  return direct || null;
}

/** The offset in `sql` of a 1-based line and column, as the hub reports error positions. */
export function offsetOf(sql, line, column) {
  const lines = sql.split('\n');
  let offset = 0;
  for (let i = 0; i < Math.min(line - 1, lines.length); i += 1) offset += lines[i].length + 1;
  return Math.min(offset + Math.max(column - 1, 0), sql.length);
}
