/**
 * Regenerate the README's console screenshots (`docs/console-live.png`, `docs/console-playground.png`):
 * the sandbox with its scripted conversation watched on the Live page, then a KF chat in the
 * Playground, in Debian's Chromium. Run: `npx tsx scripts/console-screenshots.ts`.
 */
import { chromium } from "playwright-core";
import { runSandbox, SANDBOX } from "../src/sim/sandbox.js";

const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"];
const docs = new URL("../docs/", import.meta.url).pathname;

const sandbox = await runSandbox({ write: () => undefined, port: 0 });
const browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: FLAGS });
try {
  const page = await (await browser.newContext({ viewport: { width: 1280, height: 800 }, locale: "zh-CN" })).newPage();
  await page.goto(`${sandbox.gateway.url}/console`);
  await page.getByTestId("login-token").fill(SANDBOX.adminToken);
  await page.getByTestId("login-submit").click();
  await page.getByTestId("nav-live").click();
  await sandbox.script();
  await page.locator('[data-testid="live-row"][data-direction="out"]').first().waitFor();
  await page.screenshot({ path: `${docs}console-live.png` });

  await page.getByTestId("nav-playground").click();
  await page.getByTestId("playground-channel").selectOption("kf");
  const say = async (who: "customer" | "agent", text: string) => {
    await page.getByTestId(`playground-${who}-input`).fill(text);
    await page.getByTestId(`playground-${who}-send`).click();
    await page.getByTestId(who === "customer" ? "playground-agent-log" : "playground-customer-log").getByText(text).waitFor({ timeout: 20_000 });
  };
  await say("customer", "你好，我上周买的耳机还没发货");
  await say("agent", "您好，我来帮您查一下订单");
  await say("customer", "订单号 20261130-0042");
  await say("agent", "已经催仓库了，今天下午发出，明天送到");
  await page.screenshot({ path: `${docs}console-playground.png` });
} finally {
  await browser.close();
  await sandbox.stop();
}
