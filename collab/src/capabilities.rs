//! What a person (or a live-share link) may do with one notebook.
//!
//! | capability | lets you |
//! |---|---|
//! | `view` | read the saved notebook |
//! | `watch` | join the live room read-only: receive edits, presence, outputs |
//! | `edit` | change cells and chat |
//! | `save` | write the notebook to disk |
//! | `execute` | run cells, interrupt, restart the kernel, answer the prompts of one's own runs |
//! | `manage` | invite, change capabilities, create and revoke live-share links |
//!
//! Roles are presets: viewer = view + watch; editor = viewer + edit + save; runner = editor +
//! execute; owner = everything.

use std::fmt;

use crate::{LinkId, UserName};

/// One thing a connection may do. Every check that depends on capabilities matches on this
/// enum exhaustively, so a new capability does not compile until each has decided about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Capability {
    View,
    Watch,
    Edit,
    Save,
    Execute,
    Manage,
}

impl Capability {
    /// Every capability, in the order names are listed.
    pub const ALL: [Capability; 6] = [
        Capability::View,
        Capability::Watch,
        Capability::Edit,
        Capability::Save,
        Capability::Execute,
        Capability::Manage,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Capability::View => "view",
            Capability::Watch => "watch",
            Capability::Edit => "edit",
            Capability::Save => "save",
            Capability::Execute => "execute",
            Capability::Manage => "manage",
        }
    }

    /// Its bit in [`Capabilities`] (and in the stored grants: never renumber).
    const fn bit(self) -> u8 {
        match self {
            Capability::View => 1,
            Capability::Watch => 2,
            Capability::Edit => 4,
            Capability::Save => 8,
            Capability::Execute => 16,
            Capability::Manage => 32,
        }
    }

    pub fn parse(name: &str) -> Option<Capability> {
        Capability::ALL.into_iter().find(|c| c.name() == name)
    }

    /// Whether it acts in the live room, and so implies `watch` (see [`Capabilities::effective`]).
    const fn is_live(self) -> bool {
        match self {
            Capability::View | Capability::Watch => false,
            Capability::Edit | Capability::Save | Capability::Execute | Capability::Manage => true,
        }
    }
}

/// A preset of capabilities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Viewer,
    Editor,
    Runner,
    Owner,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Editor, Role::Runner, Role::Owner];

    pub const fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Editor => "editor",
            Role::Runner => "runner",
            Role::Owner => "owner",
        }
    }

    pub fn parse(name: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == name)
    }

    /// Whether the role includes `capability`: viewer = view + watch; editor = viewer + edit +
    /// save; runner = editor + execute; owner = everything.
    pub const fn grants(self, capability: Capability) -> bool {
        match capability {
            Capability::View | Capability::Watch => true,
            Capability::Edit | Capability::Save => match self {
                Role::Viewer => false,
                Role::Editor | Role::Runner | Role::Owner => true,
            },
            Capability::Execute => match self {
                Role::Viewer | Role::Editor => false,
                Role::Runner | Role::Owner => true,
            },
            Capability::Manage => match self {
                Role::Viewer | Role::Editor | Role::Runner => false,
                Role::Owner => true,
            },
        }
    }

    pub fn capabilities(self) -> Capabilities {
        Capability::ALL
            .into_iter()
            .filter(|c| self.grants(*c))
            .fold(Capabilities::NONE, |caps, c| {
                caps.union(Capabilities::of(c))
            })
    }
}

/// A capability name that is not one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability {0:?} (known: view, watch, edit, save, execute, manage)")]
pub struct UnknownCapability(pub String);

/// The message, for callers that report errors as text.
impl From<UnknownCapability> for String {
    fn from(error: UnknownCapability) -> String {
        error.to_string()
    }
}

/// A set of [`Capability`].
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(u8);

impl Capabilities {
    pub const NONE: Capabilities = Capabilities(0);
    pub const VIEW: Capabilities = Capabilities::of(Capability::View);
    pub const WATCH: Capabilities = Capabilities::of(Capability::Watch);
    pub const EDIT: Capabilities = Capabilities::of(Capability::Edit);
    pub const SAVE: Capabilities = Capabilities::of(Capability::Save);
    pub const EXECUTE: Capabilities = Capabilities::of(Capability::Execute);
    pub const MANAGE: Capabilities = Capabilities::of(Capability::Manage);
    pub const ALL: Capabilities = Capabilities::all();

    /// The set holding just `capability`.
    pub const fn of(capability: Capability) -> Capabilities {
        Capabilities(capability.bit())
    }

    const fn all() -> Capabilities {
        let mut bits = 0;
        let mut i = 0;
        while i < Capability::ALL.len() {
            bits |= Capability::ALL[i].bit();
            i += 1;
        }
        Capabilities(bits)
    }

    pub const fn union(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 | other.0)
    }

    pub const fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn has(self, capability: Capability) -> bool {
        self.contains(Capabilities::of(capability))
    }

    /// This set without `other`'s capabilities.
    pub const fn without(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 & !other.0)
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// A role preset by name.
    pub fn role(name: &str) -> Option<Capabilities> {
        Role::parse(name).map(Role::capabilities)
    }

    /// Capabilities from their names; an unknown name is an error that names it.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Capabilities, UnknownCapability> {
        names.iter().try_fold(Capabilities::NONE, |acc, name| {
            let name = name.as_ref();
            Capability::parse(name)
                .map(|c| acc.union(Capabilities::of(c)))
                .ok_or_else(|| UnknownCapability(name.to_string()))
        })
    }

    /// What the holder can really do: editing, saving or running a notebook one cannot see in
    /// the live room is meaningless, so those imply `watch`, and `watch` implies `view`.
    pub fn effective(self) -> Capabilities {
        let mut caps = self;
        if self.iter().any(Capability::is_live) {
            caps = caps.union(Capabilities::WATCH);
        }
        if caps.contains(Capabilities::WATCH) {
            caps = caps.union(Capabilities::VIEW);
        }
        caps
    }

    /// The capabilities in the set, in [`Capability::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Capability> {
        Capability::ALL.into_iter().filter(move |c| self.has(*c))
    }

    pub fn names(self) -> Vec<&'static str> {
        self.iter().map(Capability::name).collect()
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    pub fn from_bits(bits: u8) -> Capabilities {
        Capabilities(bits & Capabilities::ALL.0)
    }
}

impl fmt::Debug for Capabilities {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.names().join("+"))
    }
}

/// Where a connection's rights come from, so a change to that grant reaches exactly the
/// connections it covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GrantSource {
    /// The server's owner (the token holder in single-user mode).
    Owner,
    /// A person's grant on this notebook.
    Person(UserName),
    /// A live-share link, by its id.
    Link(LinkId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_names_and_implications() {
        let runner = Capabilities::role("runner").unwrap();
        assert_eq!(
            runner.names(),
            vec!["view", "watch", "edit", "save", "execute"]
        );
        assert_eq!(
            Capabilities::parse(&["edit"]).unwrap().effective().names(),
            vec!["view", "watch", "edit"]
        );
        assert!(Capabilities::parse(&["fly"])
            .unwrap_err()
            .to_string()
            .contains("\"fly\""));
        assert_eq!(Capabilities::from_bits(runner.bits()), runner);
        assert!(Capabilities::ALL.contains(runner) && !runner.contains(Capabilities::MANAGE));
    }

    #[test]
    fn every_capability_is_listed_once_with_its_own_bit_and_name() {
        let mut bits = 0u8;
        for capability in Capability::ALL {
            assert_eq!(bits & capability.bit(), 0, "{capability:?} shares a bit");
            bits |= capability.bit();
            assert_eq!(Capability::parse(capability.name()), Some(capability));
        }
        assert_eq!(Capabilities::ALL.bits(), 63);
        assert_eq!(Capabilities::ALL.iter().count(), Capability::ALL.len());
        for role in Role::ALL {
            assert_eq!(Role::parse(role.name()), Some(role));
        }
        assert_eq!(Capabilities::role("owner"), Some(Capabilities::ALL));
        assert_eq!(
            Capabilities::role("viewer").unwrap().names(),
            vec!["view", "watch"]
        );
        assert_eq!(
            Capabilities::role("editor").unwrap().names(),
            vec!["view", "watch", "edit", "save"]
        );
        assert_eq!(Capabilities::role("admin"), None);
    }
}
