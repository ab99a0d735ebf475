// The room connection: y-protocols sync and awareness over Quire's websocket, plus the RAW JSON
// messages of our own (execute, refusals, permissions, locks, chat). Reconnects with backoff,
// except when the server closed for good (revoked, not found, bad request).
import * as Y from 'yjs';
import * as syncProtocol from 'y-protocols/sync';
import * as awarenessProtocol from 'y-protocols/awareness';
import * as encoding from 'lib0/encoding';
import * as decoding from 'lib0/decoding';

const SYNC = 0;
const AWARENESS = 1;
const RAW = 2;

/** Close codes after which reconnecting cannot help. */
const FINAL_CLOSES = new Set([4400, 4403, 4404, 4500, 1003]);

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
  private waiting = new Map<number, (reply: any) => void>();
  onStatus: (status: Status) => void = () => {};
  onRaw: (message: any) => void = () => {};

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
        const text = decoding.readVarString(decoder);
        if (!text.startsWith('{')) break;
        let message: any;
        try {
          message = JSON.parse(text);
        } catch {
          break;
        }
        const answered = this.waiting.get(message.responseTo);
        if (answered && message.type !== 'input_request') {
          this.waiting.delete(message.responseTo);
          answered(message);
        }
        this.onRaw(message);
        break;
      }
    }
  }

  private send(bytes: Uint8Array) {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(bytes);
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
  request(message: Record<string, unknown>): Promise<any> {
    const id = this.nextRequest++;
    const encoder = encoding.createEncoder();
    encoding.writeVarUint(encoder, RAW);
    encoding.writeVarString(encoder, JSON.stringify({ ...message, request_id: id }));
    this.send(encoding.toUint8Array(encoder));
    return new Promise((resolve) => this.waiting.set(id, resolve));
  }

  /** RAW "save" + a request id: the server saves now and answers `{type: "save", status}`. */
  save(): Promise<any> {
    const id = this.nextRequest++;
    const encoder = encoding.createEncoder();
    encoding.writeVarUint(encoder, RAW);
    encoding.writeVarString(encoder, 'save');
    encoding.writeVarUint(encoder, id);
    this.send(encoding.toUint8Array(encoder));
    return new Promise((resolve) => this.waiting.set(id, resolve));
  }

  close() {
    this.stopped = true;
    this.socket?.close();
  }
}
