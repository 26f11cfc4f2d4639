// Drives headless Chromium for TestBrowserClientRecovers
// (clients_browser_test.go): a page served over http from 127.0.0.1 loads
// client/js/wsedge.js as a module, connects with a token, subscribes to two
// channels and reports every state change and publication as one JSON
// line on stdout. The Go test kills and restarts the server; commands on
// stdin (one per line) make the page act: "queue" publishes five messages
// on its own channel while disconnected (the offline queue), "close" ends
// the client and the script.
//
// Environment: PAGE_URL, WSEDGE_URL, WSEDGE_TOKEN, CHROMIUM,
// WSEDGE_STEP_TIMEOUT_MS.
import { chromium } from 'playwright-core';
import readline from 'node:readline';

const pageUrl = process.env.PAGE_URL;
const url = process.env.WSEDGE_URL;
const token = process.env.WSEDGE_TOKEN;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const timeoutMs = Number(process.env.WSEDGE_STEP_TIMEOUT_MS || 30000);

function emit(ev) {
  process.stdout.write(JSON.stringify(ev) + '\n');
}

// start runs in the page.
async function start({ url, token }) {
  const { Client } = window.wsedge;
  const client = new Client(url, {
    getToken: async () => token,
    backoff: { min: 200, max: 1000, factor: 2 },
    readTimeout: 5000,
    commandTimeout: 20000,
  });
  window.client = client;
  client.on('state', (e) => window.report({ event: 'state', ...e }));
  client.connect();
  const onUnrecovered = (pos) => window.report({ event: 'unrecovered', ...pos });
  const feed = client.subscribe('room:feed', (p) => window.report({ event: 'pub', channel: p.channel, offset: p.offset, epoch: p.epoch, data: p.data }), { onUnrecovered });
  const own = client.subscribe('room:own', (p) => window.report({ event: 'pub', channel: p.channel, offset: p.offset, epoch: p.epoch, data: p.data }), { onUnrecovered });
  await Promise.all([feed.ready, own.ready]);
  await window.report({ event: 'ready' });
}

// queue runs in the page: five publishes issued while disconnected.
function queue() {
  const c = window.client;
  const state = c.state;
  for (let i = 1; i <= 5; i++) {
    c.publish('room:own', { n: i }).then(
      (pos) => window.report({ event: 'published', n: i, offset: pos.offset, epoch: pos.epoch }),
      (e) => window.report({ event: 'publish_failed', n: i, code: e.code, message: e.message }),
    );
  }
  return window.report({ event: 'queued', state });
}

if (!pageUrl || !url || !token) {
  console.error('recover.js: PAGE_URL, WSEDGE_URL and WSEDGE_TOKEN are required');
  process.exit(2);
}

let status = 0;
const browser = await chromium.launch({
  executablePath,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  timeout: timeoutMs,
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(timeoutMs);
  page.on('pageerror', (e) => console.error('page error:', e));
  page.on('console', (m) => console.error('page console:', m.text()));
  await page.exposeFunction('report', emit);
  await page.goto(pageUrl);
  await page.waitForFunction(() => window.wsedge !== undefined);
  await page.evaluate(start, { url, token });
  const lines = readline.createInterface({ input: process.stdin });
  for await (const line of lines) {
    if (line === 'queue') {
      await page.evaluate(queue);
    } else if (line === 'close') {
      await page.evaluate(() => window.client.close());
      emit({ event: 'done' });
      break;
    }
  }
} catch (e) {
  console.error('recover.js:', e);
  status = 1;
} finally {
  await browser.close();
}
process.exit(status);
