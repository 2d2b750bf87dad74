// The API client: every call sends the signed-in key as a bearer token. The key lives in
// sessionStorage (gone when the tab closes), never in a cookie, so no other site can use it.

const KEY = 'finetune.apiKey';
let onUnauthorized = () => {};

export const session = {
  get key() {
    return sessionStorage.getItem(KEY);
  },
  signIn(key) {
    sessionStorage.setItem(KEY, key);
  },
  signOut() {
    sessionStorage.removeItem(KEY);
  },
  /** Called when a request is refused with 401 (the key was revoked, say). */
  onUnauthorized(handler) {
    onUnauthorized = handler;
  },
};

/** An application/problem+json answer (RFC 9457): `code`, `detail`, and for validation errors
 * `errors: [{path, message}]`. */
export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.code = problem.code ?? `http_${status}`;
    this.errors = Array.isArray(problem.errors) ? problem.errors : [];
    this.problem = problem;
  }
}

async function problemOf(res) {
  let problem = {};
  try {
    problem = await res.json();
  } catch {
    // not JSON: a proxy's error page, say
  }
  return new ApiError(res.status, problem);
}

function authHeaders(key = session.key) {
  return key ? { authorization: `Bearer ${key}` } : {};
}

function refused(error, key) {
  // Only the key in use: a wrong key typed into the sign-in form is reported there.
  if (error.status === 401 && key === session.key) onUnauthorized(error);
  return error;
}

/**
 * A call to the API. `json` is sent as a JSON body, `body` as is (FormData). Answers the parsed
 * JSON, null for 204, or the Response itself for other types (downloads, images).
 */
export async function api(method, path, { json, body, headers = {}, key = session.key, signal } = {}) {
  const res = await fetch(path, {
    method,
    headers: { ...authHeaders(key), ...(json === undefined ? {} : { 'content-type': 'application/json' }), ...headers },
    body: json === undefined ? body : JSON.stringify(json),
    signal,
  });
  if (!res.ok) throw refused(await problemOf(res), key);
  if (res.status === 204) return null;
  return (res.headers.get('content-type') ?? '').includes('json') ? res.json() : res;
}

/** A GET answered as a Blob (an image, a zip). */
export async function apiBlob(path, options = {}) {
  const res = await api('GET', path, options);
  return res.blob();
}

/** POST of a FormData with upload progress (fetch cannot report it): `onProgress(0..1)`. */
export function upload(path, form, onProgress) {
  const key = session.key;
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', path);
    for (const [name, value] of Object.entries(authHeaders(key))) xhr.setRequestHeader(name, value);
    xhr.responseType = 'json';
    xhr.upload.addEventListener('progress', (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    });
    xhr.addEventListener('load', () => {
      if (xhr.status >= 200 && xhr.status < 300) resolve(xhr.response);
      else reject(refused(new ApiError(xhr.status, xhr.response ?? {}), key));
    });
    xhr.addEventListener('error', () => reject(new ApiError(0, { detail: 'the upload failed: network error' })));
    xhr.send(form);
  });
}

/** Saves a blob as a file the browser downloads. */
export function saveBlob(blob, filename) {
  const url = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** Runs at most `n` of the given async tasks at once (thumbnails: one request each). */
export function limiter(n) {
  let active = 0;
  const waiting = [];
  const next = () => {
    if (active >= n || waiting.length === 0) return;
    active++;
    const { task, resolve, reject } = waiting.shift();
    task().then(resolve, reject).finally(() => {
      active--;
      next();
    });
  };
  return (task) =>
    new Promise((resolve, reject) => {
      waiting.push({ task, resolve, reject });
      next();
    });
}
