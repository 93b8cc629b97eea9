// Types of ./s3.mjs: the S3 store (peer dependency @aws-sdk/client-s3).
import type { S3Client } from "@aws-sdk/client-s3";
import { State, type Store } from "./state.mjs";
import type { StoreRequest, StoreResponse, StoreVersion, CoreConfig } from "./core/index.mjs";

export class S3Store implements Store {
  constructor(options: { bucket: string; prefix?: string; client?: S3Client });
  bucket: string;
  prefix: string;
  s3: S3Client;
  requests: number;
  objectKey(key: string): string;
  perform(send: StoreRequest, body?: Uint8Array | null): Promise<[StoreResponse, Uint8Array | null]>;
  list(prefix: string): Promise<{ key: string; version: StoreVersion }[]>;
}

export class S3State extends State {
  constructor(options: { bucket: string; prefix?: string; client?: S3Client; config?: CoreConfig });
  readonly s3: S3Client;
}

export { State, Holding, StateError, core } from "./state.mjs";
