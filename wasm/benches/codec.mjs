// The codec bench's loop inside wasm (Node build), timed around the call:
// prints nanoseconds per decode+validate+encode of the 51-document fixture,
// best of 5 runs, like wasm/examples/codec_native.rs. Used by
// scripts/bench-wasm.sh.
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { benchCodec } = require("../pkg/node/oxiflow_wasm.js");
const iterations = Number(process.argv[2] ?? 2000);

benchCodec(Math.ceil(iterations / 10)); // warm up: compile tiers
let best = Infinity;
for (let run = 0; run < 5; run++) {
  const t0 = process.hrtime.bigint();
  benchCodec(0); // the fixture alone
  const t1 = process.hrtime.bigint();
  if (!(benchCodec(iterations) > 0)) throw new Error("nothing encoded");
  const t2 = process.hrtime.bigint();
  best = Math.min(best, Number(t2 - t1 - (t1 - t0)) / iterations);
}
console.log(best.toFixed(0));
