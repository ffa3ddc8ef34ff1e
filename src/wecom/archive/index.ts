/**
 * Session-archive push (seed 002): envelope and record decoder.
 * @module
 */
export * from "./decode.js";
