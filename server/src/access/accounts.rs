//! Local accounts: people's (uid ≥ 1000) and their groups, and the names they go by.

use collab::Identity;
use kernel_bridge::Account;

use crate::fs::space::FIRST_PERSON_UID;
use crate::http::error::{ApiError, ApiResult};

/// The names of an account's groups (for group grants).
pub fn group_names(account: &Account) -> Vec<String> {
    account
        .groups
        .iter()
        .filter_map(|gid| nix::unistd::Group::from_gid((*gid).into()).ok().flatten())
        .map(|g| g.name)
        .collect()
}

/// A person's local account, if `name` is one (not root, not a system account).
pub fn person_account(name: &str) -> ApiResult<Account> {
    match Account::lookup(name) {
        Ok(account) if account.uid >= FIRST_PERSON_UID => Ok(account),
        _ => Err(ApiError::not_found(format!(
            "no person's account named {name:?}"
        ))),
    }
}

/// The identity of a local account: its user name, and its full name if it has one.
pub fn identity_of(account: &nix::unistd::User) -> Identity {
    let mut identity = Identity::from_username(&account.name);
    let gecos = account.gecos.to_string_lossy();
    if let Some(full) = gecos.split(',').next().filter(|n| !n.trim().is_empty()) {
        identity.display_name = full.trim().to_string();
    }
    identity
}

/// The identity of whoever holds the token (single-user mode: the account running Quire).
pub fn owner_identity() -> Identity {
    let username = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "quire".to_string());
    Identity::from_username(&username)
}

/// Whether a name (compared without case) is an account's on this machine, as its user name
/// or its full name, or the server owner's.
pub fn name_of_an_account(owner: &Identity, name: &str) -> bool {
    let wanted = name.to_lowercase();
    if [&owner.username, &owner.name, &owner.display_name]
        .iter()
        .any(|n| n.to_lowercase() == wanted)
    {
        return true;
    }
    // getpwent walks one process-wide cursor.
    static PASSWD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _walking = PASSWD.lock().unwrap_or_else(|e| e.into_inner());
    let mut found = false;
    // SAFETY: getpwent's entries are read before the next call, under the lock above.
    unsafe {
        libc::setpwent();
        loop {
            let entry = libc::getpwent();
            if entry.is_null() {
                break;
            }
            let text = |p: *const libc::c_char| {
                if p.is_null() {
                    String::new()
                } else {
                    std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned()
                }
            };
            let username = text((*entry).pw_name);
            let gecos = text((*entry).pw_gecos);
            let full = gecos
                .split(',')
                .next()
                .unwrap_or_default()
                .trim()
                .to_string();
            if username.to_lowercase() == wanted
                || (!full.is_empty() && full.to_lowercase() == wanted)
            {
                found = true;
                break;
            }
        }
        libc::endpwent();
    }
    found
}
