//! Cell edit locks: "Ada is editing" — others may not change the cell until she releases it,
//! leaves, or the lease lapses after her idleness.
//!
//! Sans-IO: the table takes the time and the lease as arguments and says which cells changed
//! hands; the room publishes those to `state.locks`.

use std::collections::HashMap;

use tokio::time::{Duration, Instant};

use crate::{CellId, ConnectionId, Identity};

/// Why a cell may not be changed (or locked) by someone: another person holds it. Its text is
/// the refusal the sender reads.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(super) enum CellBusy {
    /// Someone else holds the cell's edit lock (their display name).
    #[error("{0} is editing this cell")]
    Editing(String),
    /// Someone else's run holds the cell, running or queued (who started it).
    #[error("this cell is running or queued, started by {0}")]
    Running(String),
}

/// One cell's edit lock.
pub(super) struct EditLock {
    pub(super) holder: ConnectionId,
    pub(super) identity: Identity,
    pub(super) expires: Instant,
}

/// The edit locks of a room, by cell id.
#[derive(Default)]
pub(super) struct CellLocks {
    locks: HashMap<CellId, EditLock>,
}

impl CellLocks {
    pub(super) fn is_empty(&self) -> bool {
        self.locks.is_empty()
    }

    pub(super) fn get(&self, cell: &CellId) -> Option<&EditLock> {
        self.locks.get(cell)
    }

    /// Takes (or renews) `cell`'s lock for `holder`; `Err` names whoever holds it now.
    pub(super) fn take(
        &mut self,
        cell: &CellId,
        holder: ConnectionId,
        identity: &Identity,
        now: Instant,
        lease: Duration,
    ) -> Result<(), CellBusy> {
        if let Some(lock) = self.locks.get(cell) {
            if lock.holder != holder && lock.expires > now {
                return Err(CellBusy::Editing(lock.identity.display_name.clone()));
            }
        }
        let lock = EditLock {
            holder,
            identity: identity.clone(),
            expires: now + lease,
        };
        self.locks.insert(cell.clone(), lock);
        Ok(())
    }

    /// Releases `cell`'s lock if `holder` holds it; `false` when it does not.
    pub(super) fn release(&mut self, cell: &CellId, holder: ConnectionId) -> bool {
        let held = self.locks.get(cell).is_some_and(|l| l.holder == holder);
        if held {
            self.locks.remove(cell);
        }
        held
    }

    /// A change to `cell` by `conn`: allowed unless someone else holds the cell (the holder's
    /// own change renews the lease). `Err` names the holder.
    pub(super) fn touch(
        &mut self,
        cell: &CellId,
        conn: ConnectionId,
        now: Instant,
        lease: Duration,
    ) -> Result<(), CellBusy> {
        match self.locks.get_mut(cell) {
            Some(lock) if lock.holder == conn => {
                lock.expires = now + lease;
                Ok(())
            }
            Some(lock) => Err(CellBusy::Editing(lock.identity.display_name.clone())),
            None => Ok(()),
        }
    }

    /// Releases every lock `holder` holds (it left); returns those cells.
    pub(super) fn release_all(&mut self, holder: ConnectionId) -> Vec<CellId> {
        self.remove_where(|lock| lock.holder == holder)
    }

    /// Removes the locks whose lease lapsed by `now`; returns those cells.
    pub(super) fn lapse(&mut self, now: Instant) -> Vec<CellId> {
        self.remove_where(|lock| lock.expires <= now)
    }

    /// When the next lease lapses.
    pub(super) fn next_expiry(&self) -> Option<Instant> {
        self.locks.values().map(|l| l.expires).min()
    }

    fn remove_where(&mut self, gone: impl Fn(&EditLock) -> bool) -> Vec<CellId> {
        let cells: Vec<CellId> = self
            .locks
            .iter()
            .filter(|(_, lock)| gone(lock))
            .map(|(cell, _)| cell.clone())
            .collect();
        for cell in &cells {
            self.locks.remove(cell);
        }
        cells
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(30);

    fn cell(id: &str) -> CellId {
        CellId::from(id)
    }

    fn person(name: &str) -> Identity {
        Identity::from_username(name)
    }

    #[test]
    fn one_holder_at_a_time_until_release_or_lapse() {
        let (ada, bob) = (ConnectionId(1), ConnectionId(2));
        let start = Instant::now();
        let mut locks = CellLocks::default();
        assert_eq!(
            locks.take(&cell("c"), ada, &person("ada"), start, LEASE),
            Ok(())
        );
        assert_eq!(
            locks.take(&cell("c"), bob, &person("bob"), start, LEASE),
            Err(CellBusy::Editing("ada".into()))
        );
        // Taking it again renews it; only the holder may release it.
        assert_eq!(
            locks.take(&cell("c"), ada, &person("ada"), start, LEASE),
            Ok(())
        );
        assert!(!locks.release(&cell("c"), bob));
        assert!(locks.release(&cell("c"), ada));
        assert!(locks.is_empty());

        assert_eq!(
            locks.take(&cell("c"), ada, &person("ada"), start, LEASE),
            Ok(())
        );
        assert_eq!(locks.next_expiry(), Some(start + LEASE));
        assert!(locks.lapse(start + LEASE / 2).is_empty());
        // A lapsed lease is free for the taking even before the timer removes it.
        assert_eq!(
            locks.take(&cell("c"), bob, &person("bob"), start + LEASE, LEASE),
            Ok(())
        );
        assert_eq!(locks.lapse(start + LEASE * 2), vec![cell("c")]);
    }

    #[test]
    fn the_holders_changes_renew_the_lease_and_others_are_refused() {
        let (ada, bob) = (ConnectionId(1), ConnectionId(2));
        let start = Instant::now();
        let mut locks = CellLocks::default();
        locks
            .take(&cell("c"), ada, &person("ada"), start, LEASE)
            .unwrap();
        assert_eq!(
            locks.touch(&cell("c"), bob, start, LEASE),
            Err(CellBusy::Editing("ada".into()))
        );
        assert_eq!(locks.touch(&cell("other"), bob, start, LEASE), Ok(()));
        let later = start + Duration::from_secs(20);
        assert_eq!(locks.touch(&cell("c"), ada, later, LEASE), Ok(()));
        assert_eq!(locks.next_expiry(), Some(later + LEASE));
        locks
            .take(&cell("d"), ada, &person("ada"), start, LEASE)
            .unwrap();
        let mut released = locks.release_all(ada);
        released.sort();
        assert_eq!(released, vec![cell("c"), cell("d")]);
        assert!(locks.is_empty());
    }
}
