// The chat page: one room, channel chat:lobby. Messages you send while
// offline show as pending and go out (in order) when the connection is
// back; messages missed while away are recovered from the room's history.
import { Client } from '/wsedge.js';

const CHANNEL = 'chat:lobby';
const $ = (id) => document.getElementById(id);
const config = await (await fetch('/config.json')).json();

function line(cls, who, text) {
  const li = document.createElement('li');
  li.className = cls;
  if (who) {
    const b = document.createElement('span');
    b.className = 'who';
    b.textContent = who;
    li.append(b);
  }
  li.append(document.createTextNode(text));
  $('messages').append(li);
  li.scrollIntoView({ block: 'end' });
  return li;
}

$('join').addEventListener('submit', (e) => {
  e.preventDefault();
  const name = $('name').value.trim();
  if (!name) return;
  $('join').hidden = true;
  $('chat').hidden = false;
  start(name);
  $('text').focus();
});

function start(name) {
  const client = new Client(config.ws, {
    // The application's backend signs tokens; asked again on every
    // (re)connect and when the server wants a refresh.
    getToken: async () => {
      const r = await fetch('/token?user=' + encodeURIComponent(name));
      if (!r.ok) throw new Error('token: ' + r.status);
      return (await r.text()).trim();
    },
  });
  client.on('state', (e) => {
    $('state').textContent = e.to === 'disconnected' && e.delay ? `reconnecting in ${(e.delay / 1000).toFixed(1)} s` : e.to;
    $('state').className = 'state ' + e.to;
  });
  client.subscribe(CHANNEL, (pub) => {
    const m = pub.data || {};
    line(m.from === name ? 'mine' : '', m.from + ':', m.text);
  }, {
    onUnrecovered: () => line('notice', '', 'some messages could not be recovered'),
  });
  client.connect();
  window.chat = client; // for the screenshot test and the curious

  $('send').addEventListener('submit', async (e) => {
    e.preventDefault();
    const text = $('text').value.trim();
    if (!text) return;
    $('text').value = '';
    const pending = client.state === 'connected' ? null : line('mine pending', name + ':', text + ' (queued)');
    try {
      await client.publish(CHANNEL, { from: name, text });
      pending?.remove(); // the publication itself arrives through the subscription
    } catch (err) {
      if (pending) pending.textContent = `not sent (${err.code}): ${text}`;
      else line('notice', '', `not sent (${err.code}): ${text}`);
    }
  });
}
