// Node.js `ws` client for TestDeflateNode (../../deflate_test.go): offers
// permessage-deflate (ws's default offer), compresses every message
// (threshold 0), sends messages.mjs's messages one by one to an echo
// server and checks each echo byte for byte. Prints one JSON line:
// {"extensions": "...", "echoed": N, "bytes": total payload bytes}.
// Usage: node echo.mjs ws://127.0.0.1:PORT/ws COUNT SEED
import WebSocket from 'ws';
import { messages } from './messages.mjs';

const [url, count, seed] = process.argv.slice(2);
const msgs = messages(Number(count), Number(seed));
const ws = new WebSocket(url, { perMessageDeflate: { threshold: 0 }, maxPayload: 1 << 21 });
let i = 0;
let bytes = 0;
const fail = (why) => {
  console.error(why);
  process.exit(1);
};
const send = () => {
  const m = msgs[i];
  ws.send(m.data, { binary: m.binary, compress: true });
};
ws.on('open', () => {
  if (!ws.extensions.startsWith('permessage-deflate')) fail(`no permessage-deflate: ${JSON.stringify(ws.extensions)}`);
  send();
});
ws.on('message', (data, isBinary) => {
  const m = msgs[i];
  const want = m.binary ? Buffer.from(m.data) : Buffer.from(m.data, 'utf8');
  if (isBinary !== m.binary || !Buffer.from(data).equals(want)) {
    fail(`message ${i}: echo of ${data.length} bytes (binary ${isBinary}) differs from ${want.length} bytes (binary ${m.binary})`);
  }
  bytes += want.length;
  i++;
  if (i === msgs.length) {
    console.log(JSON.stringify({ extensions: ws.extensions, echoed: i, bytes }));
    ws.close(1000);
    return;
  }
  send();
});
ws.on('close', (code) => {
  if (i !== msgs.length) fail(`closed with ${code} after ${i} messages`);
});
ws.on('error', (e) => fail(`error: ${e.message}`));
