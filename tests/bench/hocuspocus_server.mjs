// node hocuspocus_server.mjs PORT: Hocuspocus as its documentation starts it, on loopback,
// with no extensions (documents live in memory; this bench gives it no database). Hocuspocus 3
// hands `address` to Node's listen(), which reads `host`, so it listens on every interface of
// this (offline) machine; the bench only connects through 127.0.0.1.
import { Server } from '@hocuspocus/server'

const port = Number(process.argv[2])
const server = new Server({ port, address: '127.0.0.1', quiet: true })
await server.listen()
