#!/usr/bin/env node
// A command-line client built from the very JavaScript JupyterLab 4 runs for real-time
// collaboration: yjs, y-websocket's WebsocketProvider (y-websocket 1.x, as @jupyter/docprovider
// depends on), y-protocols' Awareness and @jupyter/ydoc's YNotebook. It does what
// @jupyter/docprovider's WebSocketProvider does:
//
//   1. GET  {base}api/me                                    -> identity (awareness `user`)
//   2. PUT  {base}api/collaboration/session/{encodeURIComponent(path)}
//           {"format":"json","type":"notebook"}             -> fileId, sessionId
//      (both through ServerConnection.makeRequest's logic: `?<timestamp>` cache buster,
//      `Authorization: token T`, and the string body's own `text/plain;charset=UTF-8` type)
//   3. new WebsocketProvider(wsBase + 'api/collaboration/room', 'json:notebook:' + fileId,
//        model.ydoc, {disableBc: true, params: {sessionId, token}, awareness: model.awareness,
//        WebSocketPolyfill: ws})
//   4. on 'sync' (true): state.set('document_id', provider.roomname), as JupyterLab does
//   5. optionally append (or insert --at) text in cell N (YNotebook API), wait for the echo
//   6. optionally save exactly as WebSocketProvider.save() does (RAW "save" + id, read the
//      RAW JSON reply through a 'message' listener on provider.ws)
//   7. print one line of JSON and exit 0
//
// Usage: node jlab_client.mjs --base URL --token T --path P [--append-to-cell N --text S]
//          [--save] [--expect-users N] [--linger-ms N] [--timeout-ms N] [--dump-notebook]
//          [--expect-close] [--file-id ID] [--session-id ID]
// Exit codes: 0 ok, 1 usage/protocol error, 2 HTTP error, 3 websocket closed by the server,
// 4 timeout.

import { parseArgs } from 'node:util';

import { YNotebook } from '@jupyter/ydoc';
import * as decoding from 'lib0/decoding';
import * as encoding from 'lib0/encoding';
import WebSocket from 'ws';
import { WebsocketProvider } from 'y-websocket';
import * as Y from 'yjs';

const RAW_MESSAGE_TYPE = 2; // Jupyter's own messages: a varString
const MESSAGE_NAMES = { 0: 'sync', 1: 'awareness', 2: 'raw', 3: 'queryAwareness' };
const SYNC_NAMES = { 0: 'step1', 1: 'step2', 2: 'update' };

class ClientError extends Error {
  constructor(message, code = 1) {
    super(message);
    this.code = code;
  }
}

function usage(message) {
  throw new ClientError(
    `${message}\nusage: node jlab_client.mjs --base URL --token T --path P ` +
      '[--append-to-cell N --text S [--at UTF16_OFFSET]] [--save] [--expect-users N] [--linger-ms N] [--timeout-ms N] [--dump-notebook]\n          [--expect-close] [--file-id ID] [--session-id ID]'
  );
}

function parseCli() {
  let values;
  try {
    ({ values } = parseArgs({
      options: {
        base: { type: 'string' },
        token: { type: 'string', default: '' },
        path: { type: 'string' },
        'append-to-cell': { type: 'string' },
        text: { type: 'string' },
        at: { type: 'string' },
        save: { type: 'boolean', default: false },
        'expect-users': { type: 'string', default: '0' },
        'linger-ms': { type: 'string', default: '0' },
        'timeout-ms': { type: 'string', default: '15000' },
        'dump-notebook': { type: 'boolean', default: false },
        'expect-close': { type: 'boolean', default: false },
        'file-id': { type: 'string' },
        'session-id': { type: 'string' }
      },
      strict: true
    }));
  } catch (e) {
    usage(e.message);
  }
  if (!values.base || !values.path) usage('--base and --path are required');
  if ((values['append-to-cell'] === undefined) !== (values.text === undefined)) {
    usage('--append-to-cell and --text go together');
  }
  const int = name => {
    const v = values[name];
    if (v === undefined) return undefined;
    if (!/^\d+$/.test(v)) usage(`--${name} wants a non-negative integer, got ${JSON.stringify(v)}`);
    return Number(v);
  };
  return {
    base: values.base.endsWith('/') ? values.base : values.base + '/',
    token: values.token,
    path: values.path,
    appendToCell: int('append-to-cell'),
    text: values.text,
    at: int('at'),
    save: values.save,
    dumpNotebook: values['dump-notebook'],
    expectClose: values['expect-close'],
    fileId: values['file-id'],
    sessionId: values['session-id'],
    expectUsers: int('expect-users'),
    lingerMs: int('linger-ms'),
    timeoutMs: int('timeout-ms')
  };
}

/**
 * A request made the way @jupyterlab/services' ServerConnection.makeRequest makes it: a cache
 * buster appended (settings.init.cache is 'no-store'), a Request built from the init (a string
 * body gives it `Content-Type: text/plain;charset=UTF-8`, exactly as in a browser), then
 * `Authorization: token T`, and `Content-Type: application/json` only when none is set yet.
 */
async function http(method, url, token, body) {
  const busted = url + (/\?/.test(url) ? '&' : '?') + new Date().getTime();
  const request = new Request(busted, {
    method,
    body: body === undefined ? undefined : JSON.stringify(body)
  });
  let authenticated = false;
  if (token) {
    authenticated = true;
    request.headers.append('Authorization', `token ${token}`);
  }
  if (!request.headers.has('Content-Type') && authenticated) {
    request.headers.set('Content-Type', 'application/json');
  }
  const sentType = request.headers.get('Content-Type');
  let response;
  try {
    response = await fetch(request);
  } catch (e) {
    throw new ClientError(`${method} ${url} failed: ${e.cause?.message ?? e.message}`, 2);
  }
  const text = await response.text();
  if (!response.ok) {
    throw new ClientError(
      `${method} ${busted} (Content-Type: ${sentType}, as JupyterLab sends it) -> ` +
        `HTTP ${response.status}: ${text.slice(0, 500)}`,
      2
    );
  }
  try {
    return { status: response.status, body: JSON.parse(text) };
  } catch {
    throw new ClientError(`${method} ${url} -> HTTP ${response.status}, not JSON: ${text.slice(0, 500)}`, 2);
  }
}

/** Describes one websocket frame: "sync.step1", "awareness", "raw", ... */
function frameKind(bytes) {
  try {
    const decoder = decoding.createDecoder(bytes);
    const type = decoding.readVarUint(decoder);
    if (type === 0) return `sync.${SYNC_NAMES[decoding.readVarUint(decoder)] ?? 'unknown'}`;
    return MESSAGE_NAMES[type] ?? `unknown(${type})`;
  } catch {
    return 'undecodable';
  }
}

async function main() {
  const args = parseCli();
  const wsBase = args.base.replace(/^http/, 'ws');

  // 1. Identity, as JupyterLab's User manager fetches it.
  const me = (await http('GET', `${args.base}api/me`, args.token)).body;
  if (!me || typeof me.identity !== 'object' || typeof me.identity.username !== 'string') {
    throw new ClientError(`GET api/me: no identity in ${JSON.stringify(me)}`, 2);
  }

  // 2. The document session (@jupyter/docprovider requestDocSession).
  const sessionUrl = `${args.base}api/collaboration/session/${encodeURIComponent(args.path)}`;
  const session = await http('PUT', sessionUrl, args.token, { format: 'json', type: 'notebook' });
  for (const key of ['format', 'type', 'fileId', 'sessionId']) {
    if (typeof session.body[key] !== 'string') {
      throw new ClientError(`session PUT reply lacks "${key}": ${JSON.stringify(session.body)}`, 2);
    }
  }
  const { format, type } = session.body;
  // Overrides, to see how the server refuses a stale session or an unknown file.
  const fileId = args.fileId ?? session.body.fileId;
  const sessionId = args.sessionId ?? session.body.sessionId;

  // 3. The shared model and the provider, as JupyterLab builds them.
  const notebook = new YNotebook({ disableDocumentWideUndoRedo: true });
  const ydoc = notebook.ydoc;
  const awareness = notebook.awareness;
  const roomname = `${format}:${type}:${fileId}`;

  // Instrumentation only (never changes what goes on the wire): every frame each way, every
  // close, the RAW messages, and a document made only of what the server sent (to see the echo).
  const sent = {};
  const received = {};
  const closes = [];
  const statuses = [];
  const rawMessages = [];
  const serverView = new Y.Doc();
  const instrumented = new WeakSet();
  let wake = () => {};
  const t0 = Date.now();
  const debug = process.env.JLAB_CLIENT_DEBUG
    ? (...m) => process.stderr.write(`[${Date.now() - t0} ms] ${m.join(' ')}\n`)
    : () => {};
  const instrument = ws => {
    if (!ws || instrumented.has(ws)) return;
    instrumented.add(ws);
    const send = ws.send.bind(ws);
    ws.send = (data, ...rest) => {
      const kind = frameKind(new Uint8Array(data));
      sent[kind] = (sent[kind] ?? 0) + 1;
      debug('sent', kind, data.byteLength ?? data.length);
      return send(data, ...rest);
    };
    ws.addEventListener('message', event => {
      const bytes = new Uint8Array(event.data);
      const kind = frameKind(bytes);
      received[kind] = (received[kind] ?? 0) + 1;
      debug('received', kind, bytes.length);
      try {
        const decoder = decoding.createDecoder(bytes);
        const messageType = decoding.readVarUint(decoder);
        if (messageType === 0) {
          const sub = decoding.readVarUint(decoder);
          if (sub === 1 || sub === 2) Y.applyUpdate(serverView, decoding.readVarUint8Array(decoder));
        } else if (messageType === RAW_MESSAGE_TYPE) {
          rawMessages.push(decoding.readVarString(decoder));
        }
      } catch (e) {
        process.stderr.write(`jlab_client: could not decode a ${kind} frame: ${e}\n`);
      }
      wake();
    });
  };

  const provider = new WebsocketProvider(wsBase + 'api/collaboration/room', roomname, ydoc, {
    disableBc: true,
    params: args.token ? { sessionId, token: args.token } : { sessionId },
    awareness,
    WebSocketPolyfill: WebSocket
  });
  instrument(provider.ws);
  provider.on('status', ({ status }) => {
    statuses.push(status);
    instrument(provider.ws);
    wake();
  });
  provider.on('connection-close', event => {
    debug('closed', event?.code, event?.reason);
    closes.push({ code: event?.code ?? null, reason: event?.reason ?? '' });
    wake();
  });
  provider.on('connection-error', () => wake());
  // Every other user seen in awareness during the session (they may have left by the end).
  const seenUsers = new Map();
  awareness.on('change', () => {
    for (const [id, state] of awareness.getStates()) {
      if (id !== ydoc.clientID && state && state.user) {
        seenUsers.set(id, state.user.name ?? state.user.username ?? null);
      }
    }
    wake();
  });
  // RtcContentProvider sets `autosave` when it creates the model; the provider sets `user`
  // once the identity is known.
  awareness.setLocalStateField('autosave', true);
  awareness.setLocalStateField('user', me.identity);

  let hasSynced = false;
  const onSync = isSynced => {
    if (isSynced) {
      hasSynced = true;
      provider.off('sync', onSync);
      // @jupyter/docprovider does exactly this on first sync.
      ydoc.getMap('state').set('document_id', provider.roomname);
    }
    wake();
  };
  provider.on('sync', onSync);

  const cleanup = () => {
    try {
      provider.destroy();
    } catch {}
    try {
      notebook.dispose();
    } catch {}
  };

  /** Waits until check() holds; gives up on a close JupyterLab treats as fatal, or on time. */
  const until = (what, check, timeoutMs = args.timeoutMs) =>
    new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        wake = () => {};
        const last = closes.at(-1);
        reject(
          new ClientError(
            `timed out after ${timeoutMs} ms waiting for ${what}` +
              (last ? ` (last close: ${last.code} ${JSON.stringify(last.reason)}, ${closes.length} closes)` : ''),
            last ? 3 : 4
          )
        );
      }, timeoutMs);
      wake = () => {
        const fatal = args.expectClose
          ? undefined
          : closes.find(c => [4400, 4404, 4500, 1003].includes(c.code));
        if (fatal) {
          clearTimeout(timer);
          wake = () => {};
          reject(
            new ClientError(
              `server closed the websocket: code=${fatal.code} reason=${JSON.stringify(fatal.reason)}`,
              3
            )
          );
        } else if (check()) {
          clearTimeout(timer);
          wake = () => {};
          resolve();
        }
      };
      wake();
    });

  try {
    if (args.expectClose) {
      // The first close the provider sees, exactly as JupyterLab's 'connection-close' handler
      // would (it gives the document up on 4400/4404/4500, shows a dialog on 1003).
      await until('the server to close the websocket', () => closes.length > 0);
      const report = { closed: closes[0].code, reason: closes[0].reason, synced: hasSynced };
      cleanup();
      await new Promise(resolve => process.stdout.write(JSON.stringify(report) + '\n', resolve));
      return 0;
    }
    await until('the sync event (SyncStep2 from the server)', () => hasSynced);

    if (args.appendToCell !== undefined) {
      if (args.appendToCell >= notebook.cells.length) {
        throw new ClientError(
          `--append-to-cell ${args.appendToCell}: notebook has ${notebook.cells.length} cells`
        );
      }
      const cell = notebook.getCell(args.appendToCell);
      // Offsets are UTF-16 code units, as the editor counts them. Default: the end.
      const length = cell.ysource.length;
      const at = args.at ?? length;
      if (at > length) throw new ClientError(`--at ${at}: cell ${args.appendToCell} has ${length} UTF-16 units`);
      cell.updateSource(at, at, args.text);
      // JupyterLab's document model marks the shared state dirty on a content change.
      notebook.dirty = true;
    }
    // Everything we wrote (the edit, dirty, document_id) must come back from the server:
    // it broadcasts every change to every client, the sender included.
    const ourClock = () => Y.decodeStateVector(Y.encodeStateVector(ydoc)).get(ydoc.clientID) ?? 0;
    const echoed = () =>
      (Y.decodeStateVector(Y.encodeStateVector(serverView)).get(ydoc.clientID) ?? 0) >= ourClock();
    await until("the server's echo of our updates", echoed);

    if (args.expectUsers > 0) {
      await until(
        `${args.expectUsers} other user(s) in awareness`,
        () => seenUsers.size >= args.expectUsers
      );
    }

    let saveStatus = null;
    if (args.save) {
      // Byte for byte what @jupyter/docprovider's WebSocketProvider.save() does.
      const ws = provider.ws;
      if (!ws) throw new ClientError('no websocket to save through', 3);
      const saveId = 1;
      let reply = null;
      const handler = event => {
        const decoder = decoding.createDecoder(new Uint8Array(event.data));
        try {
          if (decoding.readVarUint(decoder) !== RAW_MESSAGE_TYPE) return;
        } catch {
          return;
        }
        let parsed = null;
        try {
          parsed = JSON.parse(decoding.readVarString(decoder));
        } catch {
          return;
        }
        if (parsed && parsed.type === 'save' && parsed.responseTo === saveId) {
          reply = parsed;
          wake(); // the instrumentation listener ran before this one
        }
      };
      ws.addEventListener('message', handler);
      const encoder = encoding.createEncoder();
      encoding.writeVarUint(encoder, RAW_MESSAGE_TYPE);
      encoding.writeVarString(encoder, 'save');
      encoding.writeVarUint(encoder, saveId);
      ws.send(encoding.toUint8Array(encoder));
      try {
        await until(`the reply to save ${saveId}`, () => reply !== null);
      } finally {
        ws.removeEventListener('message', handler);
      }
      saveStatus = reply.status;
      // The server clears `dirty` after saving: wait for it (JupyterLab's dirty indicator).
      if (saveStatus === 'success' && args.appendToCell !== undefined) {
        await until('state.dirty back to false after the save', () => notebook.dirty === false);
      }
    }

    // RtcContentProvider.get/save: the file's metadata over REST (never its content), beside
    // the websocket. With `hash=1` it must agree with `state.hash` once saved, or JupyterLab
    // believes the file changed on disk.
    const contentsUrl =
      `${args.base}api/contents/${args.path.split('/').map(encodeURIComponent).join('/')}` +
      '?type=notebook&content=0&hash=1';
    const contents = (await http('GET', contentsUrl, args.token)).body;

    if (args.lingerMs > 0) {
      await new Promise(resolve => setTimeout(resolve, args.lingerMs));
    }

    const others = [...awareness.getStates().entries()].filter(([id]) => id !== ydoc.clientID);
    const report = {
      synced: true,
      fileId,
      sessionId,
      roomname,
      sessionStatus: session.status,
      cells: notebook.cells.map(c => ({ id: c.id, cell_type: c.cell_type, source: c.getSource() })),
      nbformat: notebook.nbformat,
      nbformat_minor: notebook.nbformat_minor,
      state: ydoc.getMap('state').toJSON(),
      saveStatus,
      contents,
      // Names of the other users seen (by client id) at any time; and those still present.
      awarenessUsers: [...seenUsers.values()],
      awarenessStates: others.map(([id, s]) => ({ clientID: id, ...s })),
      identity: me.identity,
      closes,
      statuses,
      wsConnected: provider.wsconnected,
      rawMessages,
      frames: { sent, received }
    };
    if (args.dumpNotebook) {
      // What JupyterLab renders and what it would write with "Download": YNotebook.toJSON().
      report.notebook = notebook.toJSON();
    }
    cleanup();
    await new Promise(resolve => process.stdout.write(JSON.stringify(report) + '\n', resolve));
    return 0;
  } catch (e) {
    cleanup();
    throw e;
  }
}

main().then(
  code => process.exit(code),
  e => {
    const code = e instanceof ClientError ? e.code : 1;
    process.stderr.write(`jlab_client: ${e instanceof ClientError ? e.message : e.stack ?? e}\n`);
    process.exit(code);
  }
);
