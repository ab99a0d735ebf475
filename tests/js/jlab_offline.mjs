#!/usr/bin/env node
// A JupyterLab client that goes offline and comes back, driven line by line. It is built from
// the JavaScript JupyterLab 4 runs (yjs, y-websocket 1.x's WebsocketProvider as
// @jupyter/docprovider uses it, @jupyter/ydoc's YNotebook), like jlab_client.mjs, but stays up
// so a test can act between its steps: y-websocket's own disconnect() and connect() are what a
// dropped network and its return do, and on reconnecting the provider answers the server's
// SyncStep1 with a SyncStep2 of everything the server lacks (the whole delete set included).
//
// Usage: node jlab_offline.mjs --ws-base ws://HOST:PORT/ --room json:notebook:FILE_ID
//          --session-id ID [--token T] [--cookie NAME=VALUE] [--timeout-ms N]
// Commands on stdin, one JSON object per line; one JSON answer per command on stdout:
//   {"cmd":"dump"}                 -> {"event":"dump","state":{...},"cells":[...],"connected":bool}
//   {"cmd":"disconnect"}           -> {"event":"disconnected"}
//   {"cmd":"edit","cell":N,"text":S} -> {"event":"edited"} (appended to cell N's source, and
//                                     state.dirty set, as JupyterLab's model does)
//   {"cmd":"connect"}              -> {"event":"connected","synced":bool,"echoed":bool,
//                                     "raw":[RAW messages received since]} once synced and the
//                                     server has echoed all our updates, or when time runs out
//   {"cmd":"quit"}
// Before any command it prints {"event":"synced"} (or exits 4 if it never syncs).

import { createInterface } from 'node:readline';
import { parseArgs } from 'node:util';

import { YNotebook } from '@jupyter/ydoc';
import * as decoding from 'lib0/decoding';
import WebSocket from 'ws';
import { WebsocketProvider } from 'y-websocket';
import * as Y from 'yjs';

const { values: args } = parseArgs({
  options: {
    'ws-base': { type: 'string' },
    room: { type: 'string' },
    'session-id': { type: 'string' },
    token: { type: 'string' },
    cookie: { type: 'string' },
    'timeout-ms': { type: 'string', default: '15000' }
  },
  strict: true
});
if (!args['ws-base'] || !args.room || !args['session-id']) {
  process.stderr.write('usage: node jlab_offline.mjs --ws-base URL --room NAME --session-id ID [--token T] [--cookie C]\n');
  process.exit(1);
}
const timeoutMs = Number(args['timeout-ms']);
const base = args['ws-base'].endsWith('/') ? args['ws-base'] : args['ws-base'] + '/';

// A guest's browser sends its cookie with the websocket handshake.
class CookieWebSocket extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols, args.cookie ? { headers: { Cookie: args.cookie } } : {});
  }
}

const notebook = new YNotebook({ disableDocumentWideUndoRedo: true });
const ydoc = notebook.ydoc;
// What the server sent us, alone: our clock there says the server applied our updates.
const serverView = new Y.Doc();
let raw = [];
let wake = () => {};
const instrumented = new WeakSet();
const instrument = ws => {
  if (!ws || instrumented.has(ws)) return;
  instrumented.add(ws);
  ws.addEventListener('message', event => {
    try {
      const decoder = decoding.createDecoder(new Uint8Array(event.data));
      const type = decoding.readVarUint(decoder);
      if (type === 0) {
        const sub = decoding.readVarUint(decoder);
        if (sub === 1 || sub === 2) Y.applyUpdate(serverView, decoding.readVarUint8Array(decoder));
      } else if (type === 2) {
        raw.push(decoding.readVarString(decoder));
      }
    } catch (e) {
      process.stderr.write(`jlab_offline: undecodable frame: ${e}\n`);
    }
    wake();
  });
};

const params = { sessionId: args['session-id'] };
if (args.token) params.token = args.token;
const provider = new WebsocketProvider(base + 'api/collaboration/room', args.room, ydoc, {
  disableBc: true,
  params,
  awareness: notebook.awareness,
  WebSocketPolyfill: CookieWebSocket
});
instrument(provider.ws);
let synced = false;
provider.on('status', () => {
  instrument(provider.ws);
  wake();
});
provider.on('connection-close', () => wake());
provider.on('sync', isSynced => {
  synced = isSynced;
  wake();
});

const until = (check, ms = timeoutMs) =>
  new Promise(resolve => {
    const timer = setTimeout(() => {
      wake = () => {};
      resolve(false);
    }, ms);
    wake = () => {
      if (check()) {
        clearTimeout(timer);
        wake = () => {};
        resolve(true);
      }
    };
    wake();
  });

const clockOf = doc => Y.decodeStateVector(Y.encodeStateVector(doc)).get(ydoc.clientID) ?? 0;
const echoed = () => clockOf(serverView) >= clockOf(ydoc);
const say = message => new Promise(resolve => process.stdout.write(JSON.stringify(message) + '\n', resolve));

if (!(await until(() => synced))) {
  process.stderr.write('jlab_offline: never synced\n');
  process.exit(4);
}
// @jupyter/docprovider does this on first sync.
ydoc.getMap('state').set('document_id', provider.roomname);
await say({ event: 'synced' });

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (!line.trim()) continue;
  const command = JSON.parse(line);
  switch (command.cmd) {
    case 'dump':
      await say({
        event: 'dump',
        connected: provider.wsconnected,
        state: ydoc.getMap('state').toJSON(),
        cells: notebook.cells.map(c => c.toJSON())
      });
      break;
    case 'disconnect':
      provider.disconnect();
      await until(() => provider.ws === null && !provider.wsconnected);
      await say({ event: 'disconnected' });
      break;
    case 'edit': {
      const cell = notebook.getCell(command.cell);
      const end = cell.ysource.length;
      cell.updateSource(end, end, command.text);
      notebook.dirty = true;
      await say({ event: 'edited' });
      break;
    }
    case 'connect': {
      raw = [];
      synced = false;
      provider.connect();
      const ok = await until(() => synced && echoed());
      await say({ event: 'connected', synced, echoed: echoed(), ok, raw });
      break;
    }
    case 'quit':
      provider.destroy();
      notebook.dispose();
      process.exit(0);
      break;
    default:
      process.stderr.write(`jlab_offline: unknown command ${line}\n`);
      process.exit(1);
  }
}
provider.destroy();
process.exit(0);
