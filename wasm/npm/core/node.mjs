// The core for Node.js: wasm-bindgen's nodejs build (CommonJS, loaded
// synchronously from ./node/oxiflow_wasm_bg.wasm), as an ES module: the
// functions by name, and the whole module as the default export.
import core from "./node/oxiflow_wasm.js";

export * from "./node/oxiflow_wasm.js";
export default core;
