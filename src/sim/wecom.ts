/**
 * The WeCom simulator (see ./wecom/ for its parts: one file per simulated API family, the rule
 * book, the composition). This module keeps the import path `sim/wecom.js` that tests, the
 * sandbox and the CLI use.
 * @module
 */
export * from "./wecom/index.js";
