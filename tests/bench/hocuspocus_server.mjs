// node hocuspocus_server.mjs PORT: Hocuspocus as its documentation starts it, on loopback,
// with no extensions (documents live in memory; this bench gives it no database).
import { Server } from '@hocuspocus/server'

const port = Number(process.argv[2])
const server = new Server({ port, address: '127.0.0.1', quiet: true })
await server.listen()
