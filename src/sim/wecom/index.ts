/**
 * The WeCom simulator, one file per simulated API family: tokens, KF, media, app messages, AI
 * bots in webhook mode and over the long connection (WebSocket), callbacks; the rule book they
 * enforce (rules.ts); and the composition (simulator.ts) tests and the sandbox use.
 * @module
 */
/** The result of delivering one callback. */
export type { CallbackResult } from "./callback-client.js";
export { DEFAULT_KF_ERRCODES, type KfErrcodes, SimApiError } from "./errors.js";
/** One kf/sync_msg call the simulator served, and a customer's KF session as the rules see it. */
export type { KfSessionView, KfSyncCall } from "./kf.js";
export { type KfServiceState, type UploadType, WECOM_RULES, kfTransitionAllowed } from "./rules.js";
export { SimClock, type SimTimers } from "./scheduler.js";
export { WeComSimulator } from "./simulator.js";
/** The simulator's public types. */
export type * from "./types.js";
