/**
 * The console in a real browser: Debian's Chromium driven by playwright-core, against a gateway
 * and the simulators on loopback ports. Login (a wrong token refused), the Live page showing a
 * message the simulator sent, a dead letter replayed with its button and then delivered, and
 * Playground round trips on KF and on the bot channel. Each page is kept as a screenshot in
 * `artifacts/console/` (two of them are the README's).
 */
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { type Browser, chromium, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runSandbox, SANDBOX, type Sandbox } from "../src/sim/sandbox.js";
import { ADMIN, AGENT, eventually, type Stack, startStack } from "./stack.js";

/** Where Debian's package puts Chromium (`.ci/run` installs it when missing). */
export const CHROMIUM = "/usr/bin/chromium";
/** The flags the issue asks for: headless, and nothing that reaches for the network by itself. */
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"];
const ARTIFACTS = fileURLToPath(new URL("../artifacts/console/", import.meta.url));

let browser: Browser;
let stack: Stack;
let sandbox: Sandbox;

beforeAll(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });
  stack = await startStack({
    config: (raw) => {
      raw.delivery.maxAttempts = 2;
    },
  });
  sandbox = await runSandbox({ write: () => undefined, port: 0 });
}, 60_000);
afterAll(async () => {
  await browser?.close();
  await stack?.stop();
  await sandbox?.stop();
});

async function newPage(): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "zh-CN" });
  const page = await context.newPage();
  // a page error or a CSP violation fails the test that caused it
  const problems: string[] = [];
  page.on("pageerror", (e) => problems.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error" && /Content Security Policy|Refused to/.test(m.text())) problems.push(m.text());
  });
  (page as Page & { problems: string[] }).problems = problems;
  return page;
}

const problemsOf = (page: Page) => (page as Page & { problems: string[] }).problems;

async function logIn(page: Page, baseUrl: string, token: string): Promise<void> {
  await page.goto(`${baseUrl}/console`);
  await page.getByTestId("login-token").fill(token);
  await page.getByTestId("login-submit").click();
}

const shot = (page: Page, name: string) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });

describe("console in Chromium", { timeout: 60_000 }, () => {
  it("refuses a wrong token, then logs in and shows every page", async () => {
    const page = await newPage();
    await logIn(page, stack.gw.url, "wrong-token");
    await expect.poll(() => page.getByTestId("login-error").textContent(), { timeout: 10_000 }).toContain("wrong admin token");
    expect(await page.getByTestId("nav-live").count()).toBe(0);
    await shot(page, "login");
    await page.getByTestId("login-token").fill(ADMIN);
    await page.getByTestId("login-submit").click();
    await page.getByTestId("nav-live").waitFor();
    for (const nav of ["conversations", "outbox", "accounts", "health", "doctor", "playground", "live"]) {
      await page.getByTestId(`nav-${nav}`).click();
      await page.waitForLoadState("networkidle").catch(() => undefined);
      await shot(page, nav);
    }
    // the session cookie is HttpOnly: the page's script cannot read it
    expect(await page.evaluate("document.cookie")).toBe("");
    expect(problemsOf(page)).toEqual([]);
  });

  it("shows a message sent by the simulator on the Live page, in and then out", async () => {
    const page = await newPage();
    await logIn(page, stack.gw.url, ADMIN);
    await page.getByTestId("nav-live").click();
    await stack.wecom.appUserSendsText(AGENT, "browser-user", "浏览器里看得到吗");
    const row = page.locator('[data-testid="live-row"][data-direction="in"][data-channel="app"]', { hasText: "浏览器里看得到吗" });
    await row.waitFor({ timeout: 10_000 });
    await expect.poll(() => row.getAttribute("data-state"), { timeout: 10_000 }).toBe("delivered");
    const to = stack.omni.received.find((r) => r.body.Content === "浏览器里看得到吗")?.body.FromUserId as string;
    await stack.omni.sendAgentReply({ ToUserId: to, WorkerNum: "8001", WorkerName: "小王", MsgType: "text", Content: "看得到" });
    await page.locator('[data-testid="live-row"][data-direction="out"][data-channel="app"]', { hasText: "看得到" }).waitFor({ timeout: 10_000 });
    await shot(page, "live-rows");
    expect(problemsOf(page)).toEqual([]);
  });

  it("replays a dead letter with its button, and the message is then delivered", async () => {
    stack.omni.setFailure("http500");
    await stack.wecom.appUserSendsText(AGENT, "dead-letter-user", "请重放这条");
    await eventually(async () => (await stack.gw.store.listOutbox(["dead"], { limit: 10 })).length > 0, 15_000, "a dead letter");
    stack.omni.setFailure(false);
    const page = await newPage();
    await logIn(page, stack.gw.url, ADMIN);
    await page.getByTestId("nav-outbox").click();
    const dead = page.locator('[data-testid="outbox-row"][data-state="dead"]');
    await dead.first().waitFor({ timeout: 10_000 });
    await shot(page, "outbox-dead");
    await dead.first().getByTestId("outbox-replay").click();
    await eventually(() => stack.omni.received.some((r) => r.body.Content === "请重放这条"), 15_000, "the replayed message at the 全媒体");
    await expect.poll(() => dead.count(), { timeout: 10_000 }).toBe(0);
    const audit = await stack.gw.store.listAudit({ limit: 5 });
    expect(audit[0]).toMatchObject({ action: "replay", actor: "console" });
    expect(await page.getByTestId("replay-all").count()).toBe(1);
    expect(problemsOf(page)).toEqual([]);
  });

  for (const channel of ["kf", "bot"] as const) {
    it(`plays a ${channel} round trip in the Playground: the customer writes, the agent answers, both sides see it`, async () => {
      const page = await newPage();
      await logIn(page, sandbox.gateway.url, SANDBOX.adminToken);
      await page.getByTestId("nav-playground").click();
      await page.getByTestId("playground-channel").selectOption(channel);
      const ask = channel === "kf" ? "我的订单到哪了？" : "会议室还有空吗？";
      const reply = channel === "kf" ? "已经发货，明天到" : "下午三点有空";
      await page.getByTestId("playground-customer-input").fill(ask);
      await page.getByTestId("playground-customer-send").click();
      const agentLog = page.getByTestId("playground-agent-log");
      const customerLog = page.getByTestId("playground-customer-log");
      await agentLog.getByText(ask).waitFor({ timeout: 15_000 });
      await page.getByTestId("playground-agent-input").fill(reply);
      await page.getByTestId("playground-agent-send").click();
      await customerLog.getByText(reply).waitFor({ timeout: 20_000 });
      // both sides: the customer's phone shows the question and the answer, the desk both too
      await expect.poll(async () => (await customerLog.textContent()) ?? "").toContain(ask);
      await agentLog.getByText(reply).waitFor({ timeout: 5000 });
      if (channel === "bot") {
        // the streamed answer is one message, updated in place
        expect(await customerLog.locator(":scope > *", { hasText: reply }).count()).toBe(1);
      }
      await shot(page, `playground-${channel}`);
      expect(problemsOf(page)).toEqual([]);
    });
  }

  it("shows the doctor's checks as rows with a stable id and a status", async () => {
    const page = await newPage();
    await logIn(page, stack.gw.url, ADMIN);
    await page.getByTestId("nav-doctor").click();
    await page.getByRole("button", { name: /run/i }).click();
    const row = page.locator('[data-testid="doctor-row"][data-check="app.support.gettoken"]');
    await row.waitFor({ timeout: 20_000 });
    expect(await row.getAttribute("data-status")).toBe("ok");
    await shot(page, "doctor-run");
    expect(problemsOf(page)).toEqual([]);
  });
});
