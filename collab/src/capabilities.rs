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

#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Capabilities(u8);

impl Capabilities {
    pub const NONE: Capabilities = Capabilities(0);
    pub const VIEW: Capabilities = Capabilities(1);
    pub const WATCH: Capabilities = Capabilities(2);
    pub const EDIT: Capabilities = Capabilities(4);
    pub const SAVE: Capabilities = Capabilities(8);
    pub const EXECUTE: Capabilities = Capabilities(16);
    pub const MANAGE: Capabilities = Capabilities(32);
    pub const ALL: Capabilities = Capabilities(63);

    const NAMES: [(&'static str, Capabilities); 6] = [
        ("view", Capabilities::VIEW),
        ("watch", Capabilities::WATCH),
        ("edit", Capabilities::EDIT),
        ("save", Capabilities::SAVE),
        ("execute", Capabilities::EXECUTE),
        ("manage", Capabilities::MANAGE),
    ];

    pub const fn union(self, other: Capabilities) -> Capabilities {
        Capabilities(self.0 | other.0)
    }

    pub const fn contains(self, other: Capabilities) -> bool {
        self.0 & other.0 == other.0
    }

    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// A role preset by name.
    pub fn role(name: &str) -> Option<Capabilities> {
        let viewer = Capabilities::VIEW.union(Capabilities::WATCH);
        let editor = viewer.union(Capabilities::EDIT).union(Capabilities::SAVE);
        let runner = editor.union(Capabilities::EXECUTE);
        match name {
            "viewer" => Some(viewer),
            "editor" => Some(editor),
            "runner" => Some(runner),
            "owner" => Some(Capabilities::ALL),
            _ => None,
        }
    }

    /// Capabilities from their names; an unknown name is an error that names it.
    pub fn parse<S: AsRef<str>>(names: &[S]) -> Result<Capabilities, String> {
        names.iter().try_fold(Capabilities::NONE, |acc, name| {
            let name = name.as_ref();
            Capabilities::NAMES
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, c)| acc.union(*c))
                .ok_or_else(|| {
                    format!(
                        "unknown capability {name:?} (known: view, watch, edit, save, execute, manage)"
                    )
                })
        })
    }

    /// What the holder can really do: editing, saving or running a notebook one cannot see in
    /// the live room is meaningless, so those imply `watch`, and `watch` implies `view`.
    pub fn effective(self) -> Capabilities {
        let mut caps = self;
        let live = Capabilities::EDIT
            .union(Capabilities::SAVE)
            .union(Capabilities::EXECUTE)
            .union(Capabilities::MANAGE);
        if caps.0 & live.0 != 0 {
            caps = caps.union(Capabilities::WATCH);
        }
        if caps.contains(Capabilities::WATCH) {
            caps = caps.union(Capabilities::VIEW);
        }
        caps
    }

    pub fn names(self) -> Vec<&'static str> {
        Capabilities::NAMES
            .iter()
            .filter(|(_, c)| self.contains(*c))
            .map(|(n, _)| *n)
            .collect()
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
    Person(String),
    /// A live-share link, by its id.
    Link(String),
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
            .contains("\"fly\""));
        assert_eq!(Capabilities::from_bits(runner.bits()), runner);
        assert!(Capabilities::ALL.contains(runner) && !runner.contains(Capabilities::MANAGE));
    }
}
