/**
 * The simulators: WeCom and the 全媒体, following their published protocols, for tests and the
 * sandbox. Importable alone: `wecom-bridge/sim`.
 * @module
 */
export * from "./omni.js";
export * from "./playground.js";
export * from "./sandbox.js";
export * from "./wecom.js";
