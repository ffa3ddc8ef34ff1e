/**
 * Helpers of the WeCom simulator's own tests: a simulator on a hand-moved clock with the apps and
 * bot the tests use, JSON calls with tokens, and a tiny callback receiver that checks signatures
 * and decrypts with the project's WeComCrypto.
 */
import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { expect } from "vitest";
import { parseCallbackEnvelope, WeComCrypto } from "../src/index.js";
import { SimClock, type WeComSimOptions, WeComSimulator } from "../src/sim/wecom.js";

/** A JSON answer. */
export type Json = Record<string, unknown>;

/** A random EncodingAESKey (43 base64 characters decoding to 32 bytes). */
export function aesKey(): string {
  return randomBytes(32).toString("base64").slice(0, 43);
}

export const CORP = "ww1436e0e65a779aee";
export const KF_APP = { agentId: 1000002, secret: "kf-app-secret-0123456789", token: "kfAppToken", encodingAESKey: aesKey(), kf: true, name: "support" };
export const OTHER_APP = { agentId: 1000003, secret: "other-app-secret-0123456789", token: "otherToken", encodingAESKey: aesKey(), members: ["zhangsan", "lisi", "wangwu"] };
export const BOT = { botId: "aibK7fQ2xZp9LmN4rT8vW1yB3cD6eG0hJ", token: "botToken", encodingAESKey: aesKey(), name: "helper" };
export const START = Date.UTC(2024, 4, 22, 2, 0, 0);

/** A simulator on a SimClock, and calls against it. */
export interface SimHarness {
  sim: WeComSimulator;
  clock: SimClock;
  /** Call `/cgi-bin/{path}` (POST JSON when a body is given) and parse the JSON answer. */
  call(path: string, body?: unknown): Promise<Json>;
  /** A valid access_token of an app (the KF app by default). */
  token(secret?: string): Promise<string>;
  /** POST an API with a fresh token of the KF app. */
  kfCall(api: string, body: unknown): Promise<Json>;
  /** POST an API with a fresh token of the other app. */
  appCall(api: string, body: unknown): Promise<Json>;
  /** A fresh KF account, so tests do not see each other's messages. */
  newAccount(): string;
  close(): Promise<void>;
}

let accounts = 0;

/** Start a simulator with the KF app, another app with members, and a bot, on a SimClock at START. */
export async function startSim(extra: Partial<WeComSimOptions> = {}): Promise<SimHarness> {
  const clock = new SimClock(START);
  const sim = await WeComSimulator.start({ corpId: CORP, apps: [KF_APP, OTHER_APP], bots: [BOT], clock, callbackTimeoutMs: 1000, retryIntervalMs: 20, ...extra });
  const call = async (path: string, body?: unknown): Promise<Json> => {
    const res = await fetch(`${sim.url}/cgi-bin/${path}`, body === undefined ? {} : { method: "POST", body: JSON.stringify(body) });
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    return (await res.json()) as Json;
  };
  const token = async (secret = KF_APP.secret): Promise<string> => {
    const r = await call(`gettoken?corpid=${CORP}&corpsecret=${secret}`);
    expect(r.errcode).toBe(0);
    return r.access_token as string;
  };
  return {
    sim,
    clock,
    call,
    token,
    kfCall: async (api, body) => call(`${api}?access_token=${await token()}`, body),
    appCall: async (api, body) => call(`${api}?access_token=${await token(OTHER_APP.secret)}`, body),
    newAccount: () => {
      const id = `wkAJ2GCAAASSm4_FhToWMFea0xB${String(++accounts).padStart(5, "0")}`;
      sim.addKfAccount(id, `account ${accounts}`);
      return id;
    },
    close: () => sim.close(),
  };
}

/** What the receiver got. */
export interface Received {
  method: string;
  query: URLSearchParams;
  body: string;
  plaintext?: string;
  error?: string;
}

/** A running receiver. */
export interface Receiver {
  url: string;
  received: Received[];
  close(): Promise<void>;
}

/** How the receiver answers the n-th request (1-based); "hang" never answers. */
export type Respond = (n: number, r: Received, crypto: WeComCrypto) => { status: number; body?: string } | "hang";

/** A tiny callback receiver: checks the signature, decrypts with WeComCrypto, answers per `respond`. */
export async function receiver(crypto: WeComCrypto, respond: Respond = () => ({ status: 200 })): Promise<Receiver> {
  const received: Received[] = [];
  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const q = new URL(req.url ?? "/", "http://x").searchParams;
      const r: Received = { method: req.method ?? "", query: q, body: Buffer.concat(chunks).toString("utf8") };
      const query = { msg_signature: q.get("msg_signature") ?? "", timestamp: q.get("timestamp") ?? "", nonce: q.get("nonce") ?? "" };
      try {
        if (req.method === "GET") r.plaintext = crypto.verifyUrl({ ...query, echostr: q.get("echostr") ?? "" });
        else r.plaintext = crypto.decryptCallback(query, parseCallbackEnvelope(r.body).encrypt);
      } catch (e) {
        r.error = (e as Error).message;
      }
      received.push(r);
      const answer = respond(received.length, r, crypto);
      if (answer === "hang") return; // never answer: the simulator must give up and retry
      res.writeHead(answer.status, { "Content-Type": "text/plain" });
      res.end(answer.body ?? "");
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}/hook?x=1`,
    received,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/** The KF app's callback crypto. */
export const appCrypto = () => new WeComCrypto({ token: KF_APP.token, encodingAESKey: KF_APP.encodingAESKey, receiveId: CORP });
/** The bot's callback crypto. */
export const botCrypto = () => new WeComCrypto({ token: BOT.token, encodingAESKey: BOT.encodingAESKey, receiveId: "" });

/** A text message body. */
export const text = (content: string) => ({ msgtype: "text", text: { content } });
