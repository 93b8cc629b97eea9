// Types of ./state.mjs: the store-agnostic driver of the core.
import core from "./core/index.mjs";
import type { CoreError, PartitionDoc, Schedule, StoreRequest, StoreResponse, StoreVersion, Progress, Adoption, Lease, StopRequest } from "./core/index.mjs";

export { core };

/** What performs the core's requests: S3Store, ServeStore, or your own conditional store. */
export interface Store {
  /** One request: GET (answer `{object: {version}}` with the bytes, or `{object: null}`), PUT If-None-Match: * or PUT If-Match. Throw only for what no retry fixes (access denied). */
  perform(send: StoreRequest, body?: Uint8Array | null): Promise<[StoreResponse, Uint8Array | null]>;
  /** Every key under `prefix` with its version as a GET would return it, when the listing has one. */
  list(prefix: string): Promise<{ key: string; version?: StoreVersion | null }[]>;
  /** Requests made so far. */
  requests: number;
}

/** A typed failure from the core: `kind` is the core's error name. */
export class StateError extends Error {
  constructor(detail: CoreError);
  kind: string;
  detail: CoreError & Record<string, any>;
}

export function coreError(e: unknown): unknown;
export function call<T>(f: () => T): T;
export function randomId(): number;

/** A clock: milliseconds since the epoch. */
export type Clock = () => number;

export interface Cached { doc: PartitionDoc; version: StoreVersion }

export class State {
  constructor(options: { store: Store; config?: object });
  store: Store;
  /** The config as given (`CoreConfig`), or {}. */
  settings: object;
  /** The config as JSON for the core, or undefined (its defaults). */
  config: string | undefined;
  readonly requests: number;
  claim(pipeline: string, step: string, workerId: string, now?: Clock, cached?: Cached | null, adopt?: Adoption | null, until?: number | null): Promise<Holding>;
  readPipeline(pipeline: string): Promise<string>;
  readPartition(pipeline: string, partition: string): Promise<{ key: string; doc: PartitionDoc; version: StoreVersion; json: string } | null>;
  read(pipeline: string): Promise<{ pipeline: string; partitions: { key: string; version: StoreVersion; json: string }[] }>;
  schedule(pipeline: string, workerId?: string | null, now?: Clock): Promise<{ pipelineJson: string; docs: { key: string; version: StoreVersion; json: string }[]; schedule: Schedule }>;
  next(pipeline: string, workerId: string, now?: Clock, until?: number | null): Promise<{ held: Holding } | { held: null; finished: boolean; schedule: Schedule }>;
}

export class Holding {
  key: string;
  doc: PartitionDoc;
  version: StoreVersion;
  stopped: StopRequest | null;
  readonly partition: string;
  readonly lease: Lease | undefined;
  readonly released: boolean;
  trusts(now?: Clock): boolean;
  checkpoint(progress: Progress, now?: Clock): Promise<PartitionDoc>;
  heartbeat(now?: Clock): Promise<PartitionDoc>;
  complete(progress?: Progress, now?: Clock): Promise<PartitionDoc>;
  release(progress?: Progress, now?: Clock): Promise<PartitionDoc>;
  fail(message: string, retryable: boolean, progress?: Progress, now?: Clock): Promise<PartitionDoc>;
}
