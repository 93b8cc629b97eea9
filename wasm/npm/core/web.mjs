// The core for browsers and bundlers: wasm-bindgen's web build, with the
// write side (Operation, HolderSession, deadlines). Importing this module
// fetches and instantiates ./web/oxiflow_wasm_bg.wasm (top-level await),
// so everything that imports it finds the core ready: the functions by
// name, and the whole module as the default export.
import init, * as all from "./web/oxiflow_wasm.js";

await init();
const { default: _init, initSync: _initSync, ...core } = all;
export * from "./web/oxiflow_wasm.js";
export default core;
