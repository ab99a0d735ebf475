// Generated from the Rust types of collab/src/protocol (ts-rs); do not edit.
// Regenerate: QUIRE_WRITE_GENERATED=1 cargo test -p collab --lib generated_typescript
// The messages are described in docs/protocol.md.

export type CellId = string;

export type RunId = string;

export type RequestKind = "execute" | "interrupt" | "restart" | "shutdown" | "input_reply" | "lock" | "unlock" | "chat";

export type ClientRequest = { "type": "execute", cell_id: CellId, } | { "type": "interrupt" } | { "type": "restart" } | { "type": "shutdown" } | { "type": "input_reply", cell_id: CellId, value: string, } | { "type": "lock", cell_id: CellId, } | { "type": "unlock", cell_id: CellId, } | { "type": "chat", text: string, };

export type Request = { request_id?: number, } & ({ "type": "execute", cell_id: CellId, } | { "type": "interrupt" } | { "type": "restart" } | { "type": "shutdown" } | { "type": "input_reply", cell_id: CellId, value: string, } | { "type": "lock", cell_id: CellId, } | { "type": "unlock", cell_id: CellId, } | { "type": "chat", text: string, });

export type Status = "ok" | "queued" | "refused" | "success" | "failed";

export type Reply = { type: RequestKind, 
/**
 * The request's `request_id` (`null` when it gave none).
 */
responseTo: number | null, status: Status, reason?: string, cell_id?: CellId, run?: RunId, 
/**
 * How long a granted lock lasts without its holder touching the cell, in milliseconds.
 */
lease_ms?: number, 
/**
 * The id the chat gave a posted message.
 */
id?: number, };

export type SaveReply = { "type": "save", responseTo: number, 
/**
 * `success` or `failed`.
 */
status: Status, };

export type ChatMessage = { 
/**
 * Assigned by the journal, increasing.
 */
id: number, 
/**
 * Milliseconds since the Unix epoch.
 */
at: number, username: string, name: string, color: string, text: string, };

export type RefusedAction = "update";

export type ServerEvent = { "type": "permissions", capabilities: Array<string>, } | { "type": "refused", action: RefusedAction, reason: string, resync: boolean, } | { "type": "input_request", cell_id: CellId, run: RunId, prompt: string, password: boolean, } | { "type": "input_closed", cell_id: CellId, run: RunId, } | { "type": "chat_history", messages: Array<ChatMessage>, } | { "type": "chat_message", message: ChatMessage, } | { "type": "conflict" };

export type ServerMessage = ServerEvent | Reply | SaveReply;

export enum CloseCode { "GoingAway" = 1001, "Session" = 1003, "TooLarge" = 1009, "ServerError" = 1011, "TryAgain" = 1013, "BadRequest" = 4400, "Revoked" = 4403, "NotFound" = 4404, "TooManyRefusals" = 4429, "LoadFailure" = 4500 }
