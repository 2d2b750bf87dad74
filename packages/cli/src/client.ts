// The one place the CLI talks HTTP: base URL, the bearer key, problem+json → ApiError, socket
// failures → NetworkError. Commands never call fetch themselves.
import { ApiError, EXIT, CliError, NetworkError, type Problem } from './errors.ts';

export interface ClientOptions {
  url: string;
  apiKey: string | undefined;
}

export interface RequestOptions {
  /** Sent as JSON with `content-type: application/json`. */
  json?: unknown;
  /** A raw body (a multipart stream, a form); set `headers['content-type']` with a stream. */
  body?: RequestInit['body'] | AsyncIterable<Uint8Array>;
  headers?: Record<string, string>;
  query?: Record<string, string | number | undefined>;
  signal?: AbortSignal;
}

export class ApiClient {
  readonly baseUrl: string;
  readonly #apiKey: string | undefined;

  constructor({ url, apiKey }: ClientOptions) {
    this.baseUrl = url.replace(/\/+$/, '');
    this.#apiKey = apiKey || undefined;
  }

  url(path: string, query: RequestOptions['query'] = {}): string {
    const url = new URL(this.baseUrl + path);
    for (const [name, value] of Object.entries(query)) {
      if (value !== undefined) url.searchParams.set(name, String(value));
    }
    return url.toString();
  }

  /** Sends a request and returns the response if its status is 2xx; throws otherwise. */
  async request(method: string, path: string, options: RequestOptions = {}): Promise<Response> {
    const headers: Record<string, string> = { accept: 'application/json, application/problem+json', ...options.headers };
    if (this.#apiKey) headers.authorization = `Bearer ${this.#apiKey}`;
    let body = options.body;
    if (options.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = JSON.stringify(options.json);
    }
    const url = this.url(path, options.query);
    // Node's fetch takes an async iterable body; the DOM typings the repo compiles against do not say so.
    const init: RequestInit & { duplex?: 'half' } = { method, headers, body: body as RequestInit['body'], signal: options.signal };
    // A streamed body (an upload) needs half-duplex: Node's fetch refuses it otherwise.
    if (body && typeof body === 'object' && Symbol.asyncIterator in body) init.duplex = 'half';
    let response: Response;
    try {
      response = await fetch(url, init);
    } catch (error) {
      if (options.signal?.aborted) throw error;
      throw new NetworkError(this.baseUrl, error);
    }
    if (!response.ok) throw await this.#problem(response);
    return response;
  }

  async json<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const response = await this.request(method, path, options);
    if (response.status === 204) return undefined as T;
    const text = await readText(response, this.baseUrl);
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new CliError(`${method} ${path}: the server answered ${response.status} with a body that is not JSON`, EXIT.internal);
    }
  }

  async #problem(response: Response): Promise<ApiError> {
    const text = await readText(response, this.baseUrl).catch(() => '');
    let problem: Problem;
    try {
      const parsed: unknown = JSON.parse(text);
      problem = parsed && typeof parsed === 'object' ? (parsed as Problem) : {};
    } catch {
      // Not the API (a proxy's HTML page, say): show the start of what came back.
      problem = { title: response.statusText || `HTTP ${response.status}`, detail: text.trim().slice(0, 200) || undefined };
    }
    const hint =
      response.status === 401 && !this.#apiKey ? 'no API key given: set FINETUNE_API_KEY or pass --api-key' : undefined;
    return new ApiError(response.status, problem, hint);
  }
}

async function readText(response: Response, baseUrl: string): Promise<string> {
  try {
    return await response.text();
  } catch (error) {
    throw new NetworkError(baseUrl, error);
  }
}
