// Drives headless Chromium for TestDeflateBrowser (../../deflate_test.go):
// a page opens a WebSocket to a wsedge echo server (Chromium offers
// permessage-deflate on its own: "permessage-deflate; client_max_window_bits"),
// sends ../deflate/messages.mjs's messages one by one and checks each echo
// byte for byte. Prints one JSON line: {"extensions": ..., "echoed": N,
// "bytes": total payload bytes} or {"error": ...}.
//
// Environment: WSEDGE_URL, CHROMIUM (the browser binary), WSEDGE_COUNT,
// WSEDGE_SEED, WSEDGE_STEP_TIMEOUT_MS.
import { chromium } from 'playwright-core';
import { messages } from '../deflate/messages.mjs';

const url = process.env.WSEDGE_URL;
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const count = Number(process.env.WSEDGE_COUNT || 40);
const seed = Number(process.env.WSEDGE_SEED || 1);
const timeoutMs = Number(process.env.WSEDGE_STEP_TIMEOUT_MS || 60000);

// echo runs in the page.
function echo({ url, src, count, seed, timeoutMs }) {
  const messages = new Function('return ' + src)();
  const msgs = messages(count, seed);
  return new Promise((resolve) => {
    const ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    const timer = setTimeout(() => resolve({ error: `timeout after ${i} messages` }), timeoutMs);
    let i = 0;
    let bytes = 0;
    const done = (r) => {
      clearTimeout(timer);
      ws.close(1000);
      resolve(r);
    };
    const send = () => ws.send(msgs[i].data);
    ws.onopen = send;
    ws.onerror = () => done({ error: `error after ${i} messages` });
    ws.onclose = (e) => {
      if (i < msgs.length) done({ error: `closed ${e.code} after ${i} messages` });
    };
    ws.onmessage = (e) => {
      const m = msgs[i];
      let ok;
      if (m.binary) {
        const got = new Uint8Array(e.data);
        ok = e.data instanceof ArrayBuffer && got.length === m.data.length && got.every((b, j) => b === m.data[j]);
        bytes += m.data.length;
      } else {
        ok = e.data === m.data;
        bytes += new TextEncoder().encode(m.data).length;
      }
      if (!ok) {
        done({ error: `message ${i}: echo differs (binary ${m.binary})` });
        return;
      }
      i++;
      if (i === msgs.length) {
        done({ extensions: ws.extensions, echoed: i, bytes });
        return;
      }
      send();
    };
  });
}

const browser = await chromium.launch({
  executablePath,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  timeout: timeoutMs,
});
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(timeoutMs);
  page.on('pageerror', (e) => console.error('page error:', e));
  const result = await page.evaluate(echo, { url, src: messages.toString(), count, seed, timeoutMs });
  process.stdout.write(JSON.stringify(result) + '\n');
} finally {
  await browser.close();
}
