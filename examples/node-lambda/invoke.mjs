// Runs the handler once, as the Lambda runtime would: `node invoke.mjs
// '<event json>' <deadline ms since the epoch>`. The context's
// getRemainingTimeInMillis counts down to the deadline; the result is
// printed as one JSON line `{"result": …}` (or `{"error": …}`, exit 1).
import { randomUUID } from "node:crypto";
import { S3Store } from "@oxiflow/state/s3";
import { handler } from "./handler.mjs";

// INVOKE_TRACE=1: one line per store request (what an overrunning invocation was doing).
if (process.env.INVOKE_TRACE) {
  const perform = S3Store.prototype.perform;
  S3Store.prototype.perform = async function (send, body) {
    const t = Date.now();
    const [response, bytes] = await perform.call(this, send, body);
    console.log(JSON.stringify({ request: Object.keys(send)[0], key: Object.values(send)[0].key, answer: typeof response === "string" ? response : Object.keys(response)[0], at: t, ms: Date.now() - t }));
    return [response, bytes];
  };
  const log = (what) => console.log(JSON.stringify({ trace: what, at: Date.now(), resources: process.getActiveResourcesInfo() }));
  S3Store.prototype.list = ((list) => async function (prefix) {
    log(`list ${prefix}`);
    return list.call(this, prefix);
  })(S3Store.prototype.list);
  setTimeout(() => log("near the deadline"), Math.max(0, Number(process.argv[3]) - Date.now() - 150)).unref();
  const perform2 = S3Store.prototype.perform;
  S3Store.prototype.perform = function (send, body) {
    log(`send ${Object.keys(send)[0]}`);
    return perform2.call(this, send, body);
  };
}

const [event, deadline] = [JSON.parse(process.argv[2]), Number(process.argv[3])];
console.log(JSON.stringify({ ready: Date.now() }));
const context = { awsRequestId: randomUUID(), getRemainingTimeInMillis: () => deadline - Date.now() };
// The invocation ends when the handler returns, as in Lambda: idle
// keep-alive sockets of the SDK do not hold the process open.
try {
  console.log(JSON.stringify({ result: await handler(event, context) }));
  process.exit(0);
} catch (e) {
  console.log(JSON.stringify({ error: String(e?.stack ?? e) }));
  process.exit(1);
}
