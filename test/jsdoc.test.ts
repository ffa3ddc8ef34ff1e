/**
 * Every export of src/ carries a JSDoc comment (the house rule), so the generated .d.ts files
 * document the whole API.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const SRC = fileURLToPath(new URL("../src/", import.meta.url));

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : p.endsWith(".ts") ? [p] : [];
  });
}

/** Exported declarations (not re-exports) whose previous non-blank line does not end a JSDoc block. */
function undocumentedExports(text: string): string[] {
  const lines = text.split("\n");
  const out: string[] = [];
  lines.forEach((line, i) => {
    if (!/^export (async )?(function|class|const|let|type|interface|enum|abstract class)\b/.test(line)) return;
    let j = i - 1;
    while (j >= 0 && (lines[j] as string).trim() === "") j--;
    if (j < 0 || !(lines[j] as string).trim().endsWith("*/")) out.push(line.trim());
  });
  return out;
}

describe("JSDoc", () => {
  it("documents every exported declaration in src/", () => {
    const missing = files(SRC).flatMap((f) => undocumentedExports(readFileSync(f, "utf8")).map((l) => `${relative(SRC, f)}: ${l}`));
    expect(missing).toEqual([]);
  });

  it("the checker itself notices a missing comment", () => {
    expect(undocumentedExports("/** doc */\nexport const a = 1;\n\nexport const b = 2;\n")).toEqual(["export const b = 2;"]);
  });
});
