#!/usr/bin/env python3
"""A command-line client that behaves like an unmodified JupyterLab 4 RTC client.

It uses the real JupyterLab data model from PyPI (jupyter_ydoc's YNotebook over a
pycrdt.Doc) and speaks the y-websocket protocol over the `websockets` library:

  1. PUT {base}api/collaboration/session/{path}       -> fileId, sessionId
  2. ws  {base}api/collaboration/room/json:notebook:{fileId}?sessionId=..&token=..
  3. y-sync handshake (SyncStep1 both ways, SyncStep2 answers), awareness with `user`
  4. optionally append text to one cell's source and wait for the server's echo
  5. print one line of JSON built from YNotebook.get()

Exit codes: 0 ok, 1 usage/protocol error, 2 HTTP session error,
3 websocket closed by the server, 4 timeout.
"""
import argparse
import asyncio
import json
import sys
import urllib.error
import urllib.parse
import urllib.request

import websockets
from jupyter_ydoc import YNotebook
from pycrdt import (
    Awareness,
    Decoder,
    Doc,
    YMessageType,
    YSyncMessageType,
    create_awareness_message,
    create_sync_message,
    create_update_message,
    handle_sync_message,
)

MSG_RAW = 2  # Jupyter's own messages (a varString); pycrdt has no enum member for it
MSG_QUERY_AWARENESS = 3


class ClientError(Exception):
    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


def parse_state_vector(sv: bytes) -> dict:
    """Decode a lib0 state vector: varUint n, then n x (varUint client, varUint clock)."""
    dec = Decoder(sv)
    return {dec.read_var_uint(): dec.read_var_uint() for _ in range(dec.read_var_uint())}


def open_session(base: str, token: str, path: str) -> dict:
    """PUT api/collaboration/session/{path}, as JupyterLab does, and return the JSON body."""
    url = base + "api/collaboration/session/" + urllib.parse.quote(path, safe="")
    body = json.dumps({"format": "json", "type": "notebook"}).encode()
    req = urllib.request.Request(url, data=body, method="PUT", headers={
        "Authorization": f"token {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as e:
        raise ClientError(f"PUT {url} -> HTTP {e.code}: {e.read()[:500]!r}", 2)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ClientError(f"PUT {url} failed: {e}", 2)


class Client:
    def __init__(self, ws):
        self.ws = ws
        self.doc = Doc()
        self.nb = YNotebook(self.doc)  # the real JupyterLab notebook model
        self.awareness = Awareness(self.doc)
        self.synced = asyncio.Event()  # set on receiving SyncStep2
        self.applying_remote = False  # True while applying a server update: don't echo it
        self.outgoing = []  # local updates waiting to be sent
        # Everything the server sent, and only that: the echo of our edit shows up here.
        # (pycrdt.get_state(update) can't be used: it ignores blocks not starting at clock 0.)
        self.server_view = Doc()
        self.echo_clock = None  # our clock that the server must echo back
        self.echoed = asyncio.Event()
        self.doc.observe(self._on_doc_update)

    def _on_doc_update(self, event) -> None:
        # Called at commit of every transaction, local or remote; only forward local ones.
        if not self.applying_remote:
            self.outgoing.append(event.update)

    async def flush(self) -> None:
        while self.outgoing:
            await self.ws.send(create_update_message(self.outgoing.pop(0)))

    async def start(self) -> None:
        # y-websocket sends SyncStep1 with its state vector, then its awareness state.
        await self.ws.send(create_sync_message(self.doc))
        self.awareness.set_local_state({"user": {
            "username": "jlab-client", "name": "JLab Client", "display_name": "JLab Client",
            "initials": "JC", "color": "#1f77b4", "avatar_url": None}})
        await self.send_awareness()

    async def send_awareness(self) -> None:
        update = self.awareness.encode_awareness_update([self.awareness.client_id])
        await self.ws.send(create_awareness_message(update))

    async def read_loop(self) -> None:
        """Handle every server message until the socket closes (raises ConnectionClosed)."""
        while True:
            message = await self.ws.recv()  # raises ConnectionClosed(OK/Error) on any close
            if isinstance(message, str):
                raise ClientError(f"unexpected text frame: {message[:200]!r}")
            msg_type = message[0]
            if msg_type == YMessageType.SYNC:
                sub = message[1]
                self.applying_remote = True
                try:
                    # Applies Step2/Update; returns our SyncStep2 reply to a SyncStep1.
                    reply = handle_sync_message(message[1:], self.doc)
                finally:
                    self.applying_remote = False
                if reply is not None:
                    await self.ws.send(reply)
                if sub in (YSyncMessageType.SYNC_STEP2, YSyncMessageType.SYNC_UPDATE):
                    update = Decoder(message[2:]).read_message()
                    if update != b"\x00\x00":
                        self.server_view.apply_update(update)
                    if sub == YSyncMessageType.SYNC_STEP2:
                        self.synced.set()
                    if self.echo_clock is not None and parse_state_vector(
                            self.server_view.get_state()).get(self.doc.client_id, 0) >= self.echo_clock:
                        self.echoed.set()
            elif msg_type == YMessageType.AWARENESS:
                self.awareness.apply_awareness_update(Decoder(message[1:]).read_message(), "remote")
            elif msg_type == MSG_QUERY_AWARENESS:
                await self.send_awareness()
            elif msg_type == MSG_RAW:
                pass  # e.g. save replies / conflict notices: not used by this client
            else:
                raise ClientError(f"unknown message type {msg_type}")

    async def append_to_cell(self, index: int, text: str) -> None:
        if not 0 <= index < self.nb.cell_number:
            raise ClientError(f"--append-to-cell {index}: notebook has {self.nb.cell_number} cells")
        with self.doc.transaction():
            source = self.nb.ycells[index]["source"]  # a pycrdt Text
            source += text  # Text.__iadd__ inserts at the end
        # The server must broadcast our change back, covering our latest clock.
        self.echo_clock = parse_state_vector(self.doc.get_state())[self.doc.client_id]
        await self.flush()


async def run(args) -> int:
    if args.file_id and args.session_id:
        session = {"fileId": args.file_id, "sessionId": args.session_id}
    else:
        session = open_session(args.base, args.token, args.path)
    file_id = args.file_id or session["fileId"]
    session_id = args.session_id or session["sessionId"]
    ws_base = "ws" + args.base[len("http"):] if args.base.startswith("http") else args.base
    query = urllib.parse.urlencode({"sessionId": session_id, "token": args.token})
    url = f"{ws_base}api/collaboration/room/json:notebook:{file_id}?{query}"

    try:
        ws = await asyncio.wait_for(websockets.connect(url, max_size=None), args.timeout)
    except websockets.InvalidStatus as e:
        status = e.response.status_code
        if args.expect_close:
            print(json.dumps({"closed": None, "http_status": status}))
            return 0
        raise ClientError(f"websocket upgrade refused: HTTP {status}", 3)
    except (OSError, asyncio.TimeoutError, websockets.InvalidHandshake) as e:
        raise ClientError(f"websocket connect to {url} failed: {e!r}")

    client = Client(ws)
    reader = asyncio.create_task(client.read_loop())

    async def until(event: asyncio.Event, what: str) -> None:
        # Wait for the event while the reader runs; surface the reader's failure if it ends.
        waiter = asyncio.create_task(event.wait())
        done, _ = await asyncio.wait({waiter, reader}, timeout=args.timeout,
                                     return_when=asyncio.FIRST_COMPLETED)
        if reader in done:
            waiter.cancel()
            reader.result()  # raises ConnectionClosed / ClientError
            raise ClientError(f"server ended the connection before {what}", 3)
        if waiter not in done:
            waiter.cancel()
            raise ClientError(f"timed out after {args.timeout}s waiting for {what}", 4)

    try:
        if args.expect_close:
            try:
                await client.start()
                await asyncio.wait_for(reader, args.timeout)
            except websockets.ConnectionClosed as e:
                print(json.dumps({"closed": e.rcvd.code if e.rcvd else None,
                                  "reason": e.rcvd.reason if e.rcvd else ""}))
                return 0
            except asyncio.TimeoutError:
                raise ClientError(f"server did not close the socket within {args.timeout}s", 4)
            raise ClientError("read loop ended without a close")
        await client.start()
        await until(client.synced, "SyncStep2")
        await client.flush()  # nothing local yet, but keep the invariant
        if args.append_to_cell is not None:
            await client.append_to_cell(args.append_to_cell, args.text)
            await until(client.echoed, "the server's echo of our update")
        content = client.nb.get()
        print(json.dumps({
            "fileId": file_id, "sessionId": session_id, "synced": True,
            "cells": [{"id": c.get("id"), "cell_type": c["cell_type"], "source": c["source"]}
                      for c in content["cells"]],
            "nbformat": content["nbformat"], "nbformat_minor": content["nbformat_minor"],
        }, ensure_ascii=False))
        return 0
    except websockets.ConnectionClosed as e:
        code, reason = (e.rcvd.code, e.rcvd.reason) if e.rcvd else (None, "no close frame")
        raise ClientError(f"server closed the websocket: code={code} reason={reason!r}", 3)
    finally:
        reader.cancel()
        await ws.close()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="server base URL, e.g. http://127.0.0.1:8888/")
    p.add_argument("--token", required=True)
    p.add_argument("--path", required=True, help="notebook path relative to the server root")
    p.add_argument("--append-to-cell", type=int, metavar="N")
    p.add_argument("--text", help="text to append to cell N's source")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per wait (default 10)")
    p.add_argument("--expect-close", action="store_true",
                   help='wait for the server to close; print {"closed": code, "reason": ...}')
    p.add_argument("--session-id", help="override the sessionId used in the websocket URL")
    p.add_argument("--file-id", help="override the fileId (with --session-id: skip the PUT)")
    args = p.parse_args()
    if not args.base.endswith("/"):
        args.base += "/"
    if (args.append_to_cell is None) != (args.text is None):
        p.error("--append-to-cell and --text go together")
    try:
        return asyncio.run(run(args))
    except ClientError as e:
        print(f"jlab_client: {e}", file=sys.stderr)
        return e.code
    except websockets.ConnectionClosed as e:
        code, reason = (e.rcvd.code, e.rcvd.reason) if e.rcvd else (None, "no close frame")
        print(f"jlab_client: server closed the websocket: code={code} reason={reason!r}",
              file=sys.stderr)
        return 3


if __name__ == "__main__":
    sys.exit(main())
