// The store behind a running `oxiflow serve`, over fetch (Node 18+ and
// browsers): its raw object API is the same conditional primitive as S3 —
// GET /v1/objects/<key> answers the ETag, PUT takes If-None-Match: * or
// If-Match: <etag> (412 when the condition fails), GET /v1/keys?prefix=
// lists keys with their versions — behind `Authorization: Bearer <token>`.
// The core decides every document; the service only stores them.
import { State } from "./state.mjs";

const GENERATION = "x-oxiflow-generation";

export class ServeStore {
  /**
   * @param {{url: string, token: string, fetch?: typeof fetch, timeoutMs?: number}} options
   * `url`: where `oxiflow serve` listens (`http://host:port`); `token`: its
   * bearer token (OXIFLOW_SERVE_TOKEN); `timeoutMs`: per request (30 s).
   */
  constructor({ url, token, fetch: f, timeoutMs = 30_000 }) {
    if (!/^https?:\/\//.test(url ?? "")) throw new TypeError("ServeStore: `url` must start with http:// or https://");
    this.base = url.replace(/\/+$/, "");
    this.token = token;
    this.fetch = f ?? globalThis.fetch.bind(globalThis);
    this.timeoutMs = timeoutMs;
    /** Store requests made (GET, PUT, LIST). */
    this.requests = 0;
  }

  #request(path, init = {}) {
    const headers = { ...init.headers, ...(this.token && { authorization: `Bearer ${this.token}` }) };
    return this.fetch(`${this.base}${path}`, { ...init, headers, signal: AbortSignal.timeout(this.timeoutMs) });
  }

  /** A failure that retrying will not fix (wrong token, a refused request): thrown, not retried. */
  async #refused(response, what) {
    let message = await response.text().catch(() => "");
    try {
      message = JSON.parse(message).error?.message ?? message;
    } catch {
      // not the service's JSON error shape: keep the text
    }
    const e = new Error(`oxiflow serve ${this.base}: ${what}: ${response.status} ${message}`.slice(0, 600));
    e.status = response.status;
    return e;
  }

  static #version(headers) {
    return { e_tag: headers.get("etag"), version: headers.get(GENERATION) };
  }

  /** One store request for the core; returns [response, bytes]. */
  async perform(send, body) {
    this.requests++;
    const key = (send.get ?? send.put_if_absent ?? send.put_if_match).key;
    const path = `/v1/objects/${encodeURI(key)}`;
    let response;
    try {
      if (send.get) {
        response = await this.#request(path);
      } else {
        const headers = send.put_if_absent ? { "if-none-match": "*" } : {
          ...(send.put_if_match.version.e_tag != null && { "if-match": send.put_if_match.version.e_tag }),
          ...(send.put_if_match.version.version != null && { [GENERATION]: send.put_if_match.version.version }),
        };
        response = await this.#request(path, { method: "PUT", headers, body });
      }
    } catch (e) {
      return [{ unavailable: { reason: `${e.name}: ${e.message}` } }, null];
    }
    const status = response.status;
    if (send.get) {
      if (status === 404) return [{ object: null }, null];
      if (response.ok) {
        try {
          return [{ object: { version: ServeStore.#version(response.headers) } }, new Uint8Array(await response.arrayBuffer())];
        } catch (e) {
          return [{ unavailable: { reason: `${e.name}: ${e.message}` } }, null];
        }
      }
    } else {
      if (response.ok) return [{ written: ServeStore.#version(response.headers) }, null];
      if (status === 412) return [send.put_if_absent ? "already_exists" : "precondition", null];
    }
    if (status >= 500 || status === 429 || status === 408) {
      return [{ unavailable: { reason: `${status} ${(await response.text().catch(() => "")).slice(0, 400)}` } }, null];
    }
    throw await this.#refused(response, send.get ? `GET ${key}` : `PUT ${key}`);
  }

  /** Every key under `prefix` with its version (GET /v1/keys). */
  async list(prefix) {
    this.requests++;
    const response = await this.#request(`/v1/keys?prefix=${encodeURIComponent(prefix)}`);
    if (!response.ok) throw await this.#refused(response, `list ${prefix}`);
    return await response.json();
  }
}

/** Pipeline state through `oxiflow serve`: `new ServeState({url, token, config})`. */
export class ServeState extends State {
  constructor({ url, token, fetch, timeoutMs, config }) {
    super({ store: new ServeStore({ url, token, fetch, timeoutMs }), config });
  }
}

export { State, Holding, StateError, core } from "./state.mjs";
