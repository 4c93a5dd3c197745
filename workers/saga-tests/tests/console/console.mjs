// Drives the admin console in headless Chromium, as an admin would: log in, place an order, watch
// its saga timeline reach PAID, look at the stock, the schemas and the live events, and take a
// screenshot. Run by tests/console.rs, which starts the stack and passes its address in the
// environment; prints what it saw as JSON on its last line.
import { createRequire } from "node:module";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const require = createRequire(`${env("OMS_BROWSER_DIR")}/`);
const { chromium } = require("playwright-core");

const browser = await chromium.launch({
  executablePath: env("OMS_CHROMIUM"),
  headless: true,
  args: ["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1400, height: 900 } });
  const problems = [];
  page.on("pageerror", (error) => problems.push(error.message));
  page.setDefaultTimeout(60_000);

  await page.goto(`${env("GATEWAY_URL")}/console/`);
  await page.fill("#login-form [name=username]", "admin");
  await page.fill("#login-form [name=password]", "wrong");
  await page.click("#login-form button");
  await page.waitForSelector("#login-error:has-text('Invalid')");
  await page.fill("#login-form [name=password]", env("PASSWORD"));
  await page.click("#login-form button");
  await page.waitForSelector("#app:not([hidden])");

  await page.fill("#place-form [name=customerId]", env("CUSTOMER"));
  await page.fill("#place-form [name=productId]", env("PRODUCT"));
  await page.fill("#place-form [name=quantity]", "2");
  await page.click("#place-form button");
  await page.waitForSelector("#order:not([hidden])");
  const orderId = await page.textContent("#order-id");
  // The live stream refreshes the open order as its saga moves on.
  await page.waitForSelector("#timeline tbody td:has-text('CREATED → RESERVED')");
  await page.waitForSelector("#timeline tbody td:has-text('RESERVED → PAID')");
  // Each topic is recorded on its own: the inventory's and the payment step's answers may
  // show a moment later.
  await page.waitForSelector("#timeline tbody td:has-text('StockReserved')");
  await page.waitForSelector("#timeline tbody td:has-text('PaymentAuthorized')");
  await page.waitForSelector("#order-status:has-text('PAID')");
  const timeline = await page.$$eval("#timeline tbody tr", (rows) =>
    rows.map((r) => [...r.cells].map((c) => c.textContent)));
  // The list follows the live stream too.
  await page.waitForSelector(`#orders tbody tr[data-id='${orderId}'] td:has-text('PAID')`);
  await page.screenshot({ path: env("SCREENSHOT"), fullPage: true });

  await page.click("nav button[data-tab=live]");
  await page.waitForSelector(`#live tbody td:has-text('${orderId}')`);
  const live = await page.$$eval("#live tbody tr", (rows) => rows.length);

  await page.click("nav button[data-tab=stock]");
  await page.waitForSelector(`#stock tbody td:has-text('${env("PRODUCT")}')`);
  const stock = await page.$$eval("#stock tbody tr", (rows) =>
    rows.map((r) => [...r.cells].map((c) => c.textContent)));

  await page.click("nav button[data-tab=schemas]");
  await page.click("#subjects li >> nth=0");
  await page.waitForSelector("#schema:has-text('\"type\": \"record\"')");
  const subjects = await page.$$eval("#subjects li", (items) => items.map((i) => i.textContent));

  console.log(JSON.stringify({ orderId, timeline, live, stock, subjects, problems }));
} finally {
  await browser.close();
}
