//! The update guard: may this update, from a connection holding these capabilities, change the
//! room's document?
//!
//! yrs applies updates without asking and cannot take one back, and where an item lands
//! (parent, map key) is yrs's decision, made from neighbours, garbage-collected items and
//! pending structs in ways a re-implementation gets subtly wrong. So the guard never predicts:
//! it applies the update to a *shadow*, a second copy of the room's document kept in step with
//! it, and reads what yrs actually changed from yrs's own change events (the real parent and
//! key of every inserted and deleted item, after pending structs are integrated). Only when
//! every change is allowed does the room apply the same delta to its document, log it and
//! broadcast it. Otherwise nothing else happened, and the shadow is rebuilt from the room's
//! document before the next update is judged.
//!
//! | touched | needs |
//! |---|---|
//! | the cell list, a cell's source/metadata/type/id/attachments, the notebook's metadata | `edit` |
//! | a file document's content (its `source` root) | `edit` |
//! | a cell's `outputs`, `execution_count`, `execution_state` | `execute` (what JupyterLab's own executor writes) |
//! | `state.path`, `hash`, `kernel`, `executions`, `locks` | the server only |
//! | any other `state` key (JupyterLab writes `dirty` after each change, and `document_id`) | `edit` |
//! | any other root, an embedded document, anything the guard cannot place | refused |
//!
//! A cell inserted by someone without `execute` (JupyterLab moves a cell by deleting and
//! re-inserting it) keeps the outputs and execution count of the cell with the same id deleted
//! in the same update; anything else it carries there is cleared in the same delta. Changes
//! that would make the notebook unreadable (a cell that is not a map, an unknown `cell_type`, a
//! `source` that is not text...) are refused whoever sends them. An update whose content the
//! room already has is a no-op, never a refusal. An update that builds on items the room does
//! not have would stay pending in yrs: it is answered `conflict` and applied nowhere.
//!
//! Before the shadow sees an update, [`wire`] reads its bytes for what yrs takes on trust
//! (53-bit client ids, nesting depth, roots, dependencies).

pub mod wire;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use serde_json::Value;
use yrs::branch::BranchID;
use yrs::types::{Change, EntryChange, Event, PathSegment};
use yrs::updates::decoder::Decode;
use yrs::{
    Any, Array, ArrayPrelim, ArrayRef, Assoc, DeepObservable, Doc, Map, MapRef, Options, Out,
    ReadTxn, StateVector, StickyIndex, Transact, TransactionMut, Update, ID,
};

use crate::capabilities::Capabilities;
use crate::content::DocumentKind;
use crate::notebook::out_to_json;
use crate::MAX_JSON_DEPTH;
use yrs::Text as _;

/// What an update changes, as far as the policy cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Field {
    CellList,
    /// A cell's top-level field (`source`, `outputs`, …).
    Cell(String),
    NotebookMeta,
    /// A text or binary file's content (the `source` root of a file document).
    FileContent,
    State(String),
    Other(String),
    /// A change that would leave the notebook unreadable, whoever makes it.
    Invalid(String),
}

impl Field {
    /// The capability a change to this field needs; `None`: only the server may change it.
    pub fn needs(&self) -> Option<Capabilities> {
        match self {
            Field::CellList | Field::NotebookMeta | Field::FileContent => Some(Capabilities::EDIT),
            Field::Cell(key) => match key.as_str() {
                "outputs" | "execution_count" | "execution_state" => {
                    Some(Capabilities::EDIT.union(Capabilities::EXECUTE))
                }
                _ => Some(Capabilities::EDIT),
            },
            Field::State(key) => match key.as_str() {
                "path" | "hash" | "kernel" | "executions" | "locks" => None,
                _ => Some(Capabilities::EDIT),
            },
            Field::Other(_) | Field::Invalid(_) => None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Field::CellList => "the list of cells".into(),
            Field::Cell(key) => format!("a cell's {key}"),
            Field::NotebookMeta => "the notebook's metadata".into(),
            Field::FileContent => "the file's content".into(),
            Field::State(key) => format!("state.{key}"),
            Field::Other(what) | Field::Invalid(what) => what.clone(),
        }
    }
}

/// Why an update is refused, and what kind of wrong it is.
#[derive(Debug, PartialEq, Eq)]
pub struct Refusal(pub String, pub Wrong);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wrong {
    /// Not a Yjs update at all (or one yrs would misread): the sender is broken or hostile.
    Unreadable,
    /// It builds on (or deletes) items this room does not have: yrs would keep it pending. The
    /// sender's document has another history, or it missed something: it should resync.
    ForeignHistory,
    /// Well formed and placed, but beyond the sender's rights, the server's alone, or making
    /// the notebook unreadable.
    Forbidden,
}

/// A cell, by the id of the Yjs item that holds it (its map).
pub type CellItem = (u64, u32);

/// What an update changed, as yrs integrated it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Analysis {
    /// The fields it touches, in order, without duplicates.
    pub fields: Vec<Field>,
    /// The existing cells it changes or deletes (cells it adds are not listed), in order,
    /// without duplicates.
    pub cells: Vec<CellItem>,
    /// Of those, the cells it deletes.
    pub deleted_cells: HashSet<CellItem>,
    /// `cells` as a set (an update may touch tens of thousands of cells: no quadratic lookups).
    listed: HashSet<CellItem>,
}

impl Analysis {
    fn add(&mut self, field: Field, cell: Option<CellItem>) {
        // (Few distinct fields: one per cell key and state key at most.)
        if !self.fields.contains(&field) {
            self.fields.push(field);
        }
        if let Some(cell) = cell {
            if self.listed.insert(cell) {
                self.cells.push(cell);
            }
        }
    }

    /// Whether a connection holding `caps` may make these changes; the refusal says what it
    /// touched.
    pub fn permits(&self, caps: Capabilities) -> Result<(), Refusal> {
        for field in &self.fields {
            if let Field::Invalid(what) = field {
                return Err(Refusal(
                    format!("the change would make the notebook unreadable: {what}"),
                    Wrong::Forbidden,
                ));
            }
            match field.needs() {
                Some(needed) if caps.contains(needed) => {}
                Some(_) => {
                    return Err(Refusal(
                        format!("you may not change {} in this notebook", field.describe()),
                        Wrong::Forbidden,
                    ))
                }
                None => {
                    return Err(Refusal(
                        format!("only the server changes {}", field.describe()),
                        Wrong::Forbidden,
                    ))
                }
            }
        }
        Ok(())
    }
}

/// An update applied to the shadow and found allowed by the field policy: the room still has
/// its own checks to make (cell locks), then [`UpdateGuard::accept`] or
/// [`UpdateGuard::discard`].
#[derive(Debug)]
pub struct Trial {
    pub analysis: Analysis,
    /// What to apply to the room's document: the very update the shadow took (so both
    /// integrate the same input), merged with the clearing of carried outputs if any.
    delta: Vec<u8>,
}

/// What the observers saw during one judged transaction.
#[derive(Default)]
struct Seen {
    watching: bool,
    /// The update holds shared types or JSON values: measure how deep they land.
    measure: bool,
    /// (field, existing cell it is in).
    touched: Vec<(Field, Option<CellItem>)>,
    /// Cells inserted: their map's item id and content.
    inserted: Vec<(CellItem, Value)>,
    /// Items deleted from the cell list.
    removed: Vec<CellItem>,
    /// Where each nested type seen before sits: yrs never moves an item, so this never goes stale.
    places: HashMap<CellItem, Place>,
}

#[derive(Clone)]
enum Place {
    /// The map of a cell.
    Cell(CellItem),
    /// Inside a field of a cell, this many containers deep in the field's value (the field's
    /// own map or list is 1).
    Field(CellItem, Arc<str>, usize),
}

/// The second copy of the room's document.
struct Shadow {
    doc: Doc,
    seen: Arc<Mutex<Seen>>,
}

/// The guard of one room: its shadow document and what the room changed since.
pub struct UpdateGuard {
    kind: DocumentKind,
    /// What the room's document was built from, and every change applied to it since, in
    /// order: the shadow is rebuilt by replaying them, so it has the room's structure (a copy
    /// made from a fresh encoding has its content but can place a forged struct elsewhere).
    /// `None`: rebuild from an encoding of the room (too much history, or the room was changed
    /// in a way the guard could not follow).
    history: Option<History>,
    shadow: Option<Shadow>,
    /// Changes the room made itself (its state writes, outputs, outside edits) that the shadow
    /// has not applied yet.
    behind: Vec<Vec<u8>>,
    /// The shadow took a refused update: rebuild it before judging again.
    stale: bool,
    /// How many times the shadow was built (the first time included).
    pub builds: u64,
}

struct History {
    /// What the room's document was built from at load, in order (a snapshot, then the
    /// updates logged after it), each applied in a transaction of its own.
    start: Vec<Vec<u8>>,
    changes: Vec<Vec<u8>>,
    bytes: usize,
}

/// The most history the guard keeps to replay (beyond it, rebuilds use a fresh encoding).
const MAX_HISTORY_BYTES: usize = 32 << 20;

/// Apply the room's own changes to the shadow once this many are waiting, so a long silent
/// stream of outputs does not pile up.
const MAX_BEHIND: usize = 64;

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn item_of(id: &ID) -> CellItem {
    (id.client.get(), id.clock)
}

/// The item id of a nested shared type (a cell's map, a source text...).
fn branch_item(branch: &yrs::branch::Branch) -> Option<CellItem> {
    match branch.id() {
        BranchID::Nested(id) => Some(item_of(&id)),
        BranchID::Root(_) => None,
    }
}

impl UpdateGuard {
    pub fn new(kind: DocumentKind) -> UpdateGuard {
        UpdateGuard {
            kind,
            history: None,
            shadow: None,
            behind: Vec::new(),
            stale: false,
            builds: 0,
        }
    }

    /// The root names a document of this kind has.
    pub fn roots(&self) -> &'static [&'static str] {
        match self.kind {
            DocumentKind::Notebook => &["cells", "meta", "state"],
            DocumentKind::Text => &["source", "state"],
        }
    }

    /// The room's document was just built from `start`, each applied in a transaction of its
    /// own, in order (before any change).
    pub fn start_from(&mut self, start: Vec<Vec<u8>>) {
        self.history = Some(History {
            start,
            changes: Vec::new(),
            bytes: 0,
        });
        self.shadow = None;
        self.behind.clear();
    }

    /// The room's document changed in a way the guard could not follow: from now on the
    /// shadow is rebuilt from an encoding of the room.
    pub fn lost_track(&mut self) {
        self.history = None;
        self.release();
    }

    fn remember(&mut self, change: &[u8]) {
        if let Some(history) = &mut self.history {
            history.bytes += change.len();
            if history.bytes > MAX_HISTORY_BYTES {
                self.history = None;
            } else {
                history.changes.push(change.to_vec());
            }
        }
    }

    /// Records a change the room made to its document itself (not through [`Self::accept`]).
    pub fn room_changed(&mut self, delta: &[u8]) {
        self.remember(delta);
        let Some(shadow) = &self.shadow else {
            return;
        };
        if self.stale {
            return;
        }
        self.behind.push(delta.to_vec());
        if self.behind.len() >= MAX_BEHIND {
            catch_up(shadow, &mut self.behind, &mut self.stale);
        }
    }

    /// Whether the last judgement left the shadow to be rebuilt (it applied an update that was
    /// then refused).
    pub fn needs_rebuild(&self) -> bool {
        self.stale
    }

    /// Frees the shadow (an idle room); it is rebuilt when the next update comes.
    pub fn release(&mut self) {
        self.shadow = None;
        self.behind.clear();
        self.stale = false;
    }

    /// The shadow, in step with `room`.
    fn shadow(&mut self, room: &Doc) -> &Shadow {
        if !self.stale && !self.behind.is_empty() {
            if let Some(shadow) = &self.shadow {
                catch_up(shadow, &mut self.behind, &mut self.stale);
            }
        }
        if self.stale || self.shadow.is_none() {
            self.behind.clear();
            self.stale = false;
            self.builds += 1;
            self.shadow = Some(build_shadow(room, self.kind, self.history.as_ref()));
        }
        self.shadow.as_ref().expect("built above")
    }

    /// Judges an update from a connection holding `caps` against the room's document `room`.
    ///
    /// `Ok(None)`: it holds nothing the room does not already have. `Ok(Some(trial))`: the
    /// shadow took it and the field policy allows it; the caller makes its own checks and then
    /// accepts or discards it. `Err`: refused, and nothing anywhere changed.
    pub fn judge(
        &mut self,
        room: &Doc,
        update: &[u8],
        caps: Capabilities,
    ) -> Result<Option<Trial>, Refusal> {
        let parsed = match wire::read(update, self.roots()) {
            Ok(parsed) => parsed,
            Err(wire::WireError::Malformed(why)) => {
                return Err(Refusal(
                    format!("malformed update: {why}"),
                    Wrong::Unreadable,
                ))
            }
            Err(wire::WireError::Foreign(what)) => {
                return Err(Refusal(
                    format!("this document holds no {what}; nothing was applied"),
                    Wrong::Forbidden,
                ))
            }
        };
        let sv = room.transact().state_vector();
        let clock = |client: u64| sv.get(&yrs::block::ClientID::new(client));
        if parsed.missing_dependency(&clock).is_some() {
            return Err(Refusal(
                "the update builds on items this room does not have".into(),
                Wrong::ForeignHistory,
            ));
        }
        let continuing = {
            let txn = room.transact();
            parsed
                .structs
                .iter()
                .any(|s| continues_elsewhere(&txn, s, &clock))
        };
        if continuing {
            return Err(Refusal(
                "the update continues an item of this room under another parent".into(),
                Wrong::Forbidden,
            ));
        }
        if !caps.contains(Capabilities::EDIT) {
            // A watcher's update may only repeat what the room has (a reconnecting client's
            // sync step 2): judged without touching the shadow.
            if parsed.structs_known(&clock) && deletions_known(room, &parsed.deletes) {
                return Ok(None);
            }
            return Err(Refusal(
                "you may watch this notebook, not edit it".into(),
                Wrong::Forbidden,
            ));
        }
        let raw = update;
        let update = Update::decode_v1(update)
            .map_err(|e| Refusal(format!("malformed update: {e}"), Wrong::Unreadable))?;
        let kind = self.kind;
        let (doc, observed) = {
            let shadow = self.shadow(room);
            (shadow.doc.clone(), shadow.seen.clone())
        };
        // Observers stay off until the update is known to be safe to read: walking a list that
        // holds astral text would never end (see `wire::WireStruct::astral_text`).
        {
            let mut seen = lock(&observed);
            seen.watching = false;
            seen.measure = parsed.nests;
        }
        let (applied, stuck, misplaced, keyed, delta) = {
            let mut txn = doc.transact_mut();
            let applied = txn.apply_update(update);
            // Before the commit, which garbage-collects (see `keyed_runs`); also after a failed
            // apply, which may have integrated part of the update.
            let keyed = keyed_runs(&txn, &parsed);
            let runs = match &keyed {
                Ok(runs) | Err(runs) => runs,
            };
            if !runs.is_empty() {
                defuse(&mut txn, runs);
            }
            let keyed = match keyed {
                Ok(runs) if runs.is_empty() => None,
                Ok(_) => Some(
                    "the update stores a value of several parts under a map key, which no Yjs \
                     client does; nothing was applied"
                        .to_string(),
                ),
                Err(_) => Some(format!(
                    "the update makes more than {MAX_PLACE_CHECKS} separate insertions next to \
                     existing content; nothing was applied: send them in smaller updates"
                )),
            };
            let stuck = txn.has_missing_updates();
            let misplaced = applied.is_ok() && text_outside_texts(&txn, &parsed, &clock);
            if applied.is_ok() && !stuck && !misplaced && keyed.is_none() {
                lock(&observed).watching = true;
            }
            txn.commit();
            (applied, stuck, misplaced, keyed, txn.encode_update_v1())
        };
        let seen = {
            let mut seen = lock(&observed);
            seen.watching = false;
            Seen {
                touched: std::mem::take(&mut seen.touched),
                inserted: std::mem::take(&mut seen.inserted),
                removed: std::mem::take(&mut seen.removed),
                ..Seen::default()
            }
        };
        let mut analysis = Analysis::default();
        let changed = !seen.touched.is_empty()
            || !seen.inserted.is_empty()
            || !seen.removed.is_empty()
            || delta != [0, 0];
        if applied.is_err() || stuck || misplaced || keyed.is_some() || changed {
            // From here on the shadow may differ from the room until accepted.
            self.stale = true;
        }
        if let Err(e) = applied {
            return Err(Refusal(
                format!("the update cannot be applied: {e}"),
                Wrong::Unreadable,
            ));
        }
        if stuck {
            return Err(Refusal(
                "the update builds on items this room does not have".into(),
                Wrong::ForeignHistory,
            ));
        }
        if misplaced {
            return Err(Refusal(
                "the update puts text where a list or map belongs".into(),
                Wrong::Forbidden,
            ));
        }
        if let Some(why) = keyed {
            return Err(Refusal(why, Wrong::Forbidden));
        }
        if !changed {
            return Ok(None);
        }
        let removed: HashSet<CellItem> = seen.removed.iter().copied().collect();
        if kind == DocumentKind::Notebook {
            for (_, cell) in &seen.inserted {
                check_cell(cell)?;
            }
            check_new_ids(room, &seen.inserted, &removed)?;
        }
        for (field, cell) in seen.touched {
            match cell {
                // A field of a cell deleted in this same update goes with the cell.
                Some(cell) if removed.contains(&cell) => {}
                _ => analysis.add(field, cell),
            }
        }
        if !seen.inserted.is_empty() || !removed.is_empty() {
            analysis.add(Field::CellList, None);
        }
        for cell in &seen.removed {
            analysis.add(Field::CellList, Some(*cell));
            analysis.deleted_cells.insert(*cell);
        }
        analysis.permits(caps)?;
        if kind == DocumentKind::Notebook {
            check_touched_cells(&doc, &analysis)?;
            if analysis.fields.contains(&Field::NotebookMeta) {
                check_meta(&doc)?;
            }
        }
        // The room takes the same bytes the shadow took, so both integrate the same input.
        let shadow_delta = delta;
        let mut delta = raw.to_vec();
        if !caps.contains(Capabilities::EXECUTE) {
            let carried = carried_runs(room, &seen.inserted, &seen.removed);
            if !carried.is_empty() {
                // (Merged with the shadow's own encoding of the change: yrs's merge trusts its
                // input, and the client's bytes are not to be trusted that far.)
                let clearing = clear_runs(&doc, &carried);
                delta = yrs::merge_updates_v1([shadow_delta, clearing]).map_err(|e| {
                    Refusal(
                        format!("cannot clear carried outputs: {e}"),
                        Wrong::Forbidden,
                    )
                })?;
            }
        }
        Ok(Some(Trial { analysis, delta }))
    }

    /// The trial is allowed: the shadow stays as it is (it now matches what the room will hold)
    /// and the caller applies the returned delta to the room's document.
    pub fn accept(&mut self, trial: Trial) -> Vec<u8> {
        self.stale = false;
        self.remember(&trial.delta);
        trial.delta
    }

    /// The trial is refused after all: the shadow is rebuilt before the next judgement.
    pub fn discard(&mut self, _trial: Trial) {
        self.stale = true;
    }
}

/// A struct that starts on clocks the room already has and names its parent explicitly. yrs
/// trims the part the room has and integrates the rest as a new item whose left origin is the
/// last clock the room has, but which keeps the named parent (and key): it links the item right
/// of that known item, in the known item's list, yet files it (and its change event) under the
/// named parent; and the delta the room then applies names only the origin, so the room puts
/// it where the known item is, or collects it when the known item was collected (the shadow
/// keeps it: the two differ from then on). Honest only when the known item already sits under
/// the named parent, without a key (a client re-sending text it went on typing into).
fn continues_elsewhere(
    txn: &yrs::Transaction,
    s: &wire::WireStruct,
    clock: &dyn Fn(u64) -> u32,
) -> bool {
    let have = clock(s.client);
    let named = s.root.is_some() || s.deps[2].is_some();
    if s.skip || !named || s.clock >= have || s.clock.saturating_add(s.len) <= have {
        return false;
    }
    if s.keyed {
        return true;
    }
    let known = ID::new(yrs::block::ClientID::new(s.client), have - 1);
    let Some(offset) = StickyIndex::from_id(known, Assoc::After).get_offset(txn) else {
        // Collected: no parent to continue.
        return true;
    };
    let parent = offset.branch.id();
    match (&s.root, s.deps[2]) {
        (Some(name), _) => parent != BranchID::Root(name.as_str().into()),
        (None, Some((client, clock))) => {
            parent != BranchID::Nested(ID::new(yrs::block::ClientID::new(client), clock))
        }
        (None, None) => true,
    }
}

/// Whether yrs put a struct of astral text anywhere but in a text type.
fn text_outside_texts(
    txn: &TransactionMut,
    parsed: &wire::WireUpdate,
    clock: &dyn Fn(u64) -> u32,
) -> bool {
    parsed.structs.iter().filter(|s| s.astral_text).any(|s| {
        // Its first clock the room did not have: yrs trims the part the room had (which may be
        // collected, in no list at all) and puts the rest where its neighbours say.
        let first_new = s.clock.max(clock(s.client));
        if first_new >= s.clock.saturating_add(s.len) {
            return false;
        }
        let id = ID::new(yrs::block::ClientID::new(s.client), first_new);
        match StickyIndex::from_id(id, Assoc::After).get_offset(txn) {
            Some(offset) => !matches!(
                offset.branch.type_ref(),
                yrs::types::TypeRef::Text | yrs::types::TypeRef::XmlText
            ),
            None => false,
        }
    })
}

/// The runs of several units this update left alive outside their parent's list, as
/// (client, clock, len): none from an honest client. `Err` when checking would take more
/// than [`MAX_PLACE_CHECKS`] lookups (with every unchecked run).
///
/// A Yjs map keeps each key's values as a chain of items whose newest is the key's value; yrs
/// 0.28 deletes a type's list and the newest value of each key with it, and garbage collection
/// then frees the type. A value of several units (no Yjs client writes one: a map value is one
/// `Any`, type or binary) is split by any later reference into its middle, and its left part
/// is then alive but neither its key's value nor in the list: deleting the parent leaves it
/// alive, pointing at the freed type, and the next encoding of the document reads freed memory
/// (`collab/tests/guard_keyed_runs.rs` replays it). So each new live run of several units must
/// be where yrs finds it: in its parent's list, at the index yrs gives it. yrs links an item
/// right of its left neighbour, so one whose left neighbour is in a run of this update already
/// found in a list (or in a live one given an explicit parent and no key, which yrs puts in the
/// list) is in that list too; the others are looked up, which walks the parent's list up to
/// them.
fn keyed_runs(txn: &TransactionMut, parsed: &wire::WireUpdate) -> Result<Vec<Run>, Vec<Run>> {
    let before = txn.before_state();
    let deleted = txn.delete_set();
    // This update's new runs known to be in a list: client → start → end.
    let mut listed: HashMap<u64, BTreeMap<u32, u32>> = HashMap::new();
    let in_listed = |listed: &HashMap<u64, BTreeMap<u32, u32>>, (client, clock): wire::Id| {
        listed.get(&client).is_some_and(|runs| {
            runs.range(..=clock)
                .next_back()
                .is_some_and(|(_, &end)| clock < end)
        })
    };
    let mut found = Vec::new();
    let mut checks = 0;
    let mut unchecked = false;
    for s in parsed.structs.iter().filter(|s| !s.skip) {
        let client = yrs::block::ClientID::new(s.client);
        // (Units the room had before are not this update's: yrs skips them.)
        let start = s.clock.max(before.get(&client));
        let end = s.clock.saturating_add(s.len);
        if start >= end {
            continue;
        }
        let live = (start..end)
            .map(|clock| ID::new(client, clock))
            .find(|id| !deleted.contains(id));
        let [left, right, parent] = s.deps;
        // (yrs puts a run it already had the start of right of that start, whatever it says.)
        let trimmed = start > s.clock;
        let left = if trimmed {
            Some((s.client, start - 1))
        } else {
            left
        };
        let explicit =
            !trimmed && left.is_none() && right.is_none() && (parent.is_some() || s.root.is_some());
        if (explicit && !s.keyed && live.is_some()) || left.is_some_and(|l| in_listed(&listed, l)) {
            listed.entry(s.client).or_default().insert(start, end);
            continue;
        }
        // (One unit is never split; a dead run leaves no live part behind.)
        let (true, Some(unit)) = (s.splittable && end - start > 1, live) else {
            continue;
        };
        if checks == MAX_PLACE_CHECKS {
            unchecked = true;
            found.push((s.client, start, end - start));
            continue;
        }
        checks += 1;
        // `None`: not integrated (pending, or garbage-collected with its parent).
        let Some(offset) = StickyIndex::from_id(unit, Assoc::After).get_offset(txn) else {
            continue;
        };
        let at = StickyIndex::at(txn, offset.branch, offset.index, Assoc::After);
        if at.as_ref().and_then(StickyIndex::id) == Some(&unit) {
            listed.entry(s.client).or_default().insert(start, end);
        } else {
            found.push((s.client, start, end - start));
        }
    }
    if unchecked {
        Err(found)
    } else {
        Ok(found)
    }
}

/// (client, clock, length) of a run of units.
type Run = (u64, u32, u32);

/// How many runs of one update [`keyed_runs`] looks up (each lookup walks a list): an honest
/// update needs one per paste or typed run that starts next to what the room already had.
const MAX_PLACE_CHECKS: usize = 1024;

/// Deletes `runs` in the shadow's transaction before it commits, so that no live part of them
/// outlives a parent the commit's garbage collection frees.
fn defuse(txn: &mut TransactionMut, runs: &[(u64, u32, u32)]) {
    let mut deletes = yrs::IdSet::new();
    for &(client, clock, len) in runs {
        deletes.insert(ID::new(yrs::block::ClientID::new(client), clock), len);
    }
    let mut bytes = vec![0]; // no structs
    bytes.extend(yrs::updates::encoder::Encode::encode_v1(&deletes));
    if let Ok(update) = Update::decode_v1(&bytes) {
        if let Err(e) = txn.apply_update(update) {
            tracing::error!("the update guard could not delete a refused map entry: {e}");
        }
    }
}

/// Applies the room's own changes to the shadow; a failure marks it for rebuilding.
fn catch_up(shadow: &Shadow, behind: &mut Vec<Vec<u8>>, stale: &mut bool) {
    lock(&shadow.seen).watching = false;
    // One transaction per change, as the room made them: yrs squashes and collects garbage at
    // each commit, and the shadow's blocks should match the room's.
    for delta in behind.drain(..) {
        let mut txn = shadow.doc.transact_mut();
        let applied = Update::decode_v1(&delta).map(|u| txn.apply_update(u));
        if !matches!(applied, Ok(Ok(()))) {
            tracing::warn!("the update guard's shadow could not follow the room; rebuilding it");
            *stale = true;
            return;
        }
    }
}

/// A copy of `room` with the same client id (so the shadow's own writes — clearing carried
/// outputs — are the room's) and observers on each root.
fn build_shadow(room: &Doc, kind: DocumentKind, history: Option<&History>) -> Shadow {
    let options = Options {
        client_id: room.client_id(),
        offset_kind: yrs::OffsetKind::Utf16,
        ..Options::default()
    };
    let doc = Doc::with_options(options);
    let apply = |bytes: &[u8]| -> bool {
        match Update::decode_v1(bytes).map(|u| doc.transact_mut().apply_update(u)) {
            Ok(Ok(())) => true,
            _ => {
                tracing::error!("the update guard cannot copy the room's document");
                false
            }
        }
    };
    match history {
        // The room's own inputs, in order, one transaction each as the room took them.
        Some(history) => {
            for bytes in history.start.iter().chain(&history.changes) {
                if !apply(bytes) {
                    break;
                }
            }
        }
        None => {
            let state = room
                .transact()
                .encode_state_as_update_v1(&StateVector::default());
            apply(&state);
        }
    }
    let seen = Arc::new(Mutex::new(Seen::default()));
    match kind {
        DocumentKind::Notebook => {
            let cells = doc.get_or_insert_array("cells");
            let observed = seen.clone();
            let list = cells.clone();
            cells.observe_deep("quire-guard", move |txn, events| {
                let mut seen = lock(&observed);
                if seen.watching {
                    for event in events.iter() {
                        see_cells_event(&mut seen, txn, &list, event);
                    }
                }
            });
            observe_whole(&doc.get_or_insert_map("meta"), &seen, |_| {
                Field::NotebookMeta
            });
        }
        DocumentKind::Text => {
            observe_whole(&doc.get_or_insert_text("source"), &seen, |_| {
                Field::FileContent
            });
        }
    }
    let state = doc.get_or_insert_map("state");
    let observed = seen.clone();
    state.observe_deep("quire-guard", move |txn, events| {
        let mut seen = lock(&observed);
        if !seen.watching {
            return;
        }
        for event in events.iter() {
            match event.path().front() {
                Some(PathSegment::Key(key)) => {
                    seen.touched.push((Field::State(key.to_string()), None))
                }
                Some(PathSegment::Index(_)) => seen
                    .touched
                    .push((Field::Other("an unkeyed part of state".into()), None)),
                None => match event {
                    // (yrs reports the keys whose visible value changed; an entry placed where it
                    // is never seen — left of the current value — changes nothing.)
                    Event::Map(e) => {
                        let keys: Vec<String> = e.keys(txn).keys().map(|k| k.to_string()).collect();
                        for key in keys {
                            seen.touched.push((Field::State(key), None));
                        }
                    }
                    _ => seen
                        .touched
                        .push((Field::Other("the state root".into()), None)),
                },
            }
        }
    });
    Shadow { doc, seen }
}

/// Every change under `root` is the one field `field` names.
fn observe_whole<R: DeepObservable>(root: &R, seen: &Arc<Mutex<Seen>>, field: fn(&Event) -> Field) {
    let observed = seen.clone();
    root.observe_deep("quire-guard", move |txn, events| {
        let mut seen = lock(&observed);
        if seen.watching {
            for event in events.iter() {
                seen.touched.push((field(event), None));
                if seen.measure
                    && event.path().len() + inserted_nesting(txn, event) > MAX_JSON_DEPTH
                {
                    seen.touched.push((too_deep(), None));
                }
            }
        }
    });
}

/// One change event under the `cells` root, as fields and cells.
fn see_cells_event(seen: &mut Seen, txn: &TransactionMut, cells: &ArrayRef, event: &Event) {
    let target = event.target();
    let branch: Option<&yrs::branch::Branch> = match &target {
        Out::YArray(a) => Some(a.as_ref()),
        Out::YMap(m) => Some(m.as_ref()),
        Out::YText(t) => Some(t.as_ref()),
        _ => None,
    };
    if branch.is_some_and(|b| b.is_deleted()) {
        // Inside a cell this same update deletes (yrs deletes a map's content with it): the
        // cell's removal is the change. (Its path would also point at the wrong cell now.)
        return;
    }
    let target_item = branch.and_then(branch_item);
    let Some(target_item) = target_item else {
        // The cell list itself.
        let Event::Array(e) = event else {
            seen.touched
                .push((Field::Other("the cells root".into()), None));
            return;
        };
        for change in e.delta(txn) {
            if let Change::Added(values) = change {
                for value in values {
                    let item = match value {
                        Out::YMap(map) => branch_item(map.as_ref()),
                        _ => None,
                    };
                    if seen.measure && nesting(txn, value, MAX_JSON_DEPTH + 1) > MAX_JSON_DEPTH + 1
                    {
                        seen.touched.push((too_deep(), None));
                        continue;
                    }
                    match item {
                        Some(item) => seen.inserted.push((item, out_to_json(txn, value))),
                        None => seen
                            .touched
                            .push((Field::Other("a cell that is not a map".into()), None)),
                    }
                }
            }
        }
        for id in e.removes(txn) {
            seen.removed.push(item_of(id));
        }
        // (Nothing inserted or removed: only a keyed entry on the list, which no reader sees.)
        return;
    };
    let place = match seen.places.get(&target_item) {
        Some(place) => Some(place.clone()),
        None => {
            let path = event.path();
            let cell = match path.front() {
                Some(PathSegment::Index(i)) => match cells.get(txn, *i) {
                    Some(Out::YMap(map)) => branch_item(map.as_ref()),
                    _ => None,
                },
                _ => None,
            };
            let place = match (cell, path.get(1)) {
                (Some(cell), None) => Some(Place::Cell(cell)),
                (Some(cell), Some(PathSegment::Key(key))) => {
                    Some(Place::Field(cell, key.clone(), path.len() - 1))
                }
                _ => None,
            };
            if let Some(place) = &place {
                seen.places.insert(target_item, place.clone());
            }
            place
        }
    };
    match place {
        Some(Place::Cell(cell)) => {
            let keys: Vec<String> = match event {
                Event::Map(e) => e.keys(txn).keys().map(|k| k.to_string()).collect(),
                _ => Vec::new(),
            };
            // (No key whose visible value changed: nothing anyone sees.)
            for key in keys {
                seen.touched.push((Field::Cell(key), Some(cell)));
            }
            if seen.measure && inserted_nesting(txn, event) > MAX_JSON_DEPTH {
                seen.touched.push((too_deep(), Some(cell)));
            }
        }
        Some(Place::Field(cell, key, depth)) => {
            seen.touched
                .push((Field::Cell(key.to_string()), Some(cell)));
            if seen.measure && inserted_nesting(txn, event) + depth > MAX_JSON_DEPTH {
                seen.touched.push((too_deep(), Some(cell)));
            }
        }
        None => seen.touched.push((
            Field::Other("something the server cannot place in the notebook".into()),
            None,
        )),
    }
}

fn too_deep() -> Field {
    Field::Invalid(format!("values nested deeper than {MAX_JSON_DEPTH} levels"))
}

/// The deepest nesting among the values an event inserted (see [`nesting`]); a shared type
/// placed inside text counts as too deep (no notebook holds one, and yrs would recurse into it).
fn inserted_nesting(txn: &TransactionMut, event: &Event) -> usize {
    let limit = MAX_JSON_DEPTH + 1;
    match event {
        Event::Map(e) => e
            .keys(txn)
            .values()
            .filter_map(|change| match change {
                EntryChange::Inserted(v) | EntryChange::Updated(_, v) => {
                    Some(nesting(txn, v, limit))
                }
                EntryChange::Removed(_) => None,
            })
            .max()
            .unwrap_or(0),
        Event::Array(e) => e
            .delta(txn)
            .iter()
            .flat_map(|change| match change {
                Change::Added(values) => values.iter().map(|v| nesting(txn, v, limit)).collect(),
                _ => Vec::new(),
            })
            .max()
            .unwrap_or(0),
        Event::Text(e) => {
            let embeds_a_type = e.delta(txn).iter().any(
                |d| matches!(d, yrs::types::Delta::Inserted(v, _) if !matches!(v, Out::Any(_))),
            );
            if embeds_a_type {
                limit + 1
            } else {
                0
            }
        }
        _ => limit + 1,
    }
}

/// How many maps and lists a value nests (a scalar or a text is 0, `[]` is 1), counted up to
/// `limit + 1` (deeper values are not walked further: yrs and the file writer recurse).
fn nesting<T: ReadTxn>(txn: &T, value: &Out, limit: usize) -> usize {
    match value {
        Out::Any(any) => any_nesting(any, limit),
        Out::YText(text) => {
            let embeds_a_type = text
                .diff(txn, yrs::types::text::YChange::identity)
                .iter()
                .any(|d| !matches!(d.insert, Out::Any(_)));
            if embeds_a_type {
                limit + 1
            } else {
                0
            }
        }
        Out::YMap(map) if limit > 0 => {
            1 + map
                .iter(txn)
                .map(|(_, v)| nesting(txn, &v, limit - 1))
                .max()
                .unwrap_or(0)
        }
        Out::YArray(array) if limit > 0 => {
            1 + array
                .iter(txn)
                .map(|v| nesting(txn, &v, limit - 1))
                .max()
                .unwrap_or(0)
        }
        Out::YMap(_) | Out::YArray(_) => 1,
        _ => limit + 1,
    }
}

fn any_nesting(any: &Any, limit: usize) -> usize {
    match any {
        Any::Map(map) if limit > 0 => {
            1 + map
                .values()
                .map(|v| any_nesting(v, limit - 1))
                .max()
                .unwrap_or(0)
        }
        Any::Array(list) if limit > 0 => {
            1 + list
                .iter()
                .map(|v| any_nesting(v, limit - 1))
                .max()
                .unwrap_or(0)
        }
        Any::Map(_) | Any::Array(_) => 1,
        _ => 0,
    }
}

/// Whether every deleted range is already deleted in `room` (so a delete set adds nothing).
///
/// One sweep over each client's deleted ranges for all of that client's ranges in the update,
/// sorted: a delete set of n ranges against a room holding m costs n log n + m (walking the
/// room's ranges from the start for each one made a watcher's 80 KB resend cost n × m).
fn deletions_known(room: &Doc, deletes: &[(u64, u32, u32)]) -> bool {
    let mut wanted: Vec<(u64, u32, u32)> = deletes.iter().copied().filter(|d| d.2 > 0).collect();
    if wanted.is_empty() {
        return true;
    }
    wanted.sort_unstable();
    let deleted = room.transact().snapshot().delete_set;
    let mut queries = wanted.iter().peekable();
    while let Some(&&(client, _, _)) = queries.peek() {
        let Some(ranges) = deleted.get(&yrs::block::ClientID::new(client)) else {
            return false;
        };
        let mut ranges = ranges.iter().map(|(r, _)| (r.start, r.end)).peekable();
        // The room's deleted run looked at, adjacent ranges merged: [start, end).
        let mut run: Option<(u32, u32)> = None;
        while let Some(&&(_, clock, len)) = queries.peek().filter(|q| q.0 == client) {
            queries.next();
            let end = clock.saturating_add(len);
            loop {
                match run {
                    // The only run that can hold `clock` (those before end at or before it).
                    Some((start, stop)) if stop > clock => {
                        if start <= clock && stop >= end {
                            break;
                        }
                        return false;
                    }
                    _ => {
                        let Some((start, mut stop)) = ranges.next() else {
                            return false;
                        };
                        while let Some(&(next, next_stop)) = ranges.peek() {
                            if next > stop {
                                break;
                            }
                            stop = stop.max(next_stop);
                            ranges.next();
                        }
                        run = Some((start, stop));
                    }
                }
            }
        }
    }
    true
}

/// A cell inserted whole must be one nbformat can read.
fn check_cell(cell: &Value) -> Result<(), Refusal> {
    crate::notebook::check_cell(cell.clone()).map_err(|e| {
        Refusal(
            format!("the new cell would make the notebook unreadable: {e}"),
            Wrong::Forbidden,
        )
    })
}

/// A cell id names one cell: a new cell may not take the id of a cell that stays (the kernel
/// would run whichever comes first, and the saved file would rename the other), nor the id of
/// another new cell. A move (delete and insert with the same id in one update) is fine.
fn check_new_ids(
    room: &Doc,
    inserted: &[(CellItem, Value)],
    removed: &HashSet<CellItem>,
) -> Result<(), Refusal> {
    let new_ids: Vec<&str> = inserted
        .iter()
        .filter_map(|(_, cell)| cell.get("id").and_then(Value::as_str))
        .filter(|id| !id.is_empty())
        .collect();
    if new_ids.is_empty() {
        return Ok(());
    }
    let txn = room.transact();
    let mut taken: HashSet<String> = HashSet::new();
    if let Some(cells) = txn.get_array("cells") {
        for cell in cells.iter(&txn) {
            let Out::YMap(map) = cell else { continue };
            if branch_item(map.as_ref()).is_some_and(|item| removed.contains(&item)) {
                continue;
            }
            if let Some(Out::Any(Any::String(id))) = map.get(&txn, "id") {
                taken.insert(id.to_string());
            }
        }
    }
    for id in new_ids {
        if !taken.insert(id.to_string()) {
            return Err(Refusal(
                format!(
                    "the change would make the notebook unreadable: two cells with the id {id:?}"
                ),
                Wrong::Forbidden,
            ));
        }
    }
    Ok(())
}

/// The notebook's own fields must stay what Quire (and nbformat) read: format 4.x and a
/// metadata object.
fn check_meta(shadow: &Doc) -> Result<(), Refusal> {
    let txn = shadow.transact();
    let Some(meta) = txn.get_map("meta") else {
        return Ok(());
    };
    let wrong = |what: &str| {
        Err(Refusal(
            format!("the change would make the notebook unreadable: {what}"),
            Wrong::Forbidden,
        ))
    };
    // (As the loader reads them: integers.)
    let number = |key: &str| match meta.get(&txn, key) {
        None => Ok(None),
        Some(value) => out_to_json(&txn, &value).as_i64().map(Some).ok_or(()),
    };
    match number("nbformat") {
        Ok(None) | Ok(Some(4)) => {}
        _ => return wrong("\"nbformat\" must be 4"),
    }
    match number("nbformat_minor") {
        Ok(None) => {}
        Ok(Some(minor)) if minor >= 0 => {}
        _ => return wrong("\"nbformat_minor\" must be a non-negative integer"),
    }
    match meta.get(&txn, "metadata") {
        None | Some(Out::YMap(_)) | Some(Out::Any(Any::Map(_))) => Ok(()),
        Some(_) => wrong("\"metadata\" must be an object"),
    }
}

/// The top-level fields of existing cells an update changed must still have the types
/// nbformat reads (cheaply: only the fields' kinds, not their content).
fn check_touched_cells(shadow: &Doc, analysis: &Analysis) -> Result<(), Refusal> {
    let txn = shadow.transact();
    for &cell in &analysis.cells {
        if analysis.deleted_cells.contains(&cell) {
            continue;
        }
        let Some(map) = cell_map(&txn, cell) else {
            continue;
        };
        let mut shape = serde_json::Map::new();
        for (key, value) in map.iter(&txn) {
            let summary = match &value {
                Out::YText(_) => Value::String(String::new()),
                Out::YArray(_) => Value::Array(Vec::new()),
                Out::YMap(_) => Value::Object(Default::default()),
                Out::Any(Any::Array(_)) if key == "outputs" => Value::Array(Vec::new()),
                other => out_to_json(&txn, other),
            };
            shape.insert(key.to_string(), summary);
        }
        crate::notebook::check_cell(Value::Object(shape)).map_err(|e| {
            Refusal(
                format!("the change would make a cell unreadable: {e}"),
                Wrong::Forbidden,
            )
        })?;
    }
    Ok(())
}

pub(crate) fn cell_map<T: ReadTxn>(txn: &T, cell: CellItem) -> Option<MapRef> {
    let id = ID::new(yrs::block::ClientID::new(cell.0), cell.1);
    BranchID::get_nested(txn, &id).map(MapRef::from)
}

/// The cells inserted by someone without `execute` that carry outputs, an execution count or
/// a run state they did not get from the cell with the same id deleted in the same update.
fn carried_runs(room: &Doc, inserted: &[(CellItem, Value)], removed: &[CellItem]) -> Vec<CellItem> {
    let blank = |cell: &Value| {
        let outputs_empty = match cell.get("outputs") {
            None | Some(Value::Null) => true,
            Some(Value::Array(a)) => a.is_empty(),
            Some(_) => false,
        };
        let count_empty = matches!(cell.get("execution_count"), None | Some(Value::Null));
        let state_idle = matches!(cell.get("execution_state"), None | Some(Value::Null))
            || cell.get("execution_state") == Some(&Value::String("idle".into()));
        outputs_empty && count_empty && state_idle
    };
    // (outputs, execution count, run state)
    type CellRun = (Value, Value, Value);
    let run = |c: &Value| -> CellRun {
        (
            crate::notebook::normalized_outputs(c.get("outputs")),
            c.get("execution_count").cloned().unwrap_or(Value::Null),
            c.get("execution_state").cloned().unwrap_or(Value::Null),
        )
    };
    let mut carried = Vec::new();
    // The deleted cells by id, each with its run; a deleted cell lends its run to one copy at
    // most (taken out of the list when lent).
    let mut originals: Option<HashMap<String, Vec<CellRun>>> = None;
    for (item, cell) in inserted {
        if blank(cell) {
            continue;
        }
        let originals = originals.get_or_insert_with(|| {
            let txn = room.transact();
            let mut by_id: HashMap<String, Vec<_>> = HashMap::new();
            for map in removed.iter().filter_map(|&r| cell_map(&txn, r)) {
                let original = out_to_json(&txn, &Out::YMap(map));
                if let Some(id) = original.get("id").and_then(Value::as_str) {
                    by_id
                        .entry(id.to_string())
                        .or_default()
                        .push(run(&original));
                }
            }
            by_id
        });
        let (outputs, count, state) = run(cell);
        let twins = cell
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| originals.get_mut(id));
        let moved = twins.and_then(|twins| {
            let i = twins.iter().position(|(o_outputs, o_count, o_state)| {
                same_json(&outputs, o_outputs)
                    && same_json(&count, o_count)
                    && (state == *o_state
                        || state.is_null()
                        || state == Value::String("idle".into()))
            })?;
            Some(twins.swap_remove(i))
        });
        if moved.is_none() {
            carried.push(*item);
        }
    }
    carried
}

/// JSON equality in which numbers compare by value (an integer stored as a float is the same).
fn same_json(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

/// Clears outputs, execution count and run state of `cells` on the shadow, as the room (the
/// shadow shares its client id); returns that change.
fn clear_runs(shadow: &Doc, cells: &[CellItem]) -> Vec<u8> {
    let mut txn = shadow.transact_mut();
    for &cell in cells {
        let Some(map) = cell_map(&txn, cell) else {
            continue;
        };
        match map.get(&txn, "outputs") {
            Some(Out::YArray(outputs)) => {
                let n = outputs.len(&txn);
                if n > 0 {
                    outputs.remove_range(&mut txn, 0, n);
                }
            }
            Some(_) => {
                map.insert(&mut txn, "outputs", ArrayPrelim::default());
            }
            None => {}
        }
        if !matches!(
            map.get(&txn, "execution_count"),
            None | Some(Out::Any(Any::Null))
        ) {
            map.insert(&mut txn, "execution_count", Any::Null);
        }
        if map.get(&txn, "execution_state").is_some() {
            map.insert(&mut txn, "execution_state", "idle");
        }
    }
    txn.encode_update_v1()
}

#[cfg(test)]
mod tests;
