//! The access policy: what someone may do with one notebook, decided from what is stored about
//! it. [`rights`] is a pure function of plain data (no store, no accounts, no root), so the
//! whole policy is tested as tables; `Principal` (in `principal.rs`) reads the data it needs.
//!
//! - The administrator (the token holder) may do everything.
//! - A live-share guest holds what their link gives now (nothing once it is revoked or expired,
//!   or on another notebook).
//! - A person holds everything on the notebooks of their own home and of the homes of the
//!   projects they are members of; elsewhere, what the grants to them and to their groups give.
//!   A person who may not even watch a notebook that way, but opened a live-share link to it,
//!   holds what the link gives too, and is in its room through that link.

use collab::{Capabilities, UserName};

use crate::storage::{Grant, Grantee};

/// Who asks, with what the policy needs to know of them.
#[derive(Clone, Debug)]
pub enum Asker<'a> {
    Administrator,
    /// A live-share guest; `link`: what their link gives now, if it is a link to this notebook
    /// (`NONE` once revoked or expired).
    Guest {
        link: Option<Capabilities>,
    },
    /// A person logged in with their account; `link`: as for a guest, for a link they opened.
    Person {
        username: &'a UserName,
        groups: &'a [String],
        link: Option<Capabilities>,
    },
}

/// Whose home a notebook is in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Home {
    /// The notebook no longer exists.
    Gone,
    /// Nobody's home: the served root.
    Server,
    /// An account's home: a person's, or a project's (`members` then lists its members).
    Account {
        name: UserName,
        members: Vec<UserName>,
    },
}

/// What is stored about a notebook that the policy decides on.
#[derive(Clone, Debug)]
pub struct Notebook {
    pub home: Home,
    pub grants: Vec<Grant>,
}

impl Notebook {
    /// A notebook as the policy sees it for the administrator and guests, whose rights do
    /// not depend on where it is or on its grants.
    pub const UNREAD: Notebook = Notebook {
        home: Home::Gone,
        grants: Vec::new(),
    };
}

/// What someone may do with a notebook, and whether they hold it through a live-share link
/// (their place in its room then ends when the link does).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rights {
    pub caps: Capabilities,
    pub through_link: bool,
}

/// The policy.
pub fn rights(asker: &Asker<'_>, notebook: &Notebook) -> Rights {
    match asker {
        Asker::Administrator => Rights {
            caps: Capabilities::ALL,
            through_link: false,
        },
        Asker::Guest { link } => Rights {
            caps: link_caps(*link),
            through_link: true,
        },
        Asker::Person {
            username,
            groups,
            link,
        } => {
            let own = person_caps(username, groups, notebook);
            if own.contains(Capabilities::WATCH) {
                return Rights {
                    caps: own,
                    through_link: false,
                };
            }
            Rights {
                caps: own.union(link_caps(*link)),
                through_link: link.is_some(),
            }
        }
    }
}

/// What a person holds of their own (without any link).
fn person_caps(username: &UserName, groups: &[String], notebook: &Notebook) -> Capabilities {
    match &notebook.home {
        Home::Gone => return Capabilities::NONE,
        Home::Account { name, members } if name == username || members.contains(username) => {
            return Capabilities::ALL;
        }
        Home::Account { .. } | Home::Server => {}
    }
    notebook
        .grants
        .iter()
        .filter(|grant| grant_applies(grant, username, groups))
        .fold(Capabilities::NONE, |caps, grant| caps.union(grant.caps))
        .effective()
}

fn link_caps(link: Option<Capabilities>) -> Capabilities {
    link.map(Capabilities::effective)
        .unwrap_or(Capabilities::NONE)
}

/// Whether a grant names this person, directly or through one of their groups.
pub fn grant_applies(grant: &Grant, username: &UserName, groups: &[String]) -> bool {
    match grant.grantee {
        Grantee::User => grant.name == username.as_str(),
        Grantee::Group => groups.contains(&grant.name),
    }
}

#[cfg(test)]
mod tests {
    //! The policy as tables: each row is who asks, where the notebook is, what is granted on
    //! it, and what they may then do. The end-to-end tests (`tests/tests/multi_user.rs`,
    //! `sharing.rs`) check the same with real accounts, as root.

    use super::*;
    use collab::FileId;

    fn caps(names: &[&str]) -> Capabilities {
        Capabilities::parse(names).unwrap()
    }

    fn role(name: &str) -> Capabilities {
        Capabilities::role(name).unwrap()
    }

    fn grant(grantee: Grantee, name: &str, caps: Capabilities) -> Grant {
        Grant {
            file: FileId(uuid::Uuid::nil()),
            grantee,
            name: name.to_string(),
            caps,
            granted_by: "ada".to_string(),
            created_at: 0,
        }
    }

    fn home_of(name: &str, members: &[&str]) -> Home {
        Home::Account {
            name: name.into(),
            members: members.iter().map(|&m| m.into()).collect(),
        }
    }

    /// bob, in the group `staff`, asks about notebooks in various places.
    fn bob(link: Option<Capabilities>, home: Home, grants: Vec<Grant>) -> Rights {
        let groups = vec!["staff".to_string()];
        let bob = UserName::from("bob");
        let asker = Asker::Person {
            username: &bob,
            groups: &groups,
            link,
        };
        rights(&asker, &Notebook { home, grants })
    }

    #[test]
    fn the_administrator_may_do_everything_and_guests_what_their_link_gives() {
        let everything = Rights {
            caps: Capabilities::ALL,
            through_link: false,
        };
        assert_eq!(rights(&Asker::Administrator, &Notebook::UNREAD), everything);
        let table = [
            // (the guest's link on this notebook, what they may do)
            (Some(role("viewer")), role("viewer")),
            (Some(role("runner")), role("runner")),
            // A link's capabilities count with what they imply.
            (Some(caps(&["edit"])), caps(&["view", "watch", "edit"])),
            // Revoked or expired: nothing.
            (Some(Capabilities::NONE), Capabilities::NONE),
            // A link to another notebook.
            (None, Capabilities::NONE),
        ];
        for (link, expected) in table {
            let got = rights(&Asker::Guest { link }, &Notebook::UNREAD);
            assert_eq!(got.caps, expected, "guest with link {link:?}");
            assert!(got.through_link);
        }
    }

    #[test]
    fn a_person_holds_their_homes_and_their_grants() {
        let elsewhere = || home_of("ada", &[]);
        let table: Vec<(&str, Home, Vec<Grant>, Capabilities)> = vec![
            ("own home", home_of("bob", &[]), vec![], Capabilities::ALL),
            (
                "a project's home bob is a member of",
                home_of("lab", &["ada", "bob"]),
                vec![],
                Capabilities::ALL,
            ),
            (
                "a project's home bob is not a member of",
                home_of("lab", &["ada"]),
                vec![],
                Capabilities::NONE,
            ),
            (
                "someone else's, no grant",
                elsewhere(),
                vec![],
                Capabilities::NONE,
            ),
            (
                "granted by name",
                elsewhere(),
                vec![grant(Grantee::User, "bob", role("editor"))],
                role("editor"),
            ),
            (
                "granted to his group",
                elsewhere(),
                vec![grant(Grantee::Group, "staff", role("viewer"))],
                role("viewer"),
            ),
            (
                "granted by name and to his group: both",
                elsewhere(),
                vec![
                    grant(Grantee::User, "bob", caps(&["view"])),
                    grant(Grantee::Group, "staff", caps(&["execute"])),
                ],
                caps(&["view", "watch", "execute"]),
            ),
            (
                "granted to others only",
                elsewhere(),
                vec![
                    grant(Grantee::User, "carol", Capabilities::ALL),
                    grant(Grantee::Group, "admins", Capabilities::ALL),
                    // A user grant does not match a group of that name, nor the reverse.
                    grant(Grantee::User, "staff", Capabilities::ALL),
                    grant(Grantee::Group, "bob", Capabilities::ALL),
                ],
                Capabilities::NONE,
            ),
            (
                "in the served root, granted",
                Home::Server,
                vec![grant(Grantee::User, "bob", role("runner"))],
                role("runner"),
            ),
            (
                "gone, though a grant is left",
                Home::Gone,
                vec![grant(Grantee::User, "bob", Capabilities::ALL)],
                Capabilities::NONE,
            ),
        ];
        for (case, home, grants, expected) in table {
            let got = bob(None, home, grants);
            assert_eq!(got.caps, expected, "{case}");
            assert!(!got.through_link, "{case}");
        }
    }

    #[test]
    fn a_link_adds_only_to_someone_who_may_not_watch() {
        let elsewhere = || home_of("ada", &[]);
        struct LinkCase {
            case: &'static str,
            link: Option<Capabilities>,
            grants: Vec<Grant>,
            expected: Capabilities,
            through_link: bool,
        }
        let table = [
            LinkCase {
                case: "no grant: the link's rights, through the link",
                link: Some(role("editor")),
                grants: vec![],
                expected: role("editor"),
                through_link: true,
            },
            LinkCase {
                case: "a view-only grant: the link adds, through the link",
                link: Some(role("viewer")),
                grants: vec![grant(Grantee::User, "bob", caps(&["view"]))],
                expected: role("viewer"),
                through_link: true,
            },
            LinkCase {
                case: "a grant to watch: the link adds nothing",
                link: Some(role("runner")),
                grants: vec![grant(Grantee::User, "bob", role("viewer"))],
                expected: role("viewer"),
                through_link: false,
            },
            LinkCase {
                case: "a revoked link: nothing, still counted as through it",
                link: Some(Capabilities::NONE),
                grants: vec![],
                expected: Capabilities::NONE,
                through_link: true,
            },
            LinkCase {
                case: "a link to another notebook",
                link: None,
                grants: vec![],
                expected: Capabilities::NONE,
                through_link: false,
            },
        ];
        for LinkCase {
            case,
            link,
            grants,
            expected,
            through_link,
        } in table
        {
            let got = bob(link, elsewhere(), grants);
            assert_eq!(
                got,
                Rights {
                    caps: expected,
                    through_link
                },
                "{case}"
            );
        }
        // In their own home a person needs no link.
        let own = bob(Some(role("viewer")), home_of("bob", &[]), vec![]);
        assert_eq!(own.caps, Capabilities::ALL);
        assert!(!own.through_link);
    }
}
