/**
 * A small multipart/form-data reader for the simulator's `media/upload` (RFC 7578): enough for one
 * file field per request, as WeCom's upload takes. No streaming: the body is already in memory and
 * capped by the server.
 * @module
 */

/** One part of a multipart body. */
export interface MultipartPart {
  /** The form field name (`media` for WeCom uploads). */
  name: string;
  /** The file name, when the part is a file. */
  filename?: string;
  /** The part's Content-Type, when given. */
  contentType?: string;
  /** The part's bytes. */
  data: Buffer;
}

/** The boundary of a multipart/form-data Content-Type header, or undefined when there is none. */
export function multipartBoundary(contentType: string | undefined): string | undefined {
  if (contentType === undefined || !/^\s*multipart\/form-data\s*;/i.test(contentType)) return undefined;
  const m = /;\s*boundary=(?:"([^"]+)"|([^;\s]+))/i.exec(contentType);
  const b = m?.[1] ?? m?.[2];
  return b !== undefined && b.length > 0 && b.length <= 200 ? b : undefined;
}

/** A parameter of a Content-Disposition header (`name`, `filename`), quoted or bare; `filename*` understood. */
function dispositionParam(header: string, key: string): string | undefined {
  const ext = new RegExp(`;\\s*${key}\\*\\s*=\\s*(?:UTF-8|utf-8)''([^;]+)`).exec(header);
  if (ext?.[1] !== undefined) {
    try {
      return decodeURIComponent(ext[1].trim());
    } catch {
      // fall back to the plain parameter
    }
  }
  const m = new RegExp(`;\\s*${key}\\s*=\\s*(?:"((?:[^"\\\\]|\\\\.)*)"|([^;\\s]+))`, "i").exec(header);
  if (m === null) return undefined;
  return m[1] !== undefined ? m[1].replace(/\\(.)/g, "$1") : m[2];
}

/**
 * Split a multipart body into parts. Header values are read as UTF-8 (browsers and undici send
 * UTF-8 file names raw). Parts without a Content-Disposition name are skipped.
 * @returns the parts, or undefined when the body is not well-formed for this boundary
 */
export function parseMultipart(body: Buffer, boundary: string): MultipartPart[] | undefined {
  const delimiter = Buffer.from(`--${boundary}`);
  const parts: MultipartPart[] = [];
  let pos = body.indexOf(delimiter);
  if (pos < 0) return undefined;
  for (;;) {
    pos += delimiter.length;
    if (body[pos] === 0x2d && body[pos + 1] === 0x2d) return parts; // "--": the closing delimiter
    // the rest of the delimiter line (transport padding), then CRLF
    const lineEnd = body.indexOf("\r\n", pos);
    if (lineEnd < 0) return undefined;
    const headerEnd = body.indexOf("\r\n\r\n", lineEnd);
    if (headerEnd < 0) return undefined;
    const next = body.indexOf(Buffer.concat([Buffer.from("\r\n"), delimiter]), headerEnd + 4);
    if (next < 0) return undefined;
    const headers = body.toString("utf8", lineEnd + 2, headerEnd).split("\r\n");
    let disposition: string | undefined;
    let contentType: string | undefined;
    for (const h of headers) {
      const colon = h.indexOf(":");
      if (colon < 0) continue;
      const key = h.slice(0, colon).trim().toLowerCase();
      const value = h.slice(colon + 1).trim();
      if (key === "content-disposition") disposition = value;
      else if (key === "content-type") contentType = value;
    }
    const name = disposition === undefined ? undefined : dispositionParam(disposition, "name");
    if (name !== undefined) {
      const part: MultipartPart = { name, data: body.subarray(headerEnd + 4, next) };
      const filename = disposition === undefined ? undefined : dispositionParam(disposition, "filename");
      if (filename !== undefined) part.filename = filename;
      if (contentType !== undefined) part.contentType = contentType;
      parts.push(part);
    }
    pos = next + 2;
  }
}
