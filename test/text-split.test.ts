/**
 * splitUtf8: parts within the byte limit, cut only between grapheme clusters (or, for a cluster
 * larger than the limit, between its code points), joined back to the exact input, and cut at a
 * line break or punctuation when one is near the end of a part.
 */
import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { MIN_SPLIT_BYTES, splitUtf8, utf8Length } from "../src/wecom/text-split.js";

const segmenter = new Intl.Segmenter(undefined, { granularity: "grapheme" });
const graphemes = (s: string) => Array.from(segmenter.segment(s), (x) => x.segment);

const FAMILY = "👨‍👩‍👧‍👦"; // 25 bytes, one grapheme
const RAINBOW = "🏳️‍🌈";
const CN = "🇨🇳";
const E_ACUTE = "e\u0301";

/** Pieces that stress the splitter: every width of character, sequences that must stay whole, lone surrogates, breaks. */
const PIECES = [
  "a",
  "Z",
  " ",
  "\t",
  "\n",
  "\r\n",
  "\r",
  ".",
  ",",
  "。",
  "！",
  "？",
  "，",
  "；",
  "、",
  "中",
  "文",
  "ü",
  "é",
  E_ACUTE,
  "a\u0301\u0302\u0303\u0304",
  "𠮷",
  "👍",
  "👍🏽",
  FAMILY,
  RAINBOW,
  CN,
  "🇺🇸",
  "\u1100\u1161\u11a8", // a Hangul syllable from jamo
  "\u0e01\u0e4c", // Thai with a mark
  "\u200d",
  "\u0301",
  "\ufe0f",
  "\ud800",
  "\udfff",
  "\udbff",
];

const nastyText = fc.oneof(
  fc.array(fc.constantFrom(...PIECES), { maxLength: 300 }).map((a) => a.join("")),
  fc.string({ unit: "grapheme", maxLength: 200 }),
  fc.string({ unit: "binary", maxLength: 200 }),
  fc.string({ unit: fc.oneof(fc.constantFrom(...PIECES), fc.string({ unit: "grapheme-composite", minLength: 1, maxLength: 1 })), maxLength: 200 }),
);

/** Where each part of `parts` ends in the joined text. */
function cutOffsets(parts: string[]): number[] {
  const cuts: number[] = [];
  let at = 0;
  for (const p of parts.slice(0, -1)) {
    at += p.length;
    cuts.push(at);
  }
  return cuts;
}

/** Grapheme boundaries of `text`, and for every offset the grapheme it lies in. */
function graphemeMap(text: string): { boundaries: Set<number>; containing: (offset: number) => string } {
  const boundaries = new Set<number>([text.length]);
  const spans: Array<{ start: number; g: string }> = [];
  for (const { segment, index } of segmenter.segment(text)) {
    boundaries.add(index);
    spans.push({ start: index, g: segment });
  }
  const containing = (offset: number) => {
    let lo = 0;
    let hi = spans.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if ((spans[mid] as { start: number }).start <= offset) lo = mid;
      else hi = mid - 1;
    }
    return (spans[lo] as { g: string }).g;
  };
  return { boundaries, containing };
}

const isHigh = (c: number) => c >= 0xd800 && c <= 0xdbff;
const isLow = (c: number) => c >= 0xdc00 && c <= 0xdfff;

/** Every promise of splitUtf8, checked on one input; returns the parts. */
function checkSplit(text: string, maxBytes: number): string[] {
  const parts = splitUtf8(text, maxBytes);
  expect(parts.join("")).toBe(text);
  if (text === "") expect(parts).toEqual([]);
  const { boundaries, containing } = graphemeMap(text);
  const threshold = maxBytes - Math.floor(maxBytes / 5);
  let at = 0;
  parts.forEach((part, k) => {
    expect(part.length).toBeGreaterThan(0);
    expect(utf8Length(part)).toBeLessThanOrEqual(maxBytes);
    const start = at;
    const end = at + part.length;
    at = end;
    if (k === parts.length - 1) return;
    if (!boundaries.has(end)) {
      // only inside a grapheme larger than the limit, and never between the halves of a surrogate pair
      expect(utf8Length(containing(end))).toBeGreaterThan(maxBytes);
      expect(isHigh(text.charCodeAt(end - 1)) && isLow(text.charCodeAt(end))).toBe(false);
      return;
    }
    // a part of whole graphemes ends only when the next one does not fit, or at a preferred cut near the end
    if (boundaries.has(start)) {
      const next = containing(end);
      expect(utf8Length(part) >= threshold || utf8Length(part) + utf8Length(next) > maxBytes).toBe(true);
    }
  });
  return parts;
}

/**
 * The rule spelled out the slow way, as a reference: segment the whole text, fill each part with
 * whole graphemes, cut after the last line break (else space or punctuation) whose part reaches the
 * last fifth of the limit, else before the first grapheme that does not fit.
 */
function referenceSplit(text: string, maxBytes: number): string[] {
  const line = new Set(["\n", "\r", "\v", "\f", "\u0085", "\u2028", "\u2029"]);
  const soft = new Set(Array.from(" \t\u3000.,;:!?)]}»…’”、。〉》」』】〕〗！），．：；？］｝"));
  const gs = graphemes(text);
  const threshold = maxBytes - Math.floor(maxBytes / 5);
  const parts: string[] = [];
  let i = 0;
  while (i < gs.length) {
    let bytes = 0;
    let j = i;
    let lineAt = -1;
    let softAt = -1;
    while (j < gs.length && bytes + utf8Length(gs[j] as string) <= maxBytes) {
      bytes += utf8Length(gs[j] as string);
      const last = (gs[j] as string).slice(-1);
      if (bytes >= threshold && line.has(last)) lineAt = j + 1;
      if (bytes >= threshold && soft.has(last)) softAt = j + 1;
      j++;
    }
    if (j === gs.length) {
      parts.push(gs.slice(i).join(""));
      break;
    }
    if (j === i) {
      let piece = "";
      for (const cp of gs[i] as string) {
        if (utf8Length(piece + cp) > maxBytes) {
          parts.push(piece);
          piece = "";
        }
        piece += cp;
      }
      parts.push(piece);
      i++;
      continue;
    }
    const cut = lineAt >= 0 ? lineAt : softAt >= 0 ? softAt : j;
    parts.push(gs.slice(i, cut).join(""));
    i = cut;
  }
  return parts;
}

describe("utf8Length", () => {
  it("counts what Buffer sends, lone surrogates as U+FFFD (3 bytes)", () => {
    expect(utf8Length("")).toBe(0);
    expect(utf8Length("a")).toBe(1);
    expect(utf8Length("中")).toBe(3);
    expect(utf8Length("\ud800")).toBe(3);
    expect(utf8Length(FAMILY)).toBe(25);
    fc.assert(
      fc.property(nastyText, (s) => {
        expect(utf8Length(s)).toBe(new TextEncoder().encode(s).length);
      }),
      { numRuns: 300 },
    );
  });
});

describe("splitUtf8", () => {
  it("keeps a text that fits whole, and gives no parts for an empty one", () => {
    expect(splitUtf8("hello", 2048)).toEqual(["hello"]);
    expect(splitUtf8("中".repeat(682), 2048)).toEqual(["中".repeat(682)]); // 2046 bytes
    expect(splitUtf8("a".repeat(2048), 2048)).toEqual(["a".repeat(2048)]);
    expect(splitUtf8("", 2048)).toEqual([]);
  });

  it("refuses a limit below 4 bytes or not an integer", () => {
    for (const bad of [0, 1, 3, 3.5, 2048.5, Number.NaN, Number.POSITIVE_INFINITY, -2048]) {
      expect(() => splitUtf8("abc", bad)).toThrow(RangeError);
    }
    expect(MIN_SPLIT_BYTES).toBe(4);
    expect(splitUtf8("abcdefgh", 4)).toEqual(["abcd", "efgh"]);
  });

  it("cuts Chinese text without a break at the last character that fits", () => {
    const text = "中".repeat(1000); // 3000 bytes
    const parts = checkSplit(text, 2048);
    expect(parts).toEqual(["中".repeat(682), "中".repeat(318)]);
  });

  it("prefers a Chinese full stop in the last fifth of the part", () => {
    const text = "中".repeat(600) + "。" + "文".repeat(400); // 。 ends at byte 1803, past 80 % of 2048
    const parts = checkSplit(text, 2048);
    expect(parts).toEqual(["中".repeat(600) + "。", "文".repeat(400)]);
    for (const p of ["！", "？", "，", "；"]) {
      expect(splitUtf8("中".repeat(600) + p + "文".repeat(400), 2048)[0]?.endsWith(p)).toBe(true);
    }
  });

  it("ignores a break too early in the part (it would waste a message)", () => {
    const text = "中".repeat(100) + "。" + "文".repeat(900); // 。 ends at byte 303
    const parts = checkSplit(text, 2048);
    expect(utf8Length(parts[0] as string)).toBe(2046);
    expect(parts[0]?.endsWith("。")).toBe(false);
  });

  it("prefers a line break to a later space, and keeps both in the parts", () => {
    const text = "x".repeat(1700) + "\n" + "y".repeat(200) + " " + "z".repeat(500);
    const parts = checkSplit(text, 2048);
    expect(parts[0]).toBe("x".repeat(1700) + "\n");
    expect(parts[1]).toBe("y".repeat(200) + " " + "z".repeat(500));
  });

  it("takes the last space in the window, and trims nothing", () => {
    const text = "  " + "word ".repeat(600) + "  \n";
    const parts = checkSplit(text, 2048);
    expect(parts.join("")).toBe(text);
    expect(parts[0]?.endsWith(" ")).toBe(true);
    expect(parts[0]?.length).toBe(2047); // 2 + 409 × "word " = 2047: the space at byte 2047 is the last in reach
  });

  it("takes a break only where it ends a grapheme (not a space carrying a combining mark, not between \\r and \\n)", () => {
    const marked = "x".repeat(1700) + " \u0301" + "y".repeat(400);
    expect(checkSplit(marked, 2048)[0]).toBe("x".repeat(1700) + " \u0301" + "y".repeat(345));
    const crlf = "x".repeat(1700) + "\r\n" + "y".repeat(400);
    expect(checkSplit(crlf, 2048)[0]).toBe("x".repeat(1700) + "\r\n");
  });

  it("keeps \\r\\n together", () => {
    const text = "a".repeat(2047) + "\r\n" + "b";
    const parts = checkSplit(text, 2048);
    expect(parts).toEqual(["a".repeat(2047), "\r\nb"]);
  });

  it("never tears an emoji ZWJ sequence, a flag or a combining sequence at the boundary", () => {
    for (const [seq, bytes] of [
      [FAMILY, 25],
      [RAINBOW, 14],
      [CN, 8],
      ["👍🏽", 8],
      [E_ACUTE, 3],
      ["\u1100\u1161\u11a8", 9],
    ] as const) {
      expect(utf8Length(seq)).toBe(bytes);
      for (let pad = 2048 - bytes + 1; pad < 2048; pad++) {
        const text = "a".repeat(pad) + seq + "b";
        const parts = checkSplit(text, 2048);
        expect(parts).toEqual(["a".repeat(pad), seq + "b"]);
      }
      const fits = "a".repeat(2048 - bytes) + seq + "b";
      expect(checkSplit(fits, 2048)).toEqual(["a".repeat(2048 - bytes) + seq, "b"]);
    }
  });

  it("keeps a surrogate pair whole", () => {
    const text = "a".repeat(2045) + "𠮷" + "b"; // 𠮷 is 4 bytes, two code units
    expect(checkSplit(text, 2048)).toEqual(["a".repeat(2045), "𠮷b"]);
  });

  it("splits a grapheme larger than the limit between code points, as parts of its own", () => {
    const long = "e" + "\u0301".repeat(30); // one grapheme, 61 bytes
    expect(graphemes(long)).toHaveLength(1);
    const parts = checkSplit("ab" + long + "cd", 8);
    expect(parts[0]).toBe("ab");
    expect(parts.at(-1)).toBe("cd");
    expect(parts.slice(1, -1).join("")).toBe(long);
    for (const p of parts) expect(utf8Length(p)).toBeLessThanOrEqual(8);

    const family = checkSplit(FAMILY, 4); // 👨 ZWJ 👩 ZWJ 👧 ZWJ 👦: 4,3,4,3,4,3,4 bytes
    expect(family).toEqual(["👨", "\u200d", "👩", "\u200d", "👧", "\u200d", "👦"]);
    expect(checkSplit(FAMILY.repeat(3), 10).join("")).toBe(FAMILY.repeat(3));
  });

  it("holds every promise on random text with emoji, ZWJ, combining marks, CJK, lone surrogates and breaks", () => {
    fc.assert(
      fc.property(nastyText, fc.integer({ min: 4, max: 64 }), (text, maxBytes) => {
        expect(checkSplit(text, maxBytes)).toEqual(referenceSplit(text, maxBytes));
      }),
      { numRuns: 2000 },
    );
  });

  it("cuts only between graphemes whenever every grapheme fits", () => {
    fc.assert(
      fc.property(nastyText, fc.integer({ min: 4, max: 300 }), (text, extra) => {
        const largest = Math.max(0, ...graphemes(text).map(utf8Length));
        const maxBytes = Math.max(4, largest) + extra;
        const parts = checkSplit(text, maxBytes);
        expect(parts).toEqual(referenceSplit(text, maxBytes));
        const { boundaries } = graphemeMap(text);
        for (const cut of cutOffsets(parts)) expect(boundaries.has(cut)).toBe(true);
      }),
      { numRuns: 1000 },
    );
  });

  it("splits ~100 KB of mixed text at WeCom's limits into nearly full parts", () => {
    const unit = "客服回复：您好！This is line one.\n第二行包含表情😀👨‍👩‍👧‍👦🇨🇳和组合字符e\u0301，";
    let text = "";
    while (utf8Length(text) < 100_000) text += unit;
    for (const limit of [2048, 20480]) {
      const parts = checkSplit(text, limit);
      const floor = limit - Math.floor(limit / 5) - 25; // a cut is at a break in the last fifth, or where the next grapheme (≤ 25 bytes) no longer fits
      for (const p of parts.slice(0, -1)) expect(utf8Length(p)).toBeGreaterThanOrEqual(floor);
      expect(parts.length).toBeLessThanOrEqual(Math.ceil(utf8Length(text) / floor));
    }
  });
});
