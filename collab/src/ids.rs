//! Newtype identifiers that cross module boundaries.

use std::fmt;

/// A notebook's stable identity: a uuid that follows the file across renames and moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FileId(pub uuid::Uuid);

impl FileId {
    pub fn new_random() -> Self {
        FileId(uuid::Uuid::new_v4())
    }

    pub fn parse(text: &str) -> Option<Self> {
        uuid::Uuid::parse_str(text).ok().map(FileId)
    }
}

impl fmt::Display for FileId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// One websocket connection to one room; unique within a server process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnectionId(pub u64);

impl ConnectionId {
    /// A fresh id from a process-wide counter.
    pub fn next() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(1);
        ConnectionId(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl fmt::Display for ConnectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn-{}", self.0)
    }
}

/// The authenticated person behind a connection, as shown to others in awareness.
/// The server fills it; a client's own claim about who it is is never trusted.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub username: String,
    pub name: String,
    pub display_name: String,
    pub initials: String,
    pub color: String,
    pub avatar_url: Option<String>,
}

impl Identity {
    /// An identity derived from a user name alone: initials and a stable colour from the name.
    pub fn from_username(username: &str) -> Self {
        const PALETTE: [&str; 8] = [
            "var(--jp-collaborator-color1)",
            "var(--jp-collaborator-color2)",
            "var(--jp-collaborator-color3)",
            "var(--jp-collaborator-color4)",
            "var(--jp-collaborator-color5)",
            "var(--jp-collaborator-color6)",
            "var(--jp-collaborator-color7)",
            "#ff6f00",
        ];
        let initials: String = username
            .split(|c: char| !c.is_alphanumeric())
            .filter_map(|part| part.chars().next())
            .take(2)
            .flat_map(char::to_uppercase)
            .collect();
        let hash = username
            .bytes()
            .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(b as u32));
        Identity {
            username: username.to_string(),
            name: username.to_string(),
            display_name: username.to_string(),
            initials: if initials.is_empty() {
                "?".to_string()
            } else {
                initials
            },
            color: PALETTE[(hash as usize) % PALETTE.len()].to_string(),
            avatar_url: None,
        }
    }
}

/// A newtype over `String` for an id that travels as a plain JSON string (serde transparent).
/// `Name + new_random` also gives it a constructor of fresh uuids, for ids the server draws.
macro_rules! string_id {
    ($(#[$attr:meta])* $name:ident $(+ $random:ident)?) => {
        $(#[$attr])*
        #[derive(
            Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub String);

        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl From<&str> for $name {
            fn from(id: &str) -> Self {
                $name(id.to_string())
            }
        }

        impl From<String> for $name {
            fn from(id: String) -> Self {
                $name(id)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        $(
            impl $name {
                pub fn $random() -> Self {
                    $name(uuid::Uuid::new_v4().to_string())
                }
            }
        )?
    };
}

string_id! {
    /// A cell's `id` in the notebook (nbformat 4.5), stable across moves and edits.
    #[cfg_attr(test, derive(ts_rs::TS))]
    CellId
}

string_id! {
    /// One execution of one cell; the kernel uses it as the execute_request's `msg_id`.
    #[cfg_attr(test, derive(ts_rs::TS))]
    RunId + new_random
}

string_id! {
    /// A running kernel, as Jupyter Server's `/api/kernels/{id}` names it.
    KernelId + new_random
}

string_id! {
    /// A live-share link (not its token, which is a secret and never kept).
    LinkId + new_random
}

string_id! {
    /// The account name of a person (a local account's login name). Not an [`Identity`]'s
    /// `username`, which also names guests (`guest:…`) and the single-user owner.
    UserName
}
