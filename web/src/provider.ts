// The room connection: y-protocols sync and awareness over Quire's websocket, plus our RAW JSON
// messages (protocol.ts). Reconnects with backoff, except when the server closed for good
// (revoked, not found, bad request). A request is answered, or fails when the socket closes
// first or no answer comes in time: it never waits forever.
import * as Y from 'yjs';
import * as syncProtocol from 'y-protocols/sync';
import * as awarenessProtocol from 'y-protocols/awareness';
import * as encoding from 'lib0/encoding';
import * as decoding from 'lib0/decoding';
import {
  Answers,
  ClientRequest,
  RAW,
  SaveAnswer,
  ServerMessage,
  answerId,
  parseServerMessage,
  requestFrame,
  saveFrame,
} from './protocol';

const SYNC = 0;
const AWARENESS = 1;

/** Close codes after which reconnecting cannot help. */
const FINAL_CLOSES = new Set([4400, 4403, 4404, 4500, 1003]);

/** How long a request waits for its answer: longer than the server takes to start a kernel
 * (60 s) before it answers an execute, so a slow start is not mistaken for a lost answer. */
const ANSWER_TIMEOUT_MS = 90_000;

/** A request the server did not answer: the socket closed first, or the answer never came. */
class RequestFailed extends Error {}

interface Waiting {
  resolve: (answer: ServerMessage) => void;
  reject: (error: RequestFailed) => void;
  timer: ReturnType<typeof setTimeout>;
}

export type Status =
  | { kind: 'connecting' }
  | { kind: 'synced' }
  | { kind: 'disconnected'; retryInMs: number }
  | { kind: 'closed'; code: number; reason: string };

export class RoomProvider {
  readonly doc: Y.Doc;
  readonly awareness: awarenessProtocol.Awareness;
  private socket: WebSocket | null = null;
  private attempts = 0;
  private stopped = false;
  private nextRequest = 1;
  private waiting = new Map<number, Waiting>();
  onStatus: (status: Status) => void = () => {};
  onRaw: (message: ServerMessage) => void = () => {};

  constructor(private url: string, doc: Y.Doc) {
    this.doc = doc;
    this.awareness = new awarenessProtocol.Awareness(doc);
    doc.on('update', (update: Uint8Array, origin: unknown) => {
      if (origin === this) return;
      const encoder = encoding.createEncoder();
      encoding.writeVarUint(encoder, SYNC);
      syncProtocol.writeUpdate(encoder, update);
      this.send(encoding.toUint8Array(encoder));
    });
    this.awareness.on('update', ({ added, updated, removed }: any, origin: unknown) => {
      if (origin !== 'local') return;
      const changed = added.concat(updated, removed);
      this.sendAwareness(changed);
    });
    window.addEventListener('beforeunload', () => {
      awarenessProtocol.removeAwarenessStates(this.awareness, [doc.clientID], 'unload');
    });
    this.connect();
  }

  private connect() {
    if (this.stopped) return;
    this.onStatus({ kind: 'connecting' });
    const socket = new WebSocket(this.url);
    socket.binaryType = 'arraybuffer';
    this.socket = socket;
    socket.onopen = () => {
      this.attempts = 0;
      const encoder = encoding.createEncoder();
      encoding.writeVarUint(encoder, SYNC);
      syncProtocol.writeSyncStep1(encoder, this.doc);
      this.send(encoding.toUint8Array(encoder));
      if (this.awareness.getLocalState() !== null) this.sendAwareness([this.doc.clientID]);
    };
    socket.onmessage = (event) => this.receive(new Uint8Array(event.data as ArrayBuffer));
    socket.onclose = (event) => {
      this.socket = null;
      this.failWaiting('the connection closed before the server answered');
      const others = Array.from(this.awareness.getStates().keys()).filter(
        (id) => id !== this.doc.clientID,
      );
      awarenessProtocol.removeAwarenessStates(this.awareness, others, this);
      if (FINAL_CLOSES.has(event.code) || this.stopped) {
        this.stopped = true;
        this.onStatus({ kind: 'closed', code: event.code, reason: event.reason });
        return;
      }
      const retryInMs = Math.min(2500, 100 * 2 ** this.attempts++);
      this.onStatus({ kind: 'disconnected', retryInMs });
      setTimeout(() => this.connect(), retryInMs);
    };
  }

  private receive(bytes: Uint8Array) {
    const decoder = decoding.createDecoder(bytes);
    switch (decoding.readVarUint(decoder)) {
      case SYNC: {
        const encoder = encoding.createEncoder();
        encoding.writeVarUint(encoder, SYNC);
        const kind = syncProtocol.readSyncMessage(decoder, encoder, this.doc, this);
        if (encoding.length(encoder) > 1) this.send(encoding.toUint8Array(encoder));
        if (kind === syncProtocol.messageYjsSyncStep2) this.onStatus({ kind: 'synced' });
        break;
      }
      case AWARENESS:
        awarenessProtocol.applyAwarenessUpdate(
          this.awareness,
          decoding.readVarUint8Array(decoder),
          this,
        );
        break;
      case RAW: {
        const message = parseServerMessage(decoding.readVarString(decoder));
        if (!message) break;
        const id = answerId(message);
        const waiting = id === null ? undefined : this.waiting.get(id);
        if (id !== null && waiting) {
          this.waiting.delete(id);
          clearTimeout(waiting.timer);
          waiting.resolve(message);
        }
        this.onRaw(message);
        break;
      }
    }
  }

  private send(bytes: Uint8Array) {
    // (lib0's encoders make their arrays over an ArrayBuffer, never a shared one.)
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(bytes as Uint8Array<ArrayBuffer>);
  }

  private sendAwareness(clients: number[]) {
    const encoder = encoding.createEncoder();
    encoding.writeVarUint(encoder, AWARENESS);
    encoding.writeVarUint8Array(
      encoder,
      awarenessProtocol.encodeAwarenessUpdate(this.awareness, clients),
    );
    this.send(encoding.toUint8Array(encoder));
  }

  /** Sends one of our RAW JSON requests; resolves with the server's answer to it. */
  request<R extends ClientRequest>(request: R): Promise<Answers[R['type']]> {
    const id = this.nextRequest++;
    return this.exchange(id, requestFrame(request, id)) as Promise<Answers[R['type']]>;
  }

  /** Asks the server to save now. */
  save(): Promise<SaveAnswer> {
    const id = this.nextRequest++;
    return this.exchange(id, saveFrame(id)) as Promise<SaveAnswer>;
  }

  /** Sends a request frame; its answer, or a RequestFailed. */
  private exchange(id: number, frame: Uint8Array): Promise<ServerMessage> {
    if (this.socket?.readyState !== WebSocket.OPEN) {
      return Promise.reject(new RequestFailed('not connected to the server'));
    }
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        reject(new RequestFailed('the server did not answer in time'));
      }, ANSWER_TIMEOUT_MS);
      this.waiting.set(id, { resolve, reject, timer });
      this.send(frame);
    });
  }

  private failWaiting(reason: string) {
    for (const waiting of this.waiting.values()) {
      clearTimeout(waiting.timer);
      waiting.reject(new RequestFailed(reason));
    }
    this.waiting.clear();
  }

  close() {
    this.stopped = true;
    this.socket?.close();
  }
}
