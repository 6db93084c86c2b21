// fetch() helpers for /admin/api/*: JSON in and out, the session cookie travels by itself
// (same origin), a 401 sends the browser to the login page, errors become ApiError with
// the server's { error: { code, message } }.

const BASE = '/admin/api/';

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** True for the rejection of a fetch whose page was left (AbortController). */
export const isAbort = (err) => err?.name === 'AbortError';

async function request(method, path, body, signal) {
  const headers = { Accept: 'application/json' };
  const init = { method, headers, credentials: 'same-origin', cache: 'no-store', signal };
  if (method !== 'GET') {
    // The server answers 415 to a mutating call without it (CSRF defence), even without a body.
    headers['Content-Type'] = 'application/json';
    if (body !== undefined) init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(BASE + path, init);
  } catch (err) {
    if (isAbort(err)) throw err;
    throw new ApiError(0, 'NETWORK_ERROR', 'The gateway did not answer');
  }
  if (res.status === 401) {
    location.assign('/admin/login');
    throw new ApiError(401, 'AUTHENTICATION_ERROR', 'The session has expired');
  }
  if (res.status === 204) return null;
  const text = await res.text();
  let data = null;
  if (text) {
    try {
      data = JSON.parse(text);
    } catch {
      if (res.ok) throw new ApiError(res.status, 'BAD_RESPONSE', 'The server sent something that is not JSON');
    }
  }
  if (!res.ok) {
    const err = data?.error;
    throw new ApiError(res.status, err?.code ?? `HTTP_${res.status}`, err?.message ?? (res.statusText || 'Request failed'));
  }
  return data;
}

export const get = (path, signal) => request('GET', path, undefined, signal);
export const post = (path, body, signal) => request('POST', path, body, signal);
export const del = (path, signal) => request('DELETE', path, undefined, signal);

/** One path segment (a topic like `job:42` or a connection id). */
export const seg = (value) => encodeURIComponent(value);

/** `?a=1&b=2`, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const s = q.toString();
  return s ? `?${s}` : '';
}
