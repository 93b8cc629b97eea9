// Types of @oxiflow/state (./index.mjs).
export { core, State, Holding, StateError, coreError, randomId, type Store, type Clock, type Cached } from "./state.mjs";
export { ServeStore, ServeState, type ServeOptions } from "./serve.mjs";
export type * from "./core/index.mjs";
export { runStep, type StepEvent, type StepOptions, type StepOutcome, type BatchInput, type BatchResult, type StepRequests } from "./step.mjs";
