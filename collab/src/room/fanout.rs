//! Fan-out with group commit: what a room sends, and the document changes that must be in the
//! log before anything is sent.
//!
//! During a batch of inputs the room queues frames and changes in an [`Outbox`]; at the end of
//! the batch it [`commit`](Outbox::commit)s every change to the log in one call, and only then
//! [`deliver`]s the frames, so an edit a client has seen echoed back is durable. Each frame is
//! encoded once and shared by reference count; a connection whose queue is full is reported,
//! never waited for.

use std::collections::HashMap;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::Outgoing;
use crate::protocol;
use crate::ConnectionId;

/// Who a queued frame is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Target {
    One(ConnectionId),
    All,
}

/// Frames to send and changes to log, in the order they were made.
#[derive(Default)]
pub(super) struct Outbox {
    unlogged: Vec<Bytes>,
    frames: Vec<(Target, Bytes)>,
}

impl Outbox {
    pub(super) fn send_to(&mut self, conn: ConnectionId, frame: Bytes) {
        self.frames.push((Target::One(conn), frame));
    }

    pub(super) fn broadcast(&mut self, frame: Bytes) {
        self.frames.push((Target::All, frame));
    }

    /// A change to the document: to be logged, then broadcast to everyone (its sender too).
    pub(super) fn change(&mut self, delta: Bytes) {
        self.broadcast(protocol::encode_sync_update(&delta));
        self.unlogged.push(delta);
    }

    /// Hands every change not yet logged to `append` at once (one log transaction). `Ok`: the
    /// log's last sequence number and the bytes appended, or `None` when there was nothing to
    /// log. On failure nothing queued may be sent any more, and it is all dropped.
    pub(super) fn commit<E>(
        &mut self,
        append: impl FnOnce(&[Bytes]) -> Result<u64, E>,
    ) -> Result<Option<(u64, u64)>, E> {
        if self.unlogged.is_empty() {
            return Ok(None);
        }
        match append(&self.unlogged) {
            Ok(seq) => {
                let bytes = self.unlogged.iter().map(|u| u.len() as u64).sum();
                self.unlogged.clear();
                Ok(Some((seq, bytes)))
            }
            Err(e) => {
                self.unlogged.clear();
                self.frames.clear();
                Err(e)
            }
        }
    }

    /// The frames to send now, in order. Call [`commit`](Outbox::commit) first.
    pub(super) fn take_frames(&mut self) -> Vec<(Target, Bytes)> {
        debug_assert!(
            self.unlogged.is_empty(),
            "frames go out only after their changes are logged"
        );
        std::mem::take(&mut self.frames)
    }
}

/// Why a frame did not reach a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Undelivered {
    /// Its queue is full: a stalled client, to be dropped.
    QueueFull,
    /// Its writer is gone: the client already left.
    Gone,
}

/// Queues `frame` for its target among `connections` (`queue` gives each one's outgoing queue),
/// without waiting; returns the connections it did not reach.
pub(super) fn deliver<C>(
    target: Target,
    frame: Bytes,
    connections: &HashMap<ConnectionId, C>,
    queue: impl Fn(&C) -> &mpsc::Sender<Outgoing>,
) -> Vec<(ConnectionId, Undelivered)> {
    let try_one = |conn: ConnectionId, connection: &C, frame: Bytes| match queue(connection)
        .try_send(Outgoing::Frame(frame))
    {
        Ok(()) => None,
        Err(mpsc::error::TrySendError::Full(_)) => Some((conn, Undelivered::QueueFull)),
        Err(mpsc::error::TrySendError::Closed(_)) => Some((conn, Undelivered::Gone)),
    };
    match target {
        Target::One(conn) => connections
            .get(&conn)
            .and_then(|c| try_one(conn, c, frame))
            .into_iter()
            .collect(),
        Target::All => connections
            .iter()
            .filter_map(|(conn, c)| try_one(*conn, c, frame.clone()))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_logged_in_one_call_before_their_frames_go_out() {
        let mut outbox = Outbox::default();
        outbox.send_to(ConnectionId(1), Bytes::from_static(b"step1"));
        outbox.change(Bytes::from_static(&[1, 2, 3]));
        outbox.change(Bytes::from_static(&[4, 5]));
        let mut calls = 0;
        let committed = outbox.commit(|updates| {
            calls += 1;
            assert_eq!(updates.len(), 2);
            Ok::<u64, ()>(7)
        });
        assert_eq!(committed, Ok(Some((7, 5))));
        assert_eq!(calls, 1);
        // Nothing more to log; the frames are still there, in order.
        assert_eq!(outbox.commit(|_| Err("not called")), Ok(None));
        let frames = outbox.take_frames();
        assert_eq!(
            frames.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
            vec![Target::One(ConnectionId(1)), Target::All, Target::All]
        );
        assert_eq!(frames[1].1, protocol::encode_sync_update(&[1, 2, 3]));
        assert!(outbox.take_frames().is_empty());
    }

    #[test]
    fn nothing_is_sent_once_logging_failed() {
        let mut outbox = Outbox::default();
        outbox.broadcast(Bytes::from_static(b"presence"));
        outbox.change(Bytes::from_static(&[1]));
        assert_eq!(outbox.commit(|_| Err("disk full")), Err("disk full"));
        assert!(outbox.take_frames().is_empty());
    }

    #[test]
    fn a_full_queue_is_reported_not_waited_for() {
        let (fast, mut fast_rx) = mpsc::channel(4);
        let (slow, _slow_rx) = mpsc::channel(1);
        let (gone, gone_rx) = mpsc::channel(4);
        drop(gone_rx);
        let connections: HashMap<ConnectionId, mpsc::Sender<Outgoing>> = [
            (ConnectionId(1), fast),
            (ConnectionId(2), slow),
            (ConnectionId(3), gone),
        ]
        .into();
        fn queue(c: &mpsc::Sender<Outgoing>) -> &mpsc::Sender<Outgoing> {
            c
        }
        let frame = Bytes::from_static(b"x");
        let mut first = deliver(Target::All, frame.clone(), &connections, queue);
        first.sort_by_key(|(conn, _)| *conn);
        assert_eq!(first, vec![(ConnectionId(3), Undelivered::Gone)]);
        let second = deliver(
            Target::One(ConnectionId(2)),
            frame.clone(),
            &connections,
            queue,
        );
        assert_eq!(second, vec![(ConnectionId(2), Undelivered::QueueFull)]);
        assert!(deliver(Target::One(ConnectionId(9)), frame, &connections, queue).is_empty());
        assert!(matches!(fast_rx.try_recv(), Ok(Outgoing::Frame(_))));
    }
}
