// The console's only way to the hub: the public HTTP API under /api/v1, with the signed-in
// token in the Authorization header. The token lives in sessionStorage (gone when the tab
// closes) and never in a URL, so it cannot leak through history, logs or Referer.

const TOKEN_KEY = 'cityhub.token';

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function keepToken(value) {
  sessionStorage.setItem(TOKEN_KEY, value);
}

export function forgetToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** An error answer of the hub: its status, code, message and (for SQL) position. */
export class ApiError extends Error {
  constructor(status, code, message, position) {
    super(message);
    this.status = status;
    this.code = code;
    this.position = position || null;
  }
}

const listeners = new Set();
/** Called with every ApiError with status 401: the token was revoked or expired. */
export function onUnauthorized(listener) {
  listeners.add(listener);
}

function headers(extra) {
  const all = { ...extra };
  const current = token();
  if (current) all.Authorization = `Bearer ${current}`;
  return all;
}

async function failure(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy's page): the status says enough.
  }
  const error = body && body.error;
  const failed = new ApiError(
    response.status,
    error ? error.code : `http_${response.status}`,
    error ? error.message : `${response.status} ${response.statusText}`,
    body && body.position,
  );
  if (response.status === 401) listeners.forEach((listener) => listener(failed));
  return failed;
}

/** A JSON call: `api('/datasets')`, `api('/share-requests/3/approve', {method: 'POST', body})`. */
export async function api(path, { method = 'GET', body, signal } = {}) {
  const init = { method, signal, headers: headers({ Accept: 'application/json' }) };
  if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers['Content-Type'] = 'application/json';
  }
  const response = await fetch(`/api/v1${path}`, init);
  if (!response.ok) throw await failure(response);
  return response.status === 204 ? null : response.json();
}

/** A path with its query string: query('/audit', {principal: 'x', dataset: ''}). */
export function query(path, params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(key, value);
  }
  const text = search.toString();
  return text ? `${path}?${text}` : path;
}

/** A response body as UTF-8 text, chunk by chunk as it arrives. */
async function* textChunks(response) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    yield decoder.decode(value, { stream: true });
  }
}

/**
 * Runs SQL and hands the rows over as they arrive (NDJSON, streamed), so the first rows show
 * while the rest is still coming. `onColumns(names, masked)` comes first, then `onRows(rows)`
 * with arrays of values in column order. Aborting `signal` cancels the query on the hub.
 */
export async function sqlRows(sql, params, { signal, onColumns, onRows }) {
  const response = await fetch('/api/v1/sql', {
    method: 'POST',
    signal,
    headers: headers({ 'Content-Type': 'application/json', Accept: 'application/x-ndjson' }),
    body: JSON.stringify({ sql, params }),
  });
  if (!response.ok) throw await failure(response);
  const header = response.headers.get('x-cityhub-columns') || '';
  const columns = header === '' ? [] : header.split(',').map(decodeURIComponent);
  const maskedHeader = response.headers.get('x-cityhub-masked-columns') || '';
  const masked = new Set(maskedHeader === '' ? [] : maskedHeader.split(',').map(Number));
  onColumns(columns, masked);
  let pending = '';
  for await (const text of textChunks(response)) {
    pending += text;
    const end = pending.lastIndexOf('\n');
    if (end < 0) continue;
    const lines = pending.slice(0, end).split('\n');
    pending = pending.slice(end + 1);
    const rows = [];
    for (const line of lines) {
      if (line === '') continue;
      const object = JSON.parse(line);
      rows.push(columns.map((name) => object[name]));
    }
    onRows(rows);
  }
  if (pending.trim() !== '') {
    const object = JSON.parse(pending);
    onRows([columns.map((name) => object[name])]);
  }
}

/** The same query's whole answer in another format (CSV, Parquet), for a download. */
export async function sqlBlob(sql, params, accept, signal) {
  const response = await fetch('/api/v1/sql', {
    method: 'POST',
    signal,
    headers: headers({ 'Content-Type': 'application/json', Accept: accept }),
    body: JSON.stringify({ sql, params }),
  });
  if (!response.ok) throw await failure(response);
  return response.blob();
}

/**
 * Server-sent events read with fetch, because EventSource cannot send an Authorization
 * header and the token must not go into the URL. Calls `onEvent({event, data})` for each
 * event until `signal` aborts; reconnects after a dropped connection, waiting longer each
 * time (1 s to 30 s).
 */
export async function events(path, onEvent, signal, onState = () => {}) {
  let wait = 1000;
  while (!signal.aborted) {
    try {
      const response = await fetch(`/api/v1${path}`, {
        signal,
        headers: headers({ Accept: 'text/event-stream' }),
      });
      if (!response.ok) throw await failure(response);
      onState('open');
      wait = 1000;
      let pending = '';
      for await (const text of textChunks(response)) {
        pending += text.replace(/\r\n/g, '\n');
        let boundary;
        while ((boundary = pending.indexOf('\n\n')) >= 0) {
          const block = pending.slice(0, boundary);
          pending = pending.slice(boundary + 2);
          let event = 'message';
          const data = [];
          for (const line of block.split('\n')) {
            if (line.startsWith(':')) continue;
            const colon = line.indexOf(':');
            const field = colon < 0 ? line : line.slice(0, colon);
            const text = colon < 0 ? '' : line.slice(colon + 1).replace(/^ /, '');
            if (field === 'event') event = text;
            if (field === 'data') data.push(text);
          }
          if (data.length > 0) onEvent({ event, data: data.join('\n') });
        }
      }
    } catch (error) {
      if (signal.aborted) return;
      if (error instanceof ApiError && error.status !== 429 && error.status < 500) {
        onState('failed', error);
        return;
      }
      onState('retrying', error);
    }
    if (signal.aborted) return;
    await new Promise((resolve) => setTimeout(resolve, wait));
    wait = Math.min(wait * 2, 30_000);
  }
}
