// The core's declarations (wasm-bindgen's, with the JSON types of
// wasm/src/types.d.ts): the same for the Node and the browser build.
import * as core from "./node/oxiflow_wasm.js";

export * from "./node/oxiflow_wasm.js";
export default core;
