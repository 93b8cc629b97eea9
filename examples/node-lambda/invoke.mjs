// One invocation of the handler in a fresh process, as the Lambda runtime
// runs it: the init phase (imports: the SDK, the wasm core, the handler
// module) first, then `{"ready": t}` on stdout; then one line on stdin,
// `{"event": …, "timeout_ms": n}`, starts the invocation, whose deadline is
// its start plus the timeout (as in Lambda, init does not count against
// it); the context's getRemainingTimeInMillis counts down to it. The
// handler's answer is printed as `{"result": …}` (or `{"error": …}`, exit
// 1), and the process exits: the invocation is over when the handler
// returns.
import { randomUUID } from "node:crypto";
import { createInterface } from "node:readline";
import { S3Store } from "@oxiflow/state/s3";
import { handler } from "./handler.mjs";

// INVOKE_TRACE=1: one line per store request (what an overrunning invocation was doing).
if (process.env.INVOKE_TRACE) {
  const perform = S3Store.prototype.perform;
  S3Store.prototype.perform = async function (send, body) {
    const t = Date.now();
    const [response, bytes] = await perform.call(this, send, body);
    console.log(JSON.stringify({ request: Object.keys(send)[0], key: Object.values(send)[0].key,
      answer: typeof response === "string" ? response : Object.keys(response)[0], at: t, ms: Date.now() - t }));
    return [response, bytes];
  };
}

console.log(JSON.stringify({ ready: Date.now() }));
const lines = createInterface({ input: process.stdin });
const line = await new Promise((resolve) => lines.once("line", resolve));
lines.close();
const { event, timeout_ms } = JSON.parse(line);
const deadline = Date.now() + timeout_ms;
const context = { awsRequestId: randomUUID(), getRemainingTimeInMillis: () => deadline - Date.now() };
if (process.env.INVOKE_TRACE) {
  setTimeout(() => console.log(JSON.stringify({ trace: "near the deadline", at: Date.now(), resources: process.getActiveResourcesInfo() })),
    Math.max(0, deadline - Date.now() - 150)).unref();
}
try {
  console.log(JSON.stringify({ result: await handler(event, context) }));
  process.exit(0);
} catch (e) {
  console.log(JSON.stringify({ error: String(e?.stack ?? e) }));
  process.exit(1);
}
