// Quire's RAW JSON messages (frame kind 2 of the room's websocket). Every RAW message the app
// reads or builds goes through this module; their types are generated from the server's Rust
// definitions (collab/src/protocol, ts-rs) into ./generated/protocol.ts, so the app and the
// server cannot drift apart (docs/protocol.md describes the messages).
import * as encoding from 'lib0/encoding';

/** The websocket frame kind of a RAW message (after SYNC 0 and AWARENESS 1). */
export const RAW = 2;

import type {
  ChatMessage,
  ClientRequest,
  Reply,
  RequestKind,
  SaveReply,
  ServerEvent,
} from './generated/protocol';

export type { ChatMessage, ClientRequest, RequestKind, ServerEvent };

/** The answer to a request of kind `K` (the provider adds `request_id` to a request, which the
 * answer names as `responseTo`): `status` is `"refused"` with a `reason`, or `"ok"` (`"queued"`
 * with the `run` for an execute; `lease_ms` for a granted lock; the message `id` for a chat). */
export type AnswerTo<K extends RequestKind> = Reply & { type: K };

/** The answer to each kind of request. */
export type Answers = { [K in RequestKind]: AnswerTo<K> };

export type Answer = Reply;

/** The answer to a RAW `"save"` (JupyterLab's message, not JSON: see `saveFrame`). */
export type SaveAnswer = SaveReply;

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
