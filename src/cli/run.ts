/**
 * Process entry of the `wecom-bridge` command: runs {@link runCli} on process.argv.
 * @module
 */
import { processIo, runCli } from "./main.js";

process.exitCode = await runCli(process.argv.slice(2), processIo);
