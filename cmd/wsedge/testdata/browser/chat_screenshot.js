// Drives headless Chromium for examples/chat's screenshot test
// (examples/chat/chat_test.go; it lives here for playwright-core's
// node_modules). Two pages join the chat as alice and bob, each sends a
// message, and once both see all of them the script saves a screenshot of
// alice's page and prints what each page shows as one JSON line.
//
// Environment: PAGE_URL, SCREENSHOT (the PNG to write), CHROMIUM,
// WSEDGE_STEP_TIMEOUT_MS.
import { chromium } from 'playwright-core';

const pageUrl = process.env.PAGE_URL;
const screenshot = process.env.SCREENSHOT;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const timeoutMs = Number(process.env.WSEDGE_STEP_TIMEOUT_MS || 30000);

if (!pageUrl || !screenshot) {
  console.error('chat_screenshot.js: PAGE_URL and SCREENSHOT are required');
  process.exit(2);
}

async function join(browser, name) {
  const page = await browser.newPage({ viewport: { width: 720, height: 520 } });
  page.setDefaultTimeout(timeoutMs);
  page.on('pageerror', (e) => console.error(name, 'page error:', e));
  page.on('console', (m) => console.error(name, 'console:', m.text()));
  await page.goto(pageUrl);
  await page.fill('#name', name);
  await page.click('#join button');
  await page.waitForSelector('#state.connected');
  return page;
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.click('#send button');
}

const texts = (page) => page.$$eval('#messages li', (els) => els.map((e) => e.textContent));

let status = 0;
const browser = await chromium.launch({
  executablePath,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  timeout: timeoutMs,
});
try {
  const alice = await join(browser, 'alice');
  const bob = await join(browser, 'bob');
  await say(alice, 'hello from alice');
  await alice.waitForFunction(() => document.querySelectorAll('#messages li').length === 1);
  await say(bob, 'hi alice, bob here');
  await alice.waitForFunction(() => document.querySelectorAll('#messages li').length === 2);
  await bob.waitForFunction(() => document.querySelectorAll('#messages li').length === 2);
  await say(alice, 'the offline queue keeps what I type on a train');
  for (const p of [alice, bob]) await p.waitForFunction(() => document.querySelectorAll('#messages li').length === 3);
  await alice.screenshot({ path: screenshot });
  process.stdout.write(JSON.stringify({ alice: await texts(alice), bob: await texts(bob), state: await alice.textContent('#state'), joinVisible: await alice.isVisible('#join') }) + '\n');
} catch (e) {
  console.error('chat_screenshot.js:', e);
  status = 1;
} finally {
  await browser.close();
}
process.exit(status);
