//! Who is asking: the administrator, a person, or a live-share guest; and what they may do
//! with a notebook now, read afresh from the store for [`policy::rights`].

use axum::http::HeaderMap;
use collab::{Capabilities, FileId, GrantSource, Identity, LinkId, UserName};
use kernel_bridge::Account;

use super::accounts::group_names;
use super::login::User;
use super::policy::{self, Asker, Home, Notebook, Rights};
use super::Access;
use crate::http::cookies::cookie;
use crate::storage::GuestSession;

/// The cookie of a live-share guest session.
pub const GUEST_COOKIE: &str = "quire-guest";

/// How long a guest's cookie is kept by the browser (the session itself ends with its link).
pub const GUEST_COOKIE_LIFETIME_SECS: i64 = 30 * 24 * 3600;

/// Someone admitted through a live-share link.
#[derive(Clone, Debug)]
pub struct Guest {
    pub link_id: LinkId,
    pub file: FileId,
    pub caps: Capabilities,
    pub identity: Identity,
}

impl Guest {
    pub fn from_session(session: GuestSession) -> Guest {
        Guest {
            identity: guest_identity(&session.name, &session.cookie_hash),
            link_id: session.link_id,
            file: session.file,
            caps: session.caps,
        }
    }
}

/// Who is making a request.
#[derive(Clone, Debug)]
pub enum Principal {
    /// The token holder: every notebook, every capability.
    Owner,
    Guest(Guest),
    /// A person logged in with their account (multi-user mode).
    User(User),
}

impl Principal {
    /// What this principal may do with a notebook now, and whether through a link: a guest's
    /// link and a person's grants are read afresh, so a connection opened before a grant
    /// changed acts on it as it is now.
    pub fn rights(&self, access: &Access, file: FileId) -> Rights {
        match self {
            Principal::Owner => policy::rights(&Asker::Administrator, &Notebook::UNREAD),
            Principal::Guest(guest) => {
                let link = link_on(access, guest, file);
                policy::rights(&Asker::Guest { link }, &Notebook::UNREAD)
            }
            Principal::User(user) => {
                let link = user
                    .link
                    .as_ref()
                    .and_then(|link| link_on(access, link, file));
                person_rights(access, &user.username, link, file)
            }
        }
    }

    /// What this principal may do with a notebook now.
    pub fn current_caps_for(&self, access: &Access, file: FileId) -> Capabilities {
        self.rights(access, file).caps
    }

    /// Who this is, as the audit log names them.
    pub fn username(&self, access: &Access) -> String {
        self.identity(access).username
    }

    /// Who this is, as others see them.
    pub fn identity(&self, access: &Access) -> Identity {
        match self {
            Principal::Owner => access.identity.clone(),
            Principal::Guest(g) => g.identity.clone(),
            Principal::User(u) => u.identity.clone(),
        }
    }

    /// This principal as a member of a notebook's room, holding `caps`. A person who may watch
    /// only through a link they opened is there by that link (revoking it removes them).
    pub fn member(&self, access: &Access, file: FileId, caps: Capabilities) -> collab::Member {
        let source = match self {
            Principal::Owner => return collab::Member::owner(access.identity.clone()),
            Principal::Guest(g) => GrantSource::Link(g.link_id.clone()),
            Principal::User(u) => match &u.link {
                Some(link) if self.rights(access, file).through_link => {
                    GrantSource::Link(link.link_id.clone())
                }
                _ => GrantSource::Person(u.username.clone()),
            },
        };
        collab::Member {
            identity: self.identity(access),
            caps,
            source,
        }
    }
}

/// What a person may do with a notebook now by their own rights (their homes, their grants).
pub fn person_caps(access: &Access, username: &UserName, file: FileId) -> Capabilities {
    person_rights(access, username, None, file).caps
}

fn person_rights(
    access: &Access,
    username: &UserName,
    link: Option<Capabilities>,
    file: FileId,
) -> Rights {
    let groups = Account::lookup(username.as_str())
        .map(|a| group_names(&a))
        .unwrap_or_default();
    let asker = Asker::Person {
        username,
        groups: &groups,
        link,
    };
    policy::rights(&asker, &notebook(access, file))
}

/// What a link (opened by a guest or a person) gives now, if it is a link to `file`.
fn link_on(access: &Access, link: &Guest, file: FileId) -> Option<Capabilities> {
    (link.file == file).then(|| {
        access
            .store
            .link_caps(&link.link_id)
            .ok()
            .flatten()
            .unwrap_or(Capabilities::NONE)
    })
}

/// What the policy needs to know of a notebook for a person: whose home it is in, and its
/// grants.
fn notebook(access: &Access, file: FileId) -> Notebook {
    let Ok(Some(path)) = access.store.path_for_id(access.spaces.store_root(), file) else {
        return Notebook::UNREAD;
    };
    let owner = access
        .spaces
        .space_of(&path)
        .ok()
        .and_then(|space| space.owner_name().map(UserName::from));
    let home = match owner {
        Some(name) => Home::Account {
            members: access.store.members(name.as_str()).unwrap_or_default(),
            name,
        },
        None => Home::Server,
    };
    Notebook {
        home,
        grants: access.store.grants_on(file).unwrap_or_default(),
    }
}

/// The guest cookie's value in a request, if any.
pub fn guest_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, GUEST_COOKIE)
}

/// How long a guest's own name may be (the mark comes after it).
const GUEST_NAME_CHARS: usize = 40;

/// The name a guest typed, cleaned: no control characters and no invisible formatting ones
/// (bidi overrides, zero-width spaces: they could hide or reorder the guest mark), each run of
/// whitespace one space, no "(guest)" of their own at the end, at most 40 characters.
pub fn guest_base_name(given: &str) -> String {
    let invisible = |c: char| {
        c.is_control()
            || matches!(c, '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}'
                | '\u{17B4}' | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF9}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E007F}')
    };
    let cleaned: String = given.chars().filter(|c| !invisible(*c)).collect();
    let mut name = cleaned.split_whitespace().collect::<Vec<_>>().join(" ");
    loop {
        let lower = name.to_lowercase();
        let Some(cut) = lower.strip_suffix("(guest)") else {
            break;
        };
        // (Lowercasing can change lengths: cut by characters.)
        let keep = cut.chars().count();
        name = name
            .chars()
            .take(keep)
            .collect::<String>()
            .trim_end()
            .to_string();
    }
    name.chars()
        .take(GUEST_NAME_CHARS)
        .collect::<String>()
        .trim_end()
        .to_string()
}

/// What others see of a guest: the name they gave, always marked as a guest.
pub fn guest_shown_name(base: &str) -> String {
    format!("{base} (guest)")
}

/// A guest's identity: the name they gave, marked as a guest (so it never reads as anyone
/// with an account here, the owner included), and a user name no account can have.
pub fn guest_identity(name: &str, cookie_hash: &str) -> Identity {
    let base = guest_base_name(name);
    let mut identity = Identity::from_username(&base);
    let shown = guest_shown_name(&base);
    identity.name = shown.clone();
    identity.display_name = shown;
    identity.username = format!("guest:{}", &cookie_hash[..12]);
    identity
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_names_are_cleaned_and_marked() {
        assert_eq!(guest_base_name("  Ada  Lovelace "), "Ada Lovelace");
        assert_eq!(guest_base_name("Ada (guest)"), "Ada");
        assert_eq!(guest_base_name("Ada (GUEST) (guest)"), "Ada");
        // Invisible characters cannot hide or reorder the mark.
        assert_eq!(guest_base_name("Ada\u{202E}"), "Ada");
        assert_eq!(guest_base_name("A\u{200B}da\u{FEFF}"), "Ada");
        assert_eq!(guest_base_name("Ada\n\t(guest)"), "Ada");
        assert_eq!(guest_base_name("(guest)"), "");
        assert_eq!(guest_base_name(&"x".repeat(100)).chars().count(), 40);
        let identity = guest_identity("Ada (guest)", &"0".repeat(64));
        assert_eq!(identity.display_name, "Ada (guest)");
        assert_eq!(identity.name, "Ada (guest)");
        assert_eq!(identity.initials, "A");
        assert!(identity.username.starts_with("guest:"));
    }
}
