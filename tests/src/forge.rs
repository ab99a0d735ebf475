//! Hand-made Yjs updates, for tests that attack the update guard with what no honest client
//! sends. The wire form is Yjs's v1 encoding as yrs 0.28 reads it (`update.rs`, `block.rs`):
//!
//! ```text
//! update      = varUint(#clients) { varUint(#structs) varUint(client) varUint(first clock) struct* }
//!               delete set
//! struct      = info:u8 [origin id] [right origin id] [parent [parent sub]] content
//!               info: 0x80 origin, 0x40 right origin, 0x20 parent sub, low 5 bits the content ref
//!               (0 GC and 10 skip carry only varUint(len)); the parent (varUint 1 + root name, or
//!               varUint 0 + id) and the parent sub are written only when there is neither origin
//!               nor right origin: otherwise yrs inherits both from a neighbour
//! id          = varUint(client) varUint(clock)
//! content     = 1 deleted: varUint(len) | 3 binary: varBytes | 4 string: varString (its length
//!               counts UTF-16 units) | 5 embed: varString(JSON) | 6 format: varString varString
//!               | 7 type: varUint(type ref) [varString name for 3 and 5] | 8 any: varUint(n) any*
//!               | 9 doc: varString(guid) any(options)
//! delete set  = varUint(#clients) { varUint(client) varUint(#ranges) { varUint(clock) varUint(len) } }
//! ```
//!
//! [`Update`] reads and writes that form (what yrs writes reads back as the same update), so a test can take
//! a real update apart, patch it, or build one from nothing; [`DocState`] reads a whole document
//! this way to name the items an attack points at (the live entry of a map key, say), which yrs
//! does not expose.

use std::collections::{BTreeMap, HashMap};

use serde_json::Value;
use yrs::updates::encoder::Encode;
use yrs::{Doc, IndexedSequence, ReadTxn, StateVector, Transact};

/// yrs keeps only the low 53 bits of a client id: `X + ALIAS` is client `X` to yrs.
pub const ALIAS: u64 = 1 << 53;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id {
    pub client: u64,
    pub clock: u32,
}

impl Id {
    pub fn new(client: u64, clock: u32) -> Id {
        Id { client, clock }
    }

    /// The same id under another client number (`client + ALIAS` to alias it).
    pub fn with_client(self, client: u64) -> Id {
        Id { client, ..self }
    }
}

impl From<&yrs::ID> for Id {
    fn from(id: &yrs::ID) -> Id {
        Id::new(id.client.get(), id.clock)
    }
}

/// Where an item says it goes when it has no neighbour to inherit it from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Parent {
    /// A root type, by name (`cells`, `meta`, `state`).
    Root(String),
    /// The item holding a nested type.
    Item(Id),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Content {
    Deleted(u32),
    Binary(Vec<u8>),
    Str(String),
    /// JSON text.
    Embed(String),
    Format(String, String),
    /// A shared type: its type ref (0 array, 1 map, 2 text, …) and, for XML ones, a name.
    Type(u8, Option<String>),
    /// lib0 `any` values, each as encoded (see [`any`]).
    Any(Vec<Vec<u8>>),
    /// A subdocument: guid and its options (an encoded `any`).
    Doc(String, Vec<u8>),
}

impl Content {
    fn reference(&self) -> u8 {
        match self {
            Content::Deleted(_) => 1,
            Content::Binary(_) => 3,
            Content::Str(_) => 4,
            Content::Embed(_) => 5,
            Content::Format(..) => 6,
            Content::Type(..) => 7,
            Content::Any(_) => 8,
            Content::Doc(..) => 9,
        }
    }

    /// How many clock ticks the content takes.
    pub fn len(&self) -> u32 {
        match self {
            Content::Deleted(n) => *n,
            Content::Str(s) => s.encode_utf16().count() as u32,
            Content::Any(values) => values.len() as u32,
            _ => 1,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Plain JSON values, as a client writes a map entry or array elements.
    pub fn json(values: &[Value]) -> Content {
        Content::Any(values.iter().map(any).collect())
    }

    pub fn map() -> Content {
        Content::Type(1, None)
    }
}

/// One JSON value in lib0's `any` encoding (as yrs writes it).
pub fn any(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    collab::notebook::json_to_any(value).encode(&mut out);
    out
}

#[derive(Clone, Debug, PartialEq)]
pub struct Item {
    pub id: Id,
    pub origin: Option<Id>,
    pub right_origin: Option<Id>,
    /// Written only when there is neither origin nor right origin.
    pub parent: Option<Parent>,
    pub parent_sub: Option<String>,
    pub content: Content,
}

impl Item {
    /// An item placed explicitly: `parent` (and `key` for a map entry), no neighbours.
    pub fn placed(id: Id, parent: Parent, key: Option<&str>, content: Content) -> Item {
        Item {
            id,
            origin: None,
            right_origin: None,
            parent: Some(parent),
            parent_sub: key.map(str::to_string),
            content,
        }
    }

    /// An item placed by its neighbours only (yrs derives its parent and key from them).
    pub fn between(id: Id, origin: Option<Id>, right_origin: Option<Id>, content: Content) -> Item {
        assert!(origin.is_some() || right_origin.is_some());
        Item {
            id,
            origin,
            right_origin,
            parent: None,
            parent_sub: None,
            content,
        }
    }

    pub fn len(&self) -> u32 {
        self.content.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The id of its last clock tick (what an item inserted right after it names as origin).
    pub fn last(&self) -> Id {
        Id::new(self.id.client, self.id.clock + self.len() - 1)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Block {
    Item(Item),
    Gc { id: Id, len: u32 },
    Skip { id: Id, len: u32 },
}

impl Block {
    pub fn id(&self) -> Id {
        match self {
            Block::Item(item) => item.id,
            Block::Gc { id, .. } | Block::Skip { id, .. } => *id,
        }
    }

    pub fn len(&self) -> u32 {
        match self {
            Block::Item(item) => item.len(),
            Block::Gc { len, .. } | Block::Skip { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A v1 update: blocks (grouped by client on the wire, in the order clients first appear here;
/// each client's blocks must follow each other clock by clock) and a delete set.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Update {
    pub blocks: Vec<Block>,
    /// (client, clock, len)
    pub deletes: Vec<(u64, u32, u32)>,
}

impl Update {
    pub fn new() -> Update {
        Update::default()
    }

    pub fn item(mut self, item: Item) -> Update {
        self.blocks.push(Block::Item(item));
        self
    }

    pub fn delete(mut self, id: Id, len: u32) -> Update {
        self.deletes.push((id.client, id.clock, len));
        self
    }

    /// The v1 bytes.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        let mut clients: Vec<u64> = Vec::new();
        let mut by_client: HashMap<u64, Vec<&Block>> = HashMap::new();
        for block in &self.blocks {
            let client = block.id().client;
            if !clients.contains(&client) {
                clients.push(client);
            }
            by_client.entry(client).or_default().push(block);
        }
        var(&mut out, clients.len() as u64);
        for client in &clients {
            let mut blocks = by_client.remove(client).unwrap();
            blocks.sort_by_key(|b| b.id().clock);
            for pair in blocks.windows(2) {
                assert_eq!(
                    pair[0].id().clock + pair[0].len(),
                    pair[1].id().clock,
                    "client {client}: blocks must follow each other (use a skip for a gap)"
                );
            }
            var(&mut out, blocks.len() as u64);
            var(&mut out, *client);
            var(&mut out, blocks[0].id().clock as u64);
            for block in blocks {
                write_block(&mut out, block);
            }
        }
        let mut deletes: Vec<(u64, Vec<(u32, u32)>)> = Vec::new();
        for &(client, clock, len) in &self.deletes {
            match deletes.iter_mut().find(|(c, _)| *c == client) {
                Some((_, ranges)) => ranges.push((clock, len)),
                None => deletes.push((client, vec![(clock, len)])),
            }
        }
        var(&mut out, deletes.len() as u64);
        for (client, ranges) in deletes {
            var(&mut out, client);
            var(&mut out, ranges.len() as u64);
            for (clock, len) in ranges {
                var(&mut out, clock as u64);
                var(&mut out, len as u64);
            }
        }
        out
    }

    /// Reads a v1 update.
    pub fn decode(bytes: &[u8]) -> Result<Update, String> {
        let mut r = Reader {
            data: bytes,
            pos: 0,
        };
        let mut update = Update::new();
        let clients = r.var()?;
        for _ in 0..clients {
            let count = r.var()?;
            let client = r.var()?;
            let mut clock = r.u32()?;
            for _ in 0..count {
                let id = Id::new(client, clock);
                let block = read_block(&mut r, id)?;
                clock += block.len();
                update.blocks.push(block);
            }
        }
        let clients = r.var()?;
        for _ in 0..clients {
            let client = r.var()?;
            let ranges = r.var()?;
            for _ in 0..ranges {
                let clock = r.u32()?;
                let len = r.u32()?;
                update.deletes.push((client, clock, len));
            }
        }
        if r.pos != bytes.len() {
            return Err(format!("{} bytes left over", bytes.len() - r.pos));
        }
        Ok(update)
    }

    /// The same update with every id of `client` (its blocks, origins, parents, deletions)
    /// moved to `to`.
    pub fn rename_client(&self, client: u64, to: u64) -> Update {
        let move_id = |id: Id| {
            if id.client == client {
                id.with_client(to)
            } else {
                id
            }
        };
        let mut update = self.clone();
        for block in &mut update.blocks {
            match block {
                Block::Item(item) => {
                    item.id = move_id(item.id);
                    item.origin = item.origin.map(move_id);
                    item.right_origin = item.right_origin.map(move_id);
                    if let Some(Parent::Item(parent)) = &mut item.parent {
                        *parent = move_id(*parent);
                    }
                }
                Block::Gc { id, .. } | Block::Skip { id, .. } => *id = move_id(*id),
            }
        }
        for delete in &mut update.deletes {
            if delete.0 == client {
                delete.0 = to;
            }
        }
        update
    }
}

fn write_block(out: &mut Vec<u8>, block: &Block) {
    let item = match block {
        Block::Gc { len, .. } => {
            out.push(0);
            var(out, *len as u64);
            return;
        }
        Block::Skip { len, .. } => {
            out.push(10);
            var(out, *len as u64);
            return;
        }
        Block::Item(item) => item,
    };
    let mut info = item.content.reference();
    if item.origin.is_some() {
        info |= 0x80;
    }
    if item.right_origin.is_some() {
        info |= 0x40;
    }
    if item.parent_sub.is_some() {
        info |= 0x20;
    }
    out.push(info);
    if let Some(id) = item.origin {
        write_id(out, id);
    }
    if let Some(id) = item.right_origin {
        write_id(out, id);
    }
    if item.origin.is_none() && item.right_origin.is_none() {
        match item
            .parent
            .as_ref()
            .expect("an item without neighbours names its parent")
        {
            Parent::Root(name) => {
                var(out, 1);
                string(out, name);
            }
            Parent::Item(id) => {
                var(out, 0);
                write_id(out, *id);
            }
        }
        if let Some(sub) = &item.parent_sub {
            string(out, sub);
        }
    } else {
        assert!(
            item.parent.is_none(),
            "the wire form carries a parent only for items without neighbours"
        );
    }
    match &item.content {
        Content::Deleted(len) => var(out, *len as u64),
        Content::Binary(bytes) => {
            var(out, bytes.len() as u64);
            out.extend_from_slice(bytes);
        }
        Content::Str(s) | Content::Embed(s) => string(out, s),
        Content::Format(key, value) => {
            string(out, key);
            string(out, value);
        }
        Content::Type(type_ref, name) => {
            var(out, *type_ref as u64);
            if let Some(name) = name {
                string(out, name);
            }
        }
        Content::Any(values) => {
            var(out, values.len() as u64);
            for value in values {
                out.extend_from_slice(value);
            }
        }
        Content::Doc(guid, options) => {
            string(out, guid);
            out.extend_from_slice(options);
        }
    }
}

fn read_block(r: &mut Reader, id: Id) -> Result<Block, String> {
    let info = r.byte()?;
    match info & 0x1f {
        0 => return Ok(Block::Gc { id, len: r.u32()? }),
        10 => return Ok(Block::Skip { id, len: r.u32()? }),
        _ => {}
    }
    let origin = if info & 0x80 != 0 {
        Some(r.id()?)
    } else {
        None
    };
    let right_origin = if info & 0x40 != 0 {
        Some(r.id()?)
    } else {
        None
    };
    let (mut parent, mut parent_sub) = (None, None);
    if info & 0xc0 == 0 {
        parent = Some(if r.var()? == 1 {
            Parent::Root(r.string()?)
        } else {
            Parent::Item(r.id()?)
        });
        if info & 0x20 != 0 {
            parent_sub = Some(r.string()?);
        }
    }
    let content = match info & 0x1f {
        1 => Content::Deleted(r.u32()?),
        3 => {
            let n = r.var()? as usize;
            Content::Binary(r.bytes(n)?.to_vec())
        }
        4 => Content::Str(r.string()?),
        5 => Content::Embed(r.string()?),
        6 => Content::Format(r.string()?, r.string()?),
        7 => {
            let type_ref = r.var()? as u8;
            let name = match type_ref {
                3 | 5 => Some(r.string()?),
                _ => None,
            };
            Content::Type(type_ref, name)
        }
        8 => {
            let n = r.var()?;
            let mut values = Vec::new();
            for _ in 0..n {
                let start = r.pos;
                r.skip_any(0)?;
                values.push(r.data[start..r.pos].to_vec());
            }
            Content::Any(values)
        }
        9 => {
            let guid = r.string()?;
            let start = r.pos;
            r.skip_any(0)?;
            Content::Doc(guid, r.data[start..r.pos].to_vec())
        }
        other => return Err(format!("content ref {other} is not supported here")),
    };
    Ok(Block::Item(Item {
        id,
        origin,
        right_origin,
        parent,
        parent_sub,
        content,
    }))
}

pub fn var(out: &mut Vec<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn string(out: &mut Vec<u8>, s: &str) {
    var(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn write_id(out: &mut Vec<u8>, id: Id) {
    var(out, id.client);
    var(out, id.clock as u64);
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, String> {
        let b = *self.data.get(self.pos).ok_or("unexpected end")?;
        self.pos += 1;
        Ok(b)
    }

    fn var(&mut self) -> Result<u64, String> {
        let mut value = 0u64;
        let mut shift = 0;
        loop {
            let b = self.byte()?;
            value |= ((b & 0x7f) as u64) << shift;
            if b & 0x80 == 0 {
                return Ok(value);
            }
            shift += 7;
            if shift > 63 {
                return Err("varUint too long".into());
            }
        }
    }

    fn u32(&mut self) -> Result<u32, String> {
        u32::try_from(self.var()?).map_err(|_| "number out of range".to_string())
    }

    fn id(&mut self) -> Result<Id, String> {
        Ok(Id::new(self.var()?, self.u32()?))
    }

    fn bytes(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        let slice = self.data.get(self.pos..end).ok_or("unexpected end")?;
        self.pos = end;
        Ok(slice)
    }

    fn string(&mut self) -> Result<String, String> {
        let n = self.var()? as usize;
        String::from_utf8(self.bytes(n)?.to_vec()).map_err(|_| "invalid UTF-8".to_string())
    }

    fn skip_any(&mut self, depth: u32) -> Result<(), String> {
        if depth > 64 {
            return Err("value nested too deeply".into());
        }
        match self.byte()? {
            127 | 126 | 121 | 120 => {}
            125 => while self.byte()? & 0x80 != 0 {},
            124 => {
                self.bytes(4)?;
            }
            123 | 122 => {
                self.bytes(8)?;
            }
            119 => {
                self.string()?;
            }
            118 => {
                for _ in 0..self.var()? {
                    self.string()?;
                    self.skip_any(depth + 1)?;
                }
            }
            117 => {
                for _ in 0..self.var()? {
                    self.skip_any(depth + 1)?;
                }
            }
            116 => {
                let n = self.var()? as usize;
                self.bytes(n)?;
            }
            other => return Err(format!("unknown value type {other}")),
        }
        Ok(())
    }
}

/// A whole document read item by item, to name what an attack points at.
pub struct DocState {
    items: BTreeMap<(u64, u32), Block>,
    deleted: Vec<(u64, u32, u32)>,
    state_vector: StateVector,
}

impl DocState {
    pub fn of(doc: &Doc) -> DocState {
        let txn = doc.transact();
        let bytes = txn.encode_state_as_update_v1(&StateVector::default());
        let update = Update::decode(&bytes).expect("yrs writes what forge reads");
        DocState {
            items: update
                .blocks
                .into_iter()
                .map(|b| ((b.id().client, b.id().clock), b))
                .collect(),
            deleted: update.deletes,
            state_vector: txn.state_vector(),
        }
    }

    /// The next clock of `client` (how much of it the document holds).
    pub fn clock(&self, client: u64) -> u32 {
        self.state_vector.get(&yrs::ClientID::new(client))
    }

    /// The block holding `id`.
    pub fn block(&self, id: Id) -> Option<&Block> {
        let (_, block) = self.items.range(..=(id.client, id.clock)).next_back()?;
        (block.id().client == id.client && id.clock < block.id().clock + block.len())
            .then_some(block)
    }

    pub fn is_deleted(&self, id: Id) -> bool {
        self.deleted
            .iter()
            .any(|&(c, clock, len)| c == id.client && id.clock >= clock && id.clock < clock + len)
    }

    /// Where an item is, as yrs places it: its own parent, else its left neighbour's (parent and
    /// key), else its right neighbour's. `None` for GC'd or unplaceable blocks.
    pub fn placement(&self, id: Id) -> Option<(Parent, Option<String>)> {
        self.placement_at(id, 0)
    }

    fn placement_at(&self, id: Id, depth: u32) -> Option<(Parent, Option<String>)> {
        if depth > 10_000 {
            return None;
        }
        let Block::Item(item) = self.block(id)? else {
            return None;
        };
        if let Some(parent) = &item.parent {
            return Some((parent.clone(), item.parent_sub.clone()));
        }
        item.origin
            .and_then(|o| self.placement_at(o, depth + 1))
            .or_else(|| {
                item.right_origin
                    .and_then(|o| self.placement_at(o, depth + 1))
            })
    }

    /// The live (not deleted) item holding `key` of the map `parent`.
    pub fn map_entry(&self, parent: &Parent, key: &str) -> Option<Id> {
        self.items.values().find_map(|block| {
            let Block::Item(item) = block else {
                return None;
            };
            if self.is_deleted(item.id) {
                return None;
            }
            let (p, sub) = self.placement(item.id)?;
            (p == *parent && sub.as_deref() == Some(key)).then_some(item.id)
        })
    }

    /// Every GC'd block (deleted content yrs dropped, parent and all).
    pub fn gc_blocks(&self) -> impl Iterator<Item = Id> + '_ {
        self.items.values().filter_map(|b| match b {
            Block::Gc { id, .. } => Some(*id),
            _ => None,
        })
    }
}

/// The item holding a nested type (or the root's name).
pub fn branch<B: AsRef<yrs::branch::Branch>>(shared: &B) -> Parent {
    match shared.as_ref().id() {
        yrs::BranchID::Nested(id) => Parent::Item(Id::from(&id)),
        yrs::BranchID::Root(name) => Parent::Root(name.to_string()),
    }
}

/// The id of the element at `index` of a text or array (a character, a cell, an output).
pub fn element<T: ReadTxn, S: IndexedSequence>(txn: &T, sequence: &S, index: u32) -> Id {
    let sticky = sequence
        .sticky_index(txn, index, yrs::Assoc::After)
        .unwrap_or_else(|| panic!("no element at {index}"));
    Id::from(sticky.id().expect("an element, not the sequence's end"))
}

/// Copies a document (its whole state) into a new one, to try an update on the side.
pub fn replica(doc: &Doc) -> Doc {
    let state = doc
        .transact()
        .encode_state_as_update_v1(&StateVector::default());
    let copy = collab::notebook::new_doc();
    apply(&copy, &state).expect("a document's own state applies");
    copy
}

/// Applies v1 update bytes as the room would.
pub fn apply(doc: &Doc, bytes: &[u8]) -> Result<(), String> {
    use yrs::updates::decoder::Decode;
    let update = yrs::Update::decode_v1(bytes).map_err(|e| e.to_string())?;
    doc.transact_mut()
        .apply_update(update)
        .map_err(|e| e.to_string())
}

/// A state vector as y-protocols carries it.
pub fn state_vector(doc: &Doc) -> Vec<u8> {
    doc.transact().state_vector().encode_v1()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every update yrs writes for a notebook reads back and writes again byte for byte.
    #[test]
    fn round_trips_what_yrs_writes() {
        let nb =
            collab::Notebook::from_ipynb(&crate::notebook_with(&["a = 1", "print(a)"])).unwrap();
        let doc = nb.to_doc();
        {
            use yrs::{Map, Text, WriteTxn};
            let mut txn = doc.transact_mut();
            let state = txn.get_or_insert_map("state");
            state.insert(&mut txn, "path", "x.ipynb");
            state.insert(&mut txn, "path", "y.ipynb");
            collab::notebook::cell_source(&txn, 0)
                .unwrap()
                .push(&mut txn, "é😀");
        }
        let bytes = doc
            .transact()
            .encode_state_as_update_v1(&StateVector::default());
        let update = Update::decode(&bytes).unwrap();
        // yrs sets the parent-sub flag of items that inherit their key too (nothing follows
        // it on the wire); forge leaves it out: the same update to a reader.
        let again = update.encode();
        assert_eq!(Update::decode(&again).unwrap(), update);
        let copy = collab::notebook::new_doc();
        apply(&copy, &again).unwrap();
        assert_eq!(
            collab::Notebook::from_doc(&copy.transact()),
            collab::Notebook::from_doc(&doc.transact())
        );
        assert_eq!(
            copy.transact()
                .encode_state_as_update_v1(&StateVector::default()),
            bytes
        );
        let state = DocState::of(&doc);
        let path = state
            .map_entry(&Parent::Root("state".into()), "path")
            .unwrap();
        assert!(!state.is_deleted(path));
        // The second value, then the three UTF-16 units typed after it.
        assert_eq!(state.clock(path.client), path.clock + 1 + 3);
        assert!(state.is_deleted(Id::new(path.client, path.clock - 1)));
    }
}
