// The S3 store for the core: GET, conditional PUT (If-None-Match: * to
// create, If-Match: <etag> to update) and LIST through @aws-sdk/client-s3
// (a peer dependency: bring your own version). One retry layer only: the
// core's (jittered backoff, lost-response settling), so the client it
// makes has the SDK's retries off.
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from "@aws-sdk/client-s3";
import { State } from "./state.mjs";

export class S3Store {
  /**
   * @param {{bucket: string, prefix?: string, client?: S3Client}} options
   * `prefix` matches the CLI's `s3://bucket/prefix`. A `client` you pass
   * should have `maxAttempts: 1`: the core retries, and an SDK retry of a
   * conditional PUT whose first answer was lost reports a precondition
   * failure for a write that landed.
   */
  constructor({ bucket, prefix = "", client }) {
    if (!bucket) throw new TypeError("S3Store: `bucket` is required");
    this.bucket = bucket;
    this.prefix = prefix.replace(/\/+$/, "");
    this.s3 = client ?? new S3Client({ maxAttempts: 1 });
    /** Store requests made (GET, PUT, LIST pages). */
    this.requests = 0;
  }

  objectKey(key) {
    return this.prefix ? `${this.prefix}/${key}` : key;
  }

  /** One store request for the core; returns [response, bytes]. */
  async perform(send, body) {
    this.requests++;
    try {
      if (send.get) {
        const o = await this.s3.send(new GetObjectCommand({ Bucket: this.bucket, Key: this.objectKey(send.get.key) }));
        return [{ object: { version: { e_tag: o.ETag } } }, await o.Body.transformToByteArray()];
      }
      const put = send.put_if_absent ?? send.put_if_match;
      const condition = send.put_if_absent ? { IfNoneMatch: "*" } : { IfMatch: put.version.e_tag };
      const r = await this.s3.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.objectKey(put.key), Body: body, ...condition }));
      return [{ written: { e_tag: r.ETag } }, null];
    } catch (e) {
      const status = e.$metadata?.httpStatusCode;
      if (send.get && (e.name === "NoSuchKey" || status === 404)) return [{ object: null }, null];
      if (send.put_if_absent && status === 412) return ["already_exists", null];
      // 412: the ETag moved on; 409: a concurrent conditional write won; 404: If-Match on a missing key.
      if (status === 412 || status === 409 || (send.put_if_match && status === 404)) return ["precondition", null];
      if (status === 403 || e.name === "AccessDenied" || e.name === "NoSuchBucket") throw e; // not transient: say so
      return [{ unavailable: { reason: `${e.name}: ${e.message}` } }, null];
    }
  }

  /** Every key under `prefix` (relative to the store's prefix) with its ETag, page by page. */
  async list(prefix) {
    const listed = [];
    let ContinuationToken;
    do {
      this.requests++;
      const page = await this.s3.send(new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.objectKey(prefix), ContinuationToken }));
      for (const o of page.Contents ?? []) {
        listed.push({ key: this.prefix ? o.Key.slice(this.prefix.length + 1) : o.Key, version: { e_tag: o.ETag } });
      }
      ContinuationToken = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (ContinuationToken);
    return listed;
  }
}

/** Pipeline state in S3: `new S3State({bucket, prefix, client, config})`. */
export class S3State extends State {
  constructor({ bucket, prefix, client, config }) {
    super({ store: new S3Store({ bucket, prefix, client }), config });
  }

  /** The SDK client in use. */
  get s3() {
    return this.store.s3;
  }
}

export { State, Holding, StateError, core } from "./state.mjs";
