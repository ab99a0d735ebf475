//! `bare-broadcast PORT`: the benchmarks' ceiling. A websocket server with no CRDT, no
//! storage and no checks: every binary frame a socket sends goes to the other sockets on the
//! same path. Driven like the real servers, it shows what the load generator and loopback alone
//! cost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

type Rooms = Arc<Mutex<HashMap<String, Vec<(u64, mpsc::UnboundedSender<Message>)>>>>;

#[tokio::main]
async fn main() {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("usage: bare-broadcast PORT");
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind");
    let rooms: Rooms = Arc::default();
    let mut next_id = 0u64;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        next_id += 1;
        tokio::spawn(serve(stream, next_id, rooms.clone()));
    }
}

async fn serve(stream: tokio::net::TcpStream, id: u64, rooms: Rooms) {
    let mut path = String::new();
    // The handshake callback's error type is tungstenite's (large) HTTP response.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, response: Response| {
        path = request.uri().path().to_string();
        Ok(response)
    };
    let Ok(socket) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let (mut sink, mut source) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel();
    rooms
        .lock()
        .unwrap()
        .entry(path.clone())
        .or_default()
        .push((id, tx));
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.send(message).await.is_err() {
                break;
            }
        }
    });
    while let Some(Ok(message)) = source.next().await {
        if let Message::Binary(_) = message {
            let rooms = rooms.lock().unwrap();
            for (other, tx) in rooms.get(&path).into_iter().flatten() {
                if *other != id {
                    let _ = tx.send(message.clone());
                }
            }
        } else if let Message::Close(_) = message {
            break;
        }
    }
    if let Some(peers) = rooms.lock().unwrap().get_mut(&path) {
        peers.retain(|(other, _)| *other != id);
    }
    writer.abort();
}
