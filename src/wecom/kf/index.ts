/**
 * WeChat Customer Service (微信客服, KF, seed 000): sync_msg decoder, KF events, send encoders.
 * @module
 */
export * from "./decode.js";
export * from "./encode.js";
export * from "./events.js";
