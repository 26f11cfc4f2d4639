// Node.js `ws` peer for wsedge bench: echo mode and the broadcast subset of
// wsedge.v1.json (subscribe, publish, pushes with a per-channel offset).
// Flags: --listen host:port  --admin host:port  --echo
'use strict';
const http = require('http');
const { WebSocketServer } = require('ws');

function flag(name, def) {
  const i = process.argv.indexOf('--' + name);
  if (i < 0) return def;
  const v = process.argv[i + 1];
  return v === undefined || v.startsWith('--') ? true : v;
}
function hostPort(s) {
  const i = s.lastIndexOf(':');
  return { host: s.slice(0, i), port: Number(s.slice(i + 1)) };
}

const echo = process.argv.includes('--echo');
const listen = hostPort(flag('listen', '127.0.0.1:8080'));
const adminAddr = hostPort(flag('admin', '127.0.0.1:0'));

const channels = new Map(); // name -> { offset, subs: Set<ws> }
function chan(name) {
  let c = channels.get(name);
  if (!c) { c = { offset: 0, subs: new Set() }; channels.set(name, c); }
  return c;
}

function handle(ws, text) {
  let cmd;
  try { cmd = JSON.parse(text); } catch (e) { cmd = null; }
  if (!cmd || typeof cmd.id !== 'number') {
    ws.send('{"id":0,"error":{"code":400,"message":"bad command"}}');
    return;
  }
  const id = cmd.id;
  if (cmd.op === 'subscribe' && cmd.channel) {
    const c = chan(cmd.channel);
    c.subs.add(ws);
    (ws.chans || (ws.chans = [])).push(c);
    ws.send(`{"id":${id},"ok":true,"result":{"offset":${c.offset},"epoch":"peer"}}`);
  } else if (cmd.op === 'publish' && cmd.channel && cmd.data !== undefined) {
    const c = chan(cmd.channel);
    c.offset++;
    // Re-serialise data once per publish; every subscriber gets the same string.
    const push = `{"channel":${JSON.stringify(cmd.channel)},"offset":${c.offset},"data":${JSON.stringify(cmd.data)}}`;
    for (const s of c.subs) s.send(push);
    ws.send(`{"id":${id},"ok":true,"result":{"offset":${c.offset},"epoch":"peer"}}`);
  } else {
    ws.send(`{"id":${id},"error":{"code":400,"message":"unknown op"}}`);
  }
}

const server = http.createServer((req, res) => { res.writeHead(404); res.end(); });
const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: false,
  handleProtocols: (protocols) => (protocols.has('wsedge.v1.json') ? 'wsedge.v1.json' : false),
});
server.on('upgrade', (req, socket, head) => {
  if (req.url !== '/ws') { socket.destroy(); return; }
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('message', (data, isBinary) => {
      if (echo) ws.send(data, { binary: isBinary });
      else handle(ws, data.toString());
    });
    ws.on('close', () => { if (ws.chans) for (const c of ws.chans) c.subs.delete(ws); });
    ws.on('error', () => {});
  });
});

const admin = http.createServer((req, res) => {
  if (req.url === '/healthz') { res.end('ok\n'); return; }
  res.end(`# node has no goroutines\nnode_ws_clients ${wss.clients.size}\n`);
});

server.listen(listen.port, listen.host, () => {
  admin.listen(adminAddr.port, adminAddr.host, () => {
    const a = server.address(), b = admin.address();
    process.stderr.write(JSON.stringify({
      time: new Date().toISOString(), level: 'INFO', msg: 'listening', peer: 'node',
      ws: `${a.address}:${a.port}`, admin: `${b.address}:${b.port}`, echo, pid: process.pid,
    }) + '\n');
  });
});
