//! The runs a room asked for: which cell each one holds, who asked, and how much output it has
//! written. Sans-IO: the room writes outputs into the document; these types only keep count.

use std::collections::HashMap;

use tokio::sync::oneshot;

use super::{RunRefused, RunSummary};
use crate::execution::{KernelRef, Requester, RunId, StreamTail};
use crate::{CellId, ConnectionId};

/// Runs this room asked for, and the kernel whose status it shows.
#[derive(Default)]
pub(super) struct Execution {
    pub(super) kernel: Option<KernelRef>,
    pub(super) runs: HashMap<RunId, Run>,
    /// Outputs shown under a display id (cell id, output map), for `update_display_data`.
    pub(super) displays: HashMap<String, Vec<(CellId, yrs::MapRef)>>,
}

impl Execution {
    /// The run queued or running in `cell` (a cell has at most one).
    pub(super) fn run_of_cell(&self, cell: &CellId) -> Option<&Run> {
        self.runs.values().find(|r| &r.cell_id == cell)
    }

    /// The run of `cell` whose prompt waits for an answer from `conn`, its requester.
    pub(super) fn prompt_of(
        &mut self,
        cell: &CellId,
        conn: ConnectionId,
    ) -> Option<(&RunId, &mut Run)> {
        self.runs.iter_mut().find(|(_, run)| {
            &run.cell_id == cell && run.input_pending && run.requester.conn == Some(conn)
        })
    }

    /// A new run in `cell`: whatever its earlier outputs showed under display ids is gone.
    pub(super) fn start(&mut self, run_id: RunId, run: Run) {
        for list in self.displays.values_mut() {
            list.retain(|(cell, _)| cell != &run.cell_id);
        }
        self.runs.insert(run_id, run);
    }
}

pub(super) struct Run {
    pub(super) cell_id: CellId,
    pub(super) requester: Requester,
    pub(super) kernel: KernelRef,
    pub(super) queued_at: f64,
    pub(super) started_at: Option<f64>,
    pub(super) execution_count: Option<i64>,
    pub(super) output: OutputBudget,
    pub(super) input_pending: bool,
    pub(super) done: Option<oneshot::Sender<Result<RunSummary, RunRefused>>>,
}

/// What a run has written since its outputs were last cleared, against the limit of
/// `max_output_bytes`: past it, one note says the output was cut and the rest is dropped.
#[derive(Default)]
pub(super) struct OutputBudget {
    /// Net bytes written (a stream's `\r` rewrites count what they left).
    bytes: usize,
    truncated: bool,
    /// `clear_output(wait=True)` seen: clear when the next output arrives.
    clear_pending: bool,
    /// Where the last stream output ends, so the next chunk of the same stream extends it.
    stream_tail: Option<StreamTail>,
}

/// Whether an output goes in.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Admitted {
    pub(super) fits: bool,
    /// The truncation note goes in first (the first output that does not fit).
    pub(super) note: bool,
}

impl OutputBudget {
    /// `clear_output(wait=True)`: the outputs are cleared when the next one arrives.
    pub(super) fn clear_later(&mut self) {
        self.clear_pending = true;
    }

    /// The outputs were cleared: counting starts again.
    pub(super) fn cleared(&mut self) {
        *self = OutputBudget::default();
    }

    /// Before the next output: whether a pending clear is due now (counting then starts again).
    pub(super) fn take_pending_clear(&mut self) -> bool {
        let due = self.clear_pending;
        if due {
            self.cleared();
        }
        due
    }

    /// A whole output of `size` bytes.
    pub(super) fn admit(&mut self, size: usize, max: usize) -> Admitted {
        let fits = self.bytes + size <= max;
        let note = !fits && !self.truncated;
        if fits {
            self.bytes += size;
        } else {
            self.truncated = true;
        }
        Admitted { fits, note }
    }

    pub(super) fn truncated(&self) -> bool {
        self.truncated
    }

    /// Bytes a stream chunk may still add.
    pub(super) fn room_left(&self, max: usize) -> usize {
        max.saturating_sub(self.bytes)
    }

    pub(super) fn take_tail(&mut self) -> Option<StreamTail> {
        self.stream_tail.take()
    }

    /// A stream chunk was written: it grew the outputs by `grown` bytes and was `cut` at the
    /// limit (then the note went in after it, and later chunks are dropped).
    pub(super) fn streamed(&mut self, grown: usize, cut: bool, tail: Option<StreamTail>) {
        self.bytes += grown;
        self.truncated |= cut;
        self.stream_tail = if cut { None } else { tail };
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::execution::{EventSink, ExecuteJob, Kernel, KernelId, KernelStatus};
    use crate::Identity;

    #[test]
    fn outputs_past_the_limit_are_dropped_after_one_note() {
        let mut budget = OutputBudget::default();
        assert_eq!(
            budget.admit(60, 100),
            Admitted {
                fits: true,
                note: false
            }
        );
        assert_eq!(budget.room_left(100), 40);
        assert_eq!(
            budget.admit(50, 100),
            Admitted {
                fits: false,
                note: true
            }
        );
        assert!(budget.truncated());
        // Only the first output that does not fit brings the note; a small one still fits.
        assert_eq!(
            budget.admit(50, 100),
            Admitted {
                fits: false,
                note: false
            }
        );
        assert_eq!(
            budget.admit(40, 100),
            Admitted {
                fits: true,
                note: false
            }
        );
        // A clear starts the count again.
        budget.cleared();
        assert_eq!(
            budget.admit(100, 100),
            Admitted {
                fits: true,
                note: false
            }
        );
    }

    #[test]
    fn a_clear_asked_to_wait_happens_at_the_next_output() {
        let mut budget = OutputBudget::default();
        budget.admit(90, 100);
        budget.clear_later();
        assert_eq!(budget.room_left(100), 10);
        assert!(budget.take_pending_clear());
        assert_eq!(budget.room_left(100), 100);
        assert!(!budget.take_pending_clear());
        budget.streamed(30, false, None);
        assert_eq!(budget.room_left(100), 70);
        budget.streamed(70, true, None);
        assert!(budget.truncated());
    }

    struct NoKernel(KernelId);

    impl Kernel for NoKernel {
        fn id(&self) -> &KernelId {
            &self.0
        }
        fn name(&self) -> &str {
            "none"
        }
        fn status(&self) -> KernelStatus {
            KernelStatus::Idle
        }
        fn execute(&self, _: ExecuteJob) {}
        fn input_reply(&self, _: &RunId, _: String) {}
        fn cancel(&self, _: &RunId, _: &str) {}
        fn interrupt(&self) {}
        fn restart(&self) {}
        fn subscribe(&self, _: EventSink) {}
    }

    fn run(cell: &str, conn: u64) -> Run {
        Run {
            cell_id: CellId::from(cell),
            requester: Requester {
                identity: Identity::from_username("ada"),
                conn: Some(ConnectionId(conn)),
            },
            kernel: Arc::new(NoKernel(KernelId("k".into()))),
            queued_at: 0.0,
            started_at: None,
            execution_count: None,
            output: OutputBudget::default(),
            input_pending: false,
            done: None,
        }
    }

    #[test]
    fn a_prompt_is_answered_only_by_its_requester_in_its_cell() {
        let mut exec = Execution::default();
        exec.start("r1".into(), run("a", 1));
        exec.start("r2".into(), run("b", 2));
        assert_eq!(
            exec.run_of_cell(&CellId::from("b"))
                .map(|r| r.cell_id.as_str()),
            Some("b")
        );
        assert!(exec.run_of_cell(&CellId::from("c")).is_none());
        assert!(
            exec.prompt_of(&CellId::from("a"), ConnectionId(1))
                .is_none(),
            "no prompt yet"
        );
        exec.runs.get_mut(&RunId::from("r1")).unwrap().input_pending = true;
        assert!(exec
            .prompt_of(&CellId::from("a"), ConnectionId(2))
            .is_none());
        assert!(exec
            .prompt_of(&CellId::from("b"), ConnectionId(1))
            .is_none());
        assert_eq!(
            exec.prompt_of(&CellId::from("a"), ConnectionId(1))
                .map(|(id, _)| id.clone()),
            Some("r1".into())
        );
    }
}
