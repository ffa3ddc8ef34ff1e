/**
 * AI bots (智能机器人, seed 003): callback decoder, passive reply encoders and the long connection's frames.
 * @module
 */
export * from "./decode.js";
export * from "./encode.js";
export * from "./ws-frames.js";
