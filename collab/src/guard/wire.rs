//! What the guard reads from an update's v1 wire form before any yrs document sees it: the
//! things yrs would take on trust. Client ids (yrs keeps their low 53 bits, so a larger one
//! would alias another client), values nested deeper than [`MAX_JSON_DEPTH`], explicit roots,
//! content kinds a notebook never holds (embedded documents, formatting, XML types), and what
//! each struct builds on (so an update that would stay pending is known before it is applied).
//!
//! This reader never decides where anything goes: placement is yrs's, read back from the
//! shadow document (see the parent module).

use std::collections::HashMap;

use crate::MAX_JSON_DEPTH;

/// yrs keeps client ids in 53 bits (as Yjs, whose ids are JavaScript numbers).
pub const MAX_CLIENT_ID: u64 = (1 << 53) - 1;

/// An item id: client and clock.
pub type Id = (u64, u32);

/// One struct of an update.
#[derive(Debug, Clone)]
pub struct WireStruct {
    pub client: u64,
    pub clock: u32,
    pub len: u32,
    /// A skip: a gap in the sender's view of this client, no content.
    pub skip: bool,
    /// An item (not a skip, not garbage).
    pub item: bool,
    /// The ids it builds on: left origin, right origin, explicit parent item.
    pub deps: [Option<Id>; 3],
    /// An explicit root parent, by name.
    pub root: Option<String>,
    /// An explicit parent with a map key.
    pub keyed: bool,
    /// Text with characters outside the Basic Multilingual Plane: yrs 0.28 counts it in UTF-16
    /// units but reads it by character, so in a list rather than a text it makes every walk
    /// over that list loop forever. The guard checks where yrs put it.
    pub astral_text: bool,
    /// Content yrs keeps as one item of several units (a string of more than one UTF-16 unit,
    /// several values), which a later reference into its middle splits. Under a map key that
    /// is how an entry ends up outside its key's chain: the guard checks where yrs put it.
    pub splittable: bool,
}

/// An update as read from the wire.
#[derive(Debug, Default)]
pub struct WireUpdate {
    pub structs: Vec<WireStruct>,
    /// It holds shared types or JSON values: what it nests must be measured where it lands.
    pub nests: bool,
    /// (client, clock, len) ranges.
    pub deletes: Vec<(u64, u32, u32)>,
}

impl WireUpdate {
    /// Whether yrs, holding the state `sv` (client → next clock), can integrate every struct and
    /// deletion of this update now. When not, yrs would keep part of it pending and apply it
    /// later, when someone else's update fills the gap: the guard answers `conflict` instead.
    pub fn missing_dependency(&self, sv: &dyn Fn(u64) -> u32) -> Option<Id> {
        // What the receiver will hold per client once the update's own structs are in.
        let mut reach: HashMap<u64, u32> = HashMap::new();
        for s in &self.structs {
            let have = *reach.entry(s.client).or_insert_with(|| sv(s.client));
            if s.skip {
                continue;
            }
            if s.clock > have {
                return Some((s.client, have));
            }
            reach.insert(s.client, have.max(s.clock.saturating_add(s.len)));
        }
        let known = |id: Id, reach: &HashMap<u64, u32>| {
            id.1 < reach.get(&id.0).copied().unwrap_or_else(|| sv(id.0))
        };
        for s in &self.structs {
            for dep in s.deps.iter().flatten() {
                if !known(*dep, &reach) {
                    return Some(*dep);
                }
            }
        }
        for &(client, clock, len) in &self.deletes {
            if len > 0 && !known((client, clock.saturating_add(len) - 1), &reach) {
                return Some((client, clock));
            }
        }
        None
    }

    /// Whether every struct is one the state `sv` already holds.
    pub fn structs_known(&self, sv: &dyn Fn(u64) -> u32) -> bool {
        self.structs
            .iter()
            .all(|s| s.skip || s.clock.saturating_add(s.len) <= sv(s.client))
    }
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

type DecodeResult<T> = Result<T, String>;

impl<'a> Reader<'a> {
    fn byte(&mut self) -> DecodeResult<u8> {
        let b = *self.data.get(self.pos).ok_or("unexpected end")?;
        self.pos += 1;
        Ok(b)
    }

    fn var_uint(&mut self) -> DecodeResult<u64> {
        let mut value: u64 = 0;
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

    fn u32(&mut self) -> DecodeResult<u32> {
        u32::try_from(self.var_uint()?).map_err(|_| "number out of range".to_string())
    }

    fn client(&mut self) -> DecodeResult<u64> {
        let client = self.var_uint()?;
        if client > MAX_CLIENT_ID {
            return Err(format!(
                "client id {client} is above 2^53 (Yjs client ids are 53-bit)"
            ));
        }
        Ok(client)
    }

    fn var_int(&mut self) -> DecodeResult<()> {
        let mut b = self.byte()?;
        let mut n = 0;
        while b & 0x80 != 0 {
            b = self.byte()?;
            n += 1;
            if n > 10 {
                return Err("varInt too long".into());
            }
        }
        Ok(())
    }

    fn bytes(&mut self, n: usize) -> DecodeResult<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or("length overflow")?;
        let slice = self.data.get(self.pos..end).ok_or("unexpected end")?;
        self.pos = end;
        Ok(slice)
    }

    fn var_bytes(&mut self) -> DecodeResult<&'a [u8]> {
        let n = usize::try_from(self.var_uint()?).map_err(|_| "length overflow")?;
        self.bytes(n)
    }

    fn string(&mut self) -> DecodeResult<&'a str> {
        std::str::from_utf8(self.var_bytes()?).map_err(|_| "invalid UTF-8".to_string())
    }

    fn id(&mut self) -> DecodeResult<Id> {
        Ok((self.client()?, self.u32()?))
    }

    /// A count of entries that each take at least `min_bytes`: refused when the rest of the
    /// input cannot hold them, before anything loops over it.
    fn count(&mut self, min_bytes: u64, what: &str) -> DecodeResult<u64> {
        let n = self.var_uint()?;
        let left = (self.data.len() - self.pos) as u64;
        if n.saturating_mul(min_bytes) > left {
            return Err(format!(
                "impossible {what} count: {n} in the {left} bytes left"
            ));
        }
        Ok(n)
    }

    /// One `Any` value (lib0's encoding); `depth` counts the arrays and objects it is in, itself
    /// included if it is one.
    fn any(&mut self, depth: usize) -> DecodeResult<()> {
        let tag = self.byte()?;
        if matches!(tag, 117 | 118) && depth > MAX_JSON_DEPTH {
            return Err(format!(
                "a value nested deeper than {MAX_JSON_DEPTH} levels"
            ));
        }
        match tag {
            127 | 126 | 121 | 120 => Ok(()),
            125 => self.var_int(),
            124 => self.bytes(4).map(|_| ()),
            123 | 122 => self.bytes(8).map(|_| ()),
            119 => self.string().map(|_| ()),
            118 => {
                let n = self.count(2, "object entry")?;
                for _ in 0..n {
                    self.string()?;
                    self.any(depth + 1)?;
                }
                Ok(())
            }
            117 => {
                let n = self.count(1, "array element")?;
                for _ in 0..n {
                    self.any(depth + 1)?;
                }
                Ok(())
            }
            116 => self.var_bytes().map(|_| ()),
            other => Err(format!("unknown value type {other}")),
        }
    }
}

/// Why the wire form is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum WireError {
    /// Not a well-formed update (or one yrs would misread): the sender is broken or hostile.
    Malformed(String),
    /// Well formed, but it holds something a notebook never does (another root, a subdocument).
    Foreign(String),
}

/// Reads the structs and the delete set of a v1 update. `roots` are the root names this
/// document has; an explicit parent naming another root is refused.
pub fn read(update: &[u8], roots: &[&str]) -> Result<WireUpdate, WireError> {
    read_inner(update, roots).map_err(|e| match e {
        Inner::Malformed(m) => WireError::Malformed(m),
        Inner::Foreign(m) => WireError::Foreign(m),
    })
}

enum Inner {
    Malformed(String),
    Foreign(String),
}

impl From<String> for Inner {
    fn from(message: String) -> Self {
        Inner::Malformed(message)
    }
}

fn read_inner(update: &[u8], roots: &[&str]) -> Result<WireUpdate, Inner> {
    let mut r = Reader {
        data: update,
        pos: 0,
    };
    let mut out = WireUpdate::default();
    let clients = r.count(3, "client")?;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..clients {
        let count = r.count(1, "struct")?;
        let client = r.client()?;
        // Yjs writes each client's structs as one run. yrs appends a second run of the same
        // client after the first, clocks overlapping or not, and integrates it as is: its
        // block store underflows (a panic with overflow checks, a corrupt store without).
        if !seen.insert(client) {
            return Err(format!("client {client} appears twice").into());
        }
        let mut clock = r.u32()?;
        for _ in 0..count {
            let info = r.byte()?;
            let kind = info & 0x1f;
            if kind == 0 || kind == 10 {
                // GC (content already collected) or skip (a gap): a length, nothing else.
                let len = r.u32()?;
                out.structs.push(WireStruct {
                    client,
                    clock,
                    len,
                    skip: kind == 10,
                    item: false,
                    deps: [None; 3],
                    root: None,
                    keyed: false,
                    astral_text: false,
                    splittable: false,
                });
                clock = clock.checked_add(len).ok_or("clock overflow".to_string())?;
                continue;
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
            let mut parent = None;
            let mut root = None;
            let mut keyed = false;
            if info & 0xc0 == 0 {
                if r.var_uint()? == 1 {
                    let name = r.string()?;
                    if !roots.contains(&name) {
                        return Err(Inner::Foreign(format!("the {name:?} root")));
                    }
                    root = Some(name.to_string());
                } else {
                    parent = Some(r.id()?);
                }
                if info & 0x20 != 0 {
                    r.string()?;
                    keyed = true;
                }
            }
            let mut astral_text = false;
            let len: u32 = match kind {
                1 => r.u32()?,
                2 => {
                    let n = r.count(1, "string")?;
                    for _ in 0..n {
                        r.string()?;
                    }
                    n as u32
                }
                3 => {
                    r.var_bytes()?;
                    1
                }
                4 => {
                    let text = r.string()?;
                    let n = text.encode_utf16().count();
                    astral_text = n != text.chars().count();
                    u32::try_from(n).map_err(|_| "string too long".to_string())?
                }
                5 => {
                    r.string()?;
                    1
                }
                // A formatting attribute: no notebook or file holds one (JupyterLab never
                // formats), and as a map entry it is an entry without a value, which yrs's map
                // change event unwraps: reading that event panics.
                6 => return Err(Inner::Foreign("formatting attributes".into())),
                7 => {
                    match r.var_uint()? {
                        0..=2 => {}
                        3..=6 => return Err(Inner::Foreign("an XML type".into())),
                        other => return Err(format!("unsupported shared type {other}").into()),
                    }
                    out.nests = true;
                    1
                }
                8 => {
                    out.nests = true;
                    let n = r.count(1, "value")?;
                    for _ in 0..n {
                        r.any(1)?;
                    }
                    n as u32
                }
                9 => return Err(Inner::Foreign("an embedded document".into())),
                other => return Err(format!("unsupported content type {other}").into()),
            };
            if len == 0 {
                return Err("an empty struct".to_string().into());
            }
            out.structs.push(WireStruct {
                client,
                clock,
                len,
                skip: false,
                item: true,
                deps: [origin, right_origin, parent],
                root,
                keyed,
                astral_text,
                splittable: matches!(kind, 2 | 4 | 8) && len > 1,
            });
            clock = clock.checked_add(len).ok_or("clock overflow".to_string())?;
        }
    }
    let clients = r.count(2, "deleting client")?;
    for _ in 0..clients {
        let client = r.client()?;
        let ranges = r.count(2, "delete range")?;
        for _ in 0..ranges {
            let clock = r.u32()?;
            let len = r.u32()?;
            clock
                .checked_add(len)
                .ok_or("delete range overflows".to_string())?;
            out.deletes.push((client, clock, len));
        }
    }
    if r.pos != update.len() {
        return Err(format!("{} bytes after the end of the update", update.len() - r.pos).into());
    }
    Ok(out)
}

/// Checks a state vector (a sync step 1) the same way: counts that fit, 53-bit client ids.
pub fn check_state_vector(sv: &[u8]) -> Result<(), String> {
    let mut r = Reader { data: sv, pos: 0 };
    let n = r.count(2, "entry")?;
    for _ in 0..n {
        r.client()?;
        r.u32()?;
    }
    if r.pos != sv.len() {
        return Err(format!("{} bytes after the state vector", sv.len() - r.pos));
    }
    Ok(())
}
