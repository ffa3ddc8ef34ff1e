import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { cdata, DecodeError, EncodeError, parseXml, xmlChild, xmlElement, xmlList, xmlText, xmlToPlain } from "../src/index.js";

function expectDecodeError(input: string, fragment: string): void {
  try {
    parseXml(input);
  } catch (e) {
    expect(e).toBeInstanceOf(DecodeError);
    expect((e as DecodeError).code).toBe("decode_malformed");
    expect((e as Error).message).toContain(fragment);
    return;
  }
  throw new Error(`expected a DecodeError for ${JSON.stringify(input)}`);
}

describe("parseXml", () => {
  it("reads text, CDATA and nested elements", () => {
    const doc = parseXml("<?xml version='1.0'?><xml><A>1</A><B><![CDATA[<b>&amp;</b>]]></B><C><D>x</D></C></xml>");
    expect(doc.root).toBe("xml");
    expect(xmlText(doc.value, "A")).toBe("1");
    expect(xmlText(doc.value, "B")).toBe("<b>&amp;</b>");
    expect(xmlText(xmlChild(doc.value, "C") ?? {}, "D")).toBe("x");
  });

  it("keeps 64-bit ids exact", () => {
    const doc = parseXml("<xml><MsgId>7381973325934178305</MsgId></xml>");
    expect(doc.value.MsgId).toBe("7381973325934178305");
  });

  it("decodes the predefined entities and character references only", () => {
    expect(parseXml("<x><a>&lt;&gt;&amp;&quot;&apos;&#20320;&#x597D;</a></x>").value.a).toBe("<>&\"'你好");
    expectDecodeError("<x><a>&nbsp;</a></x>", "undefined entity");
    expectDecodeError("<x><a>&#0;</a></x>", "character reference");
    expectDecodeError("<x><a>a & b</a></x>", "bare '&'");
  });

  it("refuses DOCTYPE, so no entity expansion is possible", () => {
    const bomb = `<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><xml><a>&lol2;</a></xml>`;
    expectDecodeError(bomb, "DOCTYPE");
    expectDecodeError(`<xml><!DOCTYPE x><a/></xml>`, "DOCTYPE");
    const xxe = `<!DOCTYPE x [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><xml><a>&xxe;</a></xml>`;
    expectDecodeError(xxe, "DOCTYPE");
  });

  it("does not let element names touch prototypes", () => {
    const doc = parseXml("<xml><__proto__><polluted>yes</polluted></__proto__><constructor>c</constructor><toString>t</toString></xml>");
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
    expect(Object.getPrototypeOf(Object.prototype)).toBeNull();
    expect(xmlText(xmlChild(doc.value, "__proto__") ?? {}, "polluted")).toBe("yes");
    expect(doc.value.constructor).toBe("c");
    expect(doc.value.toString).toBe("t");
    // absent names are absent, not inherited
    expect(parseXml("<xml><a>1</a></xml>").value.hasOwnProperty).toBeUndefined();
    expect(JSON.stringify(xmlToPlain(doc.value))).toContain('"__proto__":{"polluted":"yes"}');
  });

  it("collects repeated elements into arrays, in order", () => {
    const doc = parseXml("<xml><item>a</item><b/><item>b</item><item>c</item></xml>");
    expect(doc.value.item).toEqual(["a", "b", "c"]);
    expect(xmlList(doc.value, "item")).toHaveLength(3);
    expect(xmlList(doc.value, "b")).toEqual([""]);
    expect(xmlList(doc.value, "none")).toEqual([]);
  });

  it("skips attributes, comments and processing instructions", () => {
    const doc = parseXml(`<xml a="1" b='>'><!-- c --><A x="y">1<?pi?></A><B/></xml>`);
    expect(doc.value.A).toBe("1");
    expect(doc.value.B).toBe("");
  });

  it("accepts a BOM and surrounding whitespace", () => {
    expect(parseXml("\uFEFF  <xml><a>1</a></xml>\n").value.a).toBe("1");
  });

  it("rejects malformed documents with one readable line", () => {
    expectDecodeError("", "expected a root element");
    expectDecodeError("not xml", "expected a root element");
    expectDecodeError("<xml><a>1</b></xml>", "expected </a>");
    expectDecodeError("<xml><a>1</a>", "unterminated element <xml>");
    expectDecodeError("<xml></xml><extra/>", "content after the root element");
    expectDecodeError("<xml><a><![CDATA[x</a></xml>", "unterminated CDATA");
    expectDecodeError("<xml><ab>1</a></xml>", "expected </ab>");
    expectDecodeError("<xml><a>1</ab></xml>", "expected </a>");
    expectDecodeError("<xml a='1></xml>", "unterminated attribute");
  });

  it("limits nesting depth", () => {
    const deep = `${"<a>".repeat(40)}x${"</a>".repeat(40)}`;
    expectDecodeError(deep, "nesting deeper than 32");
    expect(parseXml(deep, { maxDepth: 64 }).root).toBe("a");
  });
});

describe("xmlElement", () => {
  it("writes strings as CDATA, numbers bare, objects and arrays as elements", () => {
    expect(xmlElement("xml", { A: "t", N: 1, B: true, L: [{ X: "1" }, { X: "2" }], U: undefined })).toBe(
      "<xml><A><![CDATA[t]]></A><N>1</N><B>true</B><L><X><![CDATA[1]]></X></L><L><X><![CDATA[2]]></X></L></xml>",
    );
  });

  it("splits ]]> so text cannot end its CDATA section", () => {
    expect(cdata("a]]>b")).toBe("<![CDATA[a]]]]><![CDATA[>b]]>");
    expect(parseXml(xmlElement("x", "a]]>b<c>")).value["#text"]).toBe("a]]>b<c>");
  });

  it("refuses invalid element names and non-finite numbers", () => {
    expect(() => xmlElement("a b", "x")).toThrow(EncodeError);
    expect(() => xmlElement("<a>", "x")).toThrow(EncodeError);
    expect(() => xmlElement("a", Number.NaN)).toThrow(EncodeError);
  });

  it("round-trips any text through write and parse", () => {
    fc.assert(
      fc.property(fc.string({ unit: "grapheme" }), (text) => {
        expect(parseXml(xmlElement("xml", { T: text })).value.T).toBe(text);
      }),
      { numRuns: 500 },
    );
  });
});

describe("properties", () => {
  it("parseXml throws only DecodeError on arbitrary input", () => {
    const xmlish = fc.array(fc.constantFrom("<", ">", "/", "a", "xml", "<![CDATA[", "]]>", "&", ";", "&amp;", "<!--", "-->", "<?", "?>", '"', "=", " ", "<!DOCTYPE"), {
      maxLength: 40,
    });
    fc.assert(
      fc.property(fc.oneof(fc.string(), xmlish.map((p) => p.join(""))), (s) => {
        try {
          parseXml(s);
        } catch (e) {
          expect(e).toBeInstanceOf(DecodeError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
