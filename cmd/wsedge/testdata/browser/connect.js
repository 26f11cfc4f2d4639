// Drives headless Chromium for TestBrowserPersonalChannel (browser_test.go).
// A page connects to wsedge as a browser application must: the WebSocket API
// cannot set headers, so the token travels as a second subprotocol entry.
// Every event the page sees goes to stdout as one JSON line, as it happens:
// the Go test publishes when it reads the "subscribed" line, so the two
// processes need no other channel between them.
//
// Environment: WSEDGE_URL, WSEDGE_TOKEN (a valid token whose subs include the
// personal channel), WSEDGE_BAD_TOKEN (one the server must refuse), CHROMIUM
// (the browser binary), WSEDGE_STEP_TIMEOUT_MS (bound on each step).
import { chromium } from 'playwright-core';

const url = process.env.WSEDGE_URL;
const token = process.env.WSEDGE_TOKEN;
const badToken = process.env.WSEDGE_BAD_TOKEN;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const timeoutMs = Number(process.env.WSEDGE_STEP_TIMEOUT_MS || 30000);

function emit(ev) {
  process.stdout.write(JSON.stringify(ev) + '\n');
}

// personal runs in the page: connect with the valid token, report the
// negotiated subprotocol, the subscribed push and the first publication, then
// close. It resolves on close, so a server that closes early ends the step
// instead of leaving it to the timeout.
function personal({ url, token, timeoutMs }) {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, ['wsedge.v1.json', 'token.' + token]);
    const timer = setTimeout(() => {
      ws.close();
      reject(new Error(`no publication within ${timeoutMs} ms`));
    }, timeoutMs);
    ws.onopen = () => window.report({ event: 'open', protocol: ws.protocol });
    ws.onerror = () => window.report({ event: 'error' });
    ws.onclose = (e) => {
      clearTimeout(timer);
      window.report({ event: 'close', code: e.code, clean: e.wasClean }).then(resolve);
    };
    ws.onmessage = (e) => {
      const msg = JSON.parse(e.data);
      if (msg.subscribed) {
        window.report({ event: 'subscribed', ...msg.subscribed });
      } else if (typeof msg.channel === 'string') {
        window.report({ event: 'publication', channel: msg.channel, offset: msg.offset, data: msg.data });
        ws.close(1000, 'done');
      } else {
        window.report({ event: 'message', raw: e.data });
      }
    };
  });
}

// refused runs in the page: a connection with a token the server refuses
// must never open; the browser reports only an error and a close (1006:
// the handshake's 401 is not visible to scripts).
function refused({ url, token, timeoutMs }) {
  return new Promise((resolve, reject) => {
    let opened = false;
    let errored = false;
    const ws = new WebSocket(url, ['wsedge.v1.json', 'token.' + token]);
    const timer = setTimeout(() => {
      ws.close();
      reject(new Error(`the refused connection did not close within ${timeoutMs} ms`));
    }, timeoutMs);
    // Closing at once keeps a wrongly accepted token from waiting out the
    // timeout: the close that follows reports opened: true.
    ws.onopen = () => {
      opened = true;
      ws.close(1000, 'should not have opened');
    };
    ws.onerror = () => { errored = true; };
    ws.onclose = (e) => {
      clearTimeout(timer);
      window.report({ event: 'refused', opened, error: errored, code: e.code }).then(resolve);
    };
  });
}

if (!url || !token || !badToken) {
  console.error('connect.js: WSEDGE_URL, WSEDGE_TOKEN and WSEDGE_BAD_TOKEN are required');
  process.exit(2);
}

let status = 0;
const browser = await chromium.launch({
  executablePath,
  // As root in a container there is no sandbox to be had; without the
  // background-networking flag Chromium tries hosts this machine cannot reach.
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  timeout: timeoutMs,
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(timeoutMs);
  page.on('pageerror', (e) => console.error('page error:', e));
  page.on('console', (m) => console.error('page console:', m.text()));
  await page.exposeFunction('report', emit);
  await page.evaluate(personal, { url, token, timeoutMs });
  await page.evaluate(refused, { url, token: badToken, timeoutMs });
  emit({ event: 'done' });
} catch (e) {
  console.error('connect.js:', e);
  status = 1;
} finally {
  await browser.close();
}
process.exit(status);
