/**
 * AI bots (智能机器人, seed 003): callback decoder and passive reply encoders.
 * @module
 */
export * from "./decode.js";
export * from "./encode.js";
