/**
 * Self-built app callbacks (XML, seed 001): decoder and passive reply encoders.
 * @module
 */
export * from "./decode.js";
export * from "./encode.js";
