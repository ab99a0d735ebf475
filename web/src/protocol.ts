// Quire's RAW JSON messages (frame kind 2 of the room's websocket), as the server writes them
// today. Every RAW message the app reads or builds goes through this module: the types mirror
// the server's JSON field for field, so that they can be replaced by the types generated from
// the server's Rust definitions without touching the rest of the app.
import * as encoding from 'lib0/encoding';

/** The websocket frame kind of a RAW message (after SYNC 0 and AWARENESS 1). */
export const RAW = 2;

/** A request of ours; the provider adds `request_id`, which the answer names as `responseTo`. */
export type ClientRequest =
  | { type: 'execute'; cell_id: string }
  | { type: 'interrupt' }
  | { type: 'restart' }
  | { type: 'shutdown' }
  | { type: 'input_reply'; cell_id: string; value: string }
  | { type: 'lock'; cell_id: string }
  | { type: 'unlock'; cell_id: string }
  | { type: 'chat'; text: string };

export type RequestKind = ClientRequest['type'];

/** Every refusal: the request's type, the server's reason (`cell_id` for lock and unlock). */
export interface Refused<K extends string> {
  type: K;
  responseTo: number | null;
  status: 'refused';
  reason: string | null;
  cell_id?: string;
}

export type ExecuteAnswer =
  | { type: 'execute'; responseTo: number | null; status: 'queued'; run: string; cell_id: string }
  | Refused<'execute'>;

/** A granted lock: the server answers `"granted"` today; `"ok"` is accepted too (the status
 * the other answers use). Only `"refused"` is a refusal. */
export type LockAnswer =
  | {
      type: 'lock';
      responseTo: number | null;
      cell_id: string;
      status: 'granted' | 'ok';
      lease_ms?: number;
    }
  | Refused<'lock'>;

export type ChatAnswer =
  | { type: 'chat'; responseTo: number | null; status: 'ok'; id: number }
  | Refused<'chat'>;

/** The plain answer of the other requests. */
export type OkAnswer<K extends string> =
  | { type: K; responseTo: number | null; status: 'ok'; cell_id?: string; reason?: null }
  | Refused<K>;

/** The answer to each kind of request. */
export interface Answers {
  execute: ExecuteAnswer;
  interrupt: OkAnswer<'interrupt'>;
  restart: OkAnswer<'restart'>;
  shutdown: OkAnswer<'shutdown'>;
  input_reply: OkAnswer<'input_reply'>;
  lock: LockAnswer;
  unlock: OkAnswer<'unlock'>;
  chat: ChatAnswer;
}

export type Answer = Answers[RequestKind];

/** The answer to a RAW `"save"` (JupyterLab's message, not JSON: see `saveFrame`). */
export interface SaveAnswer {
  type: 'save';
  responseTo: number;
  status: 'success' | 'skipped' | 'failed';
}

/** One chat message. */
export interface ChatMessage {
  id: number;
  /** Milliseconds since the Unix epoch. */
  at: number;
  username: string;
  name: string;
  color: string;
  text: string;
}

/** What the server sends unasked. */
export type ServerEvent =
  | { type: 'permissions'; capabilities: string[] }
  /** Our copy holds a change the room refused: start again from the room's. */
  | { type: 'refused'; action: 'update'; reason: string; resync: boolean }
  /** A prompt of `input()` in a run we asked for. */
  | { type: 'input_request'; cell_id: string; run: string; prompt: string; password: boolean }
  | { type: 'input_closed'; cell_id: string; run: string }
  | { type: 'chat_history'; messages: ChatMessage[] }
  | { type: 'chat_message'; message: ChatMessage }
  /** Our update cannot be integrated (stale history). */
  | { type: 'conflict' };

export type ServerMessage = Answer | SaveAnswer | ServerEvent;

/** The reason of a refusal, or null when the answer is not one. */
export function refusal(answer: Answer): string | null {
  return answer.status === 'refused' ? answer.reason ?? 'refused' : null;
}

/** A RAW text from the server as one of our messages; null for anything else. */
export function parseServerMessage(text: string): ServerMessage | null {
  if (!text.startsWith('{')) return null;
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  if (typeof (value as { type?: unknown }).type !== 'string') return null;
  return value as ServerMessage;
}

/** The request id an answer answers, if it is an answer. */
export function answerId(message: ServerMessage): number | null {
  const id = 'responseTo' in message ? message.responseTo : null;
  return typeof id === 'number' ? id : null;
}

/** The frame of one of our requests, with its id. */
export function requestFrame(request: ClientRequest, requestId: number): Uint8Array {
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, RAW);
  encoding.writeVarString(encoder, JSON.stringify({ ...request, request_id: requestId }));
  return encoding.toUint8Array(encoder);
}

/** JupyterLab's save request: RAW `"save"` and a varUint id; the server saves now and answers
 * with a `SaveAnswer`. */
export function saveFrame(requestId: number): Uint8Array {
  const encoder = encoding.createEncoder();
  encoding.writeVarUint(encoder, RAW);
  encoding.writeVarString(encoder, 'save');
  encoding.writeVarUint(encoder, requestId);
  return encoding.toUint8Array(encoder);
}
