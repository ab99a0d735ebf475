"""python pycrdt_server.py PORT STORE_DIR: pycrdt-websocket's server under uvicorn, on loopback,
writing every room's updates to an SQLite YStore (as jupyter-collaboration does)."""

import sys

import anyio
import uvicorn
from pycrdt.store import SQLiteYStore
from pycrdt.websocket import ASGIServer, WebsocketServer, YRoom

port = int(sys.argv[1])
store_dir = sys.argv[2]


class Store(SQLiteYStore):
    db_path = f"{store_dir}/ystore.db"


class Server(WebsocketServer):
    async def get_room(self, name: str) -> YRoom:
        if name not in self.rooms:
            self.rooms[name] = YRoom(ready=True, ystore=Store(path=name), log=self.log)
        room = self.rooms[name]
        await self.start_room(room)
        return room


async def main():
    websocket_server = Server()
    app = ASGIServer(websocket_server)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", ws_max_size=256 << 20)
    async with websocket_server:
        await uvicorn.Server(config).serve()


anyio.run(main)
