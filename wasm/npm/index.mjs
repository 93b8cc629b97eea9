// @oxiflow/state: the oxiflow core (Rust, compiled to wasm) for Node.js and
// browsers, and the drivers that give it I/O. The S3 store is
// "@oxiflow/state/s3" (it needs the peer dependency @aws-sdk/client-s3);
// the `oxiflow serve` store ("@oxiflow/state/serve") needs only fetch and
// is re-exported here.
export { core, State, Holding, StateError, coreError, randomId } from "./state.mjs";
export { ServeStore, ServeState } from "./serve.mjs";
export { runStep } from "./step.mjs";
