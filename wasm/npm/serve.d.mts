// Types of ./serve.mjs: the store behind `oxiflow serve`, over fetch.
import { State, type Store } from "./state.mjs";
import type { StoreRequest, StoreResponse, StoreVersion, CoreConfig } from "./core/index.mjs";

export interface ServeOptions {
  /** Where `oxiflow serve` listens: `http://host:port`. */
  url: string;
  /** Its bearer token (OXIFLOW_SERVE_TOKEN). */
  token: string;
  fetch?: typeof fetch;
  /** Per request; default 30 s. */
  timeoutMs?: number;
}

export class ServeStore implements Store {
  constructor(options: ServeOptions);
  base: string;
  requests: number;
  perform(send: StoreRequest, body?: Uint8Array | null): Promise<[StoreResponse, Uint8Array | null]>;
  list(prefix: string): Promise<{ key: string; version?: StoreVersion | null }[]>;
}

export class ServeState extends State {
  constructor(options: ServeOptions & { config?: CoreConfig });
}

export { State, Holding, StateError, core } from "./state.mjs";
