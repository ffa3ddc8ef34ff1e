/**
 * A small, safe XML reader and writer for WeCom's callback dialect: elements, text, CDATA, the five
 * predefined entities and numeric character references. No DTDs, no external or custom entities
 * (so no entity expansion attacks), attributes are skipped, and every object is created without a
 * prototype (no prototype pollution through element names such as `__proto__`). Values stay
 * strings, so 64-bit ids such as `MsgId` are never passed through a JS number.
 * @module
 */
import { DecodeError, EncodeError } from "../errors.js";

/** A parsed XML value: text, an element's children by name, or repeated children. */
export type XmlNode = string | XmlObject | XmlNode[];

/** Children of an element by name; repeated names collect into an array, in document order. */
export interface XmlObject {
  [name: string]: XmlNode;
}

/** Limits of {@link parseXml}. */
export interface XmlLimits {
  /** Maximum nesting depth. Default 32. */
  maxDepth?: number;
}

/** A parsed document: the root element's name and its value. */
export interface XmlDocument {
  /** Name of the root element (`xml` for WeCom). */
  root: string;
  /** The root's children (an empty object when the root has none). */
  value: XmlObject;
}

/**
 * Element objects are made by this constructor: its prototype has no prototype, so element names
 * such as `__proto__`, `constructor` or `toString` are plain own properties (no prototype
 * pollution, no inherited look-ups), while V8 keeps the objects in its fast mode.
 */
function XmlElementObject(this: XmlObject): void {}
XmlElementObject.prototype = Object.create(null);

function newObject(): XmlObject {
  return new (XmlElementObject as unknown as new () => XmlObject)();
}

const LT = 60; // <
const GT = 62; // >
const SLASH = 47;
const BANG = 33;
const QUESTION = 63;

function isSpace(c: number): boolean {
  return c === 32 || c === 10 || c === 13 || c === 9;
}

function isNameChar(c: number): boolean {
  return (
    (c >= 97 && c <= 122) || // a-z
    (c >= 65 && c <= 90) || // A-Z
    (c >= 48 && c <= 57) || // 0-9
    c === 95 || // _
    c === 45 || // -
    c === 46 || // .
    c === 58 || // :
    c > 127
  );
}

const ENTITY = /&(#x[0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);/g;
const NAMED: Record<string, string> = { lt: "<", gt: ">", amp: "&", quot: '"', apos: "'" };

function decodeEntities(text: string): string {
  const out = text.replace(ENTITY, (_m, body: string) => {
    if (body.charCodeAt(0) === 35) {
      const cp = body.charCodeAt(1) === 120 ? Number.parseInt(body.slice(2), 16) : Number.parseInt(body.slice(1), 10);
      if (!(cp > 0 && cp <= 0x10ffff) || (cp >= 0xd800 && cp <= 0xdfff)) {
        throw new DecodeError("xml", `invalid character reference &${body};`);
      }
      return String.fromCodePoint(cp);
    }
    const named = NAMED[body];
    if (named === undefined) throw new DecodeError("xml", `undefined entity &${body}; (DTD entities are not allowed)`);
    return named;
  });
  if (out.indexOf("&") !== -1 && /&(?!(#x[0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);)/.test(text)) {
    throw new DecodeError("xml", "bare '&' in text");
  }
  return out;
}

/**
 * The reader keeps its state in module variables rather than an object: parsing is synchronous and
 * not re-entrant, and this keeps V8's hot loop free of property loads. `lastName` hands the name
 * of the element just read back to the caller without allocating a tuple.
 */
let src = "";
let pos = 0;
let maxDepth = 32;
let lastName = "";

function fail(msg: string): never {
  throw new DecodeError("xml", `${msg} at offset ${pos}`);
}

/** Skip whitespace, comments and processing instructions; reject DOCTYPE. */
function skipMisc(): void {
  const s = src;
  for (;;) {
    while (pos < s.length && isSpace(s.charCodeAt(pos))) pos++;
    if (s.charCodeAt(pos) !== LT) return;
    const next = s.charCodeAt(pos + 1);
    if (next === QUESTION) {
      const end = s.indexOf("?>", pos + 2);
      if (end < 0) fail("unterminated processing instruction");
      pos = end + 2;
    } else if (next === BANG) {
      if (!s.startsWith("<!--", pos)) fail("DOCTYPE and DTD declarations are not allowed");
      const end = s.indexOf("-->", pos + 4);
      if (end < 0) fail("unterminated comment");
      pos = end + 3;
    } else {
      return;
    }
  }
}

/** Skip attributes up to `>` or `/>`; returns true when the element is self-closing. */
function skipAttributes(): boolean {
  const s = src;
  for (;;) {
    if (pos >= s.length) fail("unterminated start tag");
    const c = s.charCodeAt(pos);
    if (c === GT) {
      pos++;
      return false;
    }
    if (c === SLASH) {
      if (s.charCodeAt(pos + 1) !== GT) fail("expected '>' after '/'");
      pos += 2;
      return true;
    }
    if (c === 34 || c === 39) {
      const end = s.indexOf(c === 34 ? '"' : "'", pos + 1);
      if (end < 0) fail("unterminated attribute value");
      pos = end + 1;
    } else if (c === LT) {
      fail("unexpected '<' in start tag");
    } else {
      pos++;
    }
  }
}

/** Parse one element whose '<' is at pos; sets `lastName` and returns its value. */
function element(depth: number): string | XmlObject {
  if (depth > maxDepth) fail(`nesting deeper than ${maxDepth}`);
  const s = src;
  const start = ++pos;
  while (pos < s.length && isNameChar(s.charCodeAt(pos))) pos++;
  if (pos === start) fail("expected an element name");
  const name = s.slice(start, pos);
  if (s.charCodeAt(pos) === GT) pos++;
  else if (skipAttributes()) {
    lastName = name;
    return "";
  }
  let text = "";
  let children: XmlObject | undefined;
  for (;;) {
    const lt = s.indexOf("<", pos);
    if (lt < 0) {
      pos = s.length;
      fail(`unterminated element <${name}>`);
    }
    if (lt > pos) {
      const raw = s.slice(pos, lt);
      text += raw.indexOf("&") === -1 ? raw : decodeEntities(raw);
      pos = lt;
    }
    const next = s.charCodeAt(lt + 1);
    if (next === SLASH) {
      let end = lt + 2 + name.length;
      if (!s.startsWith(name, lt + 2) || isNameChar(s.charCodeAt(end))) {
        pos = lt + 2;
        fail(`expected </${name}>`);
      }
      while (isSpace(s.charCodeAt(end))) end++;
      if (s.charCodeAt(end) !== GT) {
        pos = end;
        fail(`expected '>' closing </${name}>`);
      }
      pos = end + 1;
      lastName = name;
      if (children === undefined) return text;
      if (text.trim() !== "") children["#text"] = text;
      return children;
    }
    if (next === BANG) {
      if (s.startsWith("<![CDATA[", lt)) {
        const end = s.indexOf("]]>", lt + 9);
        if (end < 0) fail("unterminated CDATA section");
        text += s.slice(lt + 9, end);
        pos = end + 3;
      } else if (s.startsWith("<!--", lt)) {
        const end = s.indexOf("-->", lt + 4);
        if (end < 0) fail("unterminated comment");
        pos = end + 3;
      } else {
        fail("DOCTYPE and DTD declarations are not allowed");
      }
      continue;
    }
    if (next === QUESTION) {
      const end = s.indexOf("?>", lt + 2);
      if (end < 0) fail("unterminated processing instruction");
      pos = end + 2;
      continue;
    }
    const childValue = element(depth + 1);
    const childName = lastName;
    if (children === undefined) children = newObject();
    const prev = children[childName];
    if (prev === undefined) children[childName] = childValue;
    else if (Array.isArray(prev)) prev.push(childValue);
    else children[childName] = [prev, childValue];
  }
}

/**
 * Parse an XML document.
 * @throws DecodeError (`xml`) for anything that is not well-formed, a DOCTYPE, an undefined
 *   entity, or nesting deeper than `maxDepth`
 * @example parseXml("<xml><MsgId>1234567890123456789</MsgId></xml>").value.MsgId // "1234567890123456789"
 */
export function parseXml(input: string, limits: XmlLimits = {}): XmlDocument {
  if (typeof input !== "string") throw new DecodeError("xml", "input is not a string");
  src = input;
  pos = input.charCodeAt(0) === 0xfeff ? 1 : 0; // a leading BOM is allowed
  maxDepth = limits.maxDepth ?? 32;
  try {
    skipMisc();
    if (input.charCodeAt(pos) !== LT) fail("expected a root element");
    const value = element(0);
    const root = lastName;
    skipMisc();
    if (pos < input.length) fail("content after the root element");
    if (typeof value !== "string") return { root, value };
    const obj = newObject();
    if (value.trim() !== "") obj["#text"] = value;
    return { root, value: obj };
  } finally {
    src = ""; // do not keep the document alive
  }
}

/** Read a child as text: a string child, or "" for an empty element; undefined when absent. */
export function xmlText(obj: XmlObject, name: string): string | undefined {
  const v = obj[name];
  if (v === undefined) return undefined;
  if (typeof v === "string") return v;
  if (Array.isArray(v)) {
    const first = v[0];
    return typeof first === "string" ? first : undefined;
  }
  return undefined;
}

/** Read a child as an element object (the first one when repeated); undefined when absent or text. */
export function xmlChild(obj: XmlObject, name: string): XmlObject | undefined {
  const v = obj[name];
  if (v === undefined || typeof v === "string") return undefined;
  if (Array.isArray(v)) {
    const first = v[0];
    return first !== undefined && typeof first === "object" && !Array.isArray(first) ? first : undefined;
  }
  return v;
}

/** Read a child as a list (one element gives a list of one; absent gives []). */
export function xmlList(obj: XmlObject, name: string): XmlNode[] {
  const v = obj[name];
  if (v === undefined) return [];
  return Array.isArray(v) ? v : [v];
}

/** Convert a parsed XML value to plain JSON-friendly data (null-prototype objects become plain). */
export function xmlToPlain(node: XmlNode): unknown {
  if (typeof node === "string") return node;
  if (Array.isArray(node)) return node.map(xmlToPlain);
  const out: Record<string, unknown> = {};
  for (const k of Object.keys(node)) {
    Object.defineProperty(out, k, { value: xmlToPlain(node[k] as XmlNode), enumerable: true, writable: true, configurable: true });
  }
  return out;
}

/** A value the XML writer accepts. */
export type XmlWritable =
  | string
  | number
  | bigint
  | boolean
  | null
  | undefined
  | readonly XmlWritable[]
  | { readonly [name: string]: XmlWritable };

const XML_NAME = /^[A-Za-z_][A-Za-z0-9_.-]*$/;

/** Wrap text in CDATA, splitting any `]]>` inside it so the section cannot be closed early. */
export function cdata(text: string): string {
  return `<![CDATA[${text.indexOf("]]>") === -1 ? text : text.replaceAll("]]>", "]]]]><![CDATA[>")}]]>`;
}

/**
 * Write one element. Strings become CDATA, numbers/bigints/booleans bare text, objects child
 * elements in insertion order, arrays repeated elements of the same name; null/undefined are
 * omitted.
 * @throws EncodeError for a name that is not a valid XML name
 */
export function xmlElement(name: string, value: XmlWritable): string {
  if (value === undefined || value === null) return "";
  if (!XML_NAME.test(name)) throw new EncodeError("xml", `invalid element name ${JSON.stringify(name)}`);
  if (Array.isArray(value)) {
    let out = "";
    for (const v of value as readonly XmlWritable[]) out += xmlElement(name, v);
    return out;
  }
  switch (typeof value) {
    case "string":
      return `<${name}>${cdata(value)}</${name}>`;
    case "number":
      if (!Number.isFinite(value)) throw new EncodeError("xml", `${name} must be a finite number`);
      return `<${name}>${value}</${name}>`;
    case "bigint":
    case "boolean":
      return `<${name}>${String(value)}</${name}>`;
    default: {
      let inner = "";
      for (const [k, v] of Object.entries(value as { readonly [n: string]: XmlWritable })) inner += xmlElement(k, v);
      return `<${name}>${inner}</${name}>`;
    }
  }
}
