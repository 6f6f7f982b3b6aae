// The API's job kinds and states, as engine/contract/states.py spells them
// (tests/e2e/test_dashboard.py checks that the two lists agree).
export const JOB_KINDS = ["pretrain", "train", "evaluate", "experiment"];
export const JOB_STATES = ["queued", "running", "cancelling", "succeeded", "failed", "cancelled"];
export const TERMINAL_STATES = new Set(["succeeded", "failed", "cancelled"]);

export const isTerminal = (state) => TERMINAL_STATES.has(state);
