/**
 * Splitting a text into parts WeCom will take whole: each part at most a number of UTF-8 bytes
 * (KF text and app text 2048, an AI bot's stream 20480), cut only between grapheme clusters
 * (`Intl.Segmenter`, granularity `grapheme`), so a character, a surrogate pair, a combining
 * sequence, an emoji ZWJ sequence (👨‍👩‍👧‍👦) or a flag (🇨🇳) is never torn apart. WeCom silently
 * truncates longer texts, so the caller sends the parts as several messages, in order.
 *
 * Where the cut falls: greedily as late as the limit allows, except that a cut right after a line
 * break, and failing that after a space or punctuation (`.,;:!?` and the Chinese `。！？，；：、…`,
 * closing brackets and quotes), is preferred when it lies in the last fifth of the part's limit. No
 * character is dropped or added: the parts joined are the text, spaces and line breaks included.
 *
 * Pure: no I/O, importable alone.
 * @module
 */
import { utf8Length } from "./fields.js";

export { utf8Length };

/** The smallest limit accepted: every code point fits in 4 UTF-8 bytes, so progress is guaranteed. */
export const MIN_SPLIT_BYTES = 4;

const segmenter = new Intl.Segmenter(undefined, { granularity: "grapheme" });

const NO_BREAK = 0;
const SOFT_BREAK = 1;
const LINE_BREAK = 2;

/** Code units after which a cut reads naturally: blanks, and punctuation that ends a phrase. */
const SOFT = new Set(
  Array.from(" \t\u3000.,;:!?)]}\u00bb\u2026\u2019\u201d\u3001\u3002\u3009\u300b\u300d\u300f\u3011\u3015\u3017\uff01\uff09\uff0c\uff0e\uff1a\uff1b\uff1f\uff3d\uff5d", (c) => c.charCodeAt(0)),
);

/** What cutting right after this code unit is worth. */
function breakKind(c: number): number {
  if (c === 0x0a || c === 0x0d || c === 0x0b || c === 0x0c || c === 0x85 || c === 0x2028 || c === 0x2029) return LINE_BREAK;
  return SOFT.has(c) ? SOFT_BREAK : NO_BREAK;
}

/**
 * The last resort for one grapheme cluster larger than the limit (possible only with absurdly long
 * ZWJ or combining sequences): it is cut between code points, never inside one (a surrogate pair
 * stays whole), greedily, into parts of at most `maxBytes`. It renders as its pieces, but nothing is
 * lost and the limit holds.
 */
function splitCodePoints(grapheme: string, maxBytes: number, out: string[]): void {
  let part = "";
  let bytes = 0;
  for (const cp of grapheme) {
    const n = utf8Length(cp);
    if (bytes + n > maxBytes) {
      out.push(part);
      part = "";
      bytes = 0;
    }
    part += cp;
    bytes += n;
  }
  if (part !== "") out.push(part);
}

/**
 * Split `text` into parts of at most `maxBytes` UTF-8 bytes each, cut between grapheme clusters
 * (see the module comment for where). The parts joined equal `text` exactly; none is empty; an
 * empty text has no parts (`[]`). A lone surrogate counts 3 bytes, as it is sent (U+FFFD).
 *
 * A single grapheme cluster larger than `maxBytes` becomes parts of its own, cut between code
 * points (the only cuts that are not grapheme boundaries); the text around it is split as usual.
 *
 * Linear in the length of the text: bytes are counted by a scan of the code units, and grapheme
 * boundaries are asked of `Intl.Segmenter` only around each cut (segmenting a whole 100 KB text
 * costs about 100 ms on Node 20; this costs about a millisecond).
 * @param text the text to split
 * @param maxBytes the most UTF-8 bytes of one part: an integer ≥ {@link MIN_SPLIT_BYTES}
 * @throws RangeError when `maxBytes` is not such an integer
 * @example
 * splitUtf8(agentAnswer, KF_TEXT_MAX_BYTES) // → one kf/send_msg per part, in order
 */
export function splitUtf8(text: string, maxBytes: number): string[] {
  if (!Number.isSafeInteger(maxBytes) || maxBytes < MIN_SPLIT_BYTES) {
    throw new RangeError(`maxBytes must be an integer of at least ${MIN_SPLIT_BYTES}, got ${maxBytes}`);
  }
  if (text === "") return [];
  if (text.length * 3 <= maxBytes || utf8Length(text) <= maxBytes) return [text];

  const segments = segmenter.segment(text);
  const len = text.length;
  const isBoundary = (at: number) => at === len || segments.containing(at)?.index === at;
  // a preferred cut counts when the part it ends is at least this long: the last fifth of the limit
  const threshold = maxBytes - Math.floor(maxBytes / 5);

  const parts: string[] = [];
  let start = 0; // always a grapheme boundary
  while (start < len) {
    // the furthest code point boundary within the limit, and where the last fifth begins
    let bytes = 0;
    let end = start;
    let windowStart = -1;
    while (end < len) {
      const c = text.charCodeAt(end);
      let width = 3;
      let units = 1;
      if (c < 0x80) width = 1;
      else if (c < 0x800) width = 2;
      else if (c >= 0xd800 && c <= 0xdbff && end + 1 < len) {
        const d = text.charCodeAt(end + 1);
        if (d >= 0xdc00 && d <= 0xdfff) {
          width = 4;
          units = 2;
        }
      }
      if (bytes + width > maxBytes) break;
      bytes += width;
      end += units;
      if (windowStart < 0 && bytes >= threshold) windowStart = end;
    }
    if (end === len) {
      parts.push(text.slice(start));
      break;
    }
    const straddling = segments.containing(end) as Intl.SegmentData;
    if (straddling.index <= start) {
      // the grapheme at the start of the part is larger than the limit
      const after = straddling.index + straddling.segment.length;
      splitCodePoints(text.slice(start, after), maxBytes, parts);
      start = after;
      continue;
    }
    const hardCut = straddling.index;
    let cut = hardCut;
    if (windowStart >= 0 && windowStart <= hardCut) {
      let soft = -1;
      for (let at = hardCut; at >= windowStart; at--) {
        const kind = breakKind(text.charCodeAt(at - 1));
        if (kind === NO_BREAK || (kind === SOFT_BREAK && soft >= 0) || !isBoundary(at)) continue;
        if (kind === LINE_BREAK) {
          soft = -1;
          cut = at;
          break;
        }
        soft = at;
      }
      if (soft >= 0) cut = soft;
    }
    parts.push(text.slice(start, cut));
    start = cut;
  }
  return parts;
}
