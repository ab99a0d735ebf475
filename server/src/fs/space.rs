//! Whose files a request works on: a person's home directory or a project's (multi-user mode),
//! or the served root (single-user mode, and the administrator's in multi-user mode).
//!
//! A [`Space`] maps the API paths its people use (relative to the space, as Jupyter's are to its
//! root) to *store paths* (relative to the store root: the served root in single-user mode, `/`
//! in multi-user mode), which is how the file index keys files. In multi-user mode file reads
//! and writes run with the space owner's rights: the thread doing them takes the account's
//! file-system uid, gid and supplementary groups for the duration of the call (Linux keeps
//! these per thread), so the kernel's permission checks are the owner's, not root's.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kernel_bridge::Account;

use super::paths::Root;
use super::Error;

/// The least uid of a person's account (below it: root and system accounts).
pub const FIRST_PERSON_UID: u32 = 1000;

#[derive(Clone, Debug)]
pub struct Space {
    root: Root,
    /// `root` relative to the store root, without slashes at either end ("" for the same).
    prefix: String,
    /// Whose rights file access and kernels use (`None`: the server's own).
    account: Option<Arc<Account>>,
}

impl Space {
    pub fn new(
        store_root: &Root,
        dir: &Path,
        account: Option<Arc<Account>>,
    ) -> std::io::Result<Space> {
        let root = Root::new(dir)?;
        let prefix = root
            .path()
            .strip_prefix(store_root.path())
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!(
                        "{} is outside {}",
                        dir.display(),
                        store_root.path().display()
                    ),
                )
            })?
            .to_string_lossy()
            .into_owned();
        Ok(Space {
            root,
            prefix,
            account,
        })
    }

    /// A person's or project's home, as their space.
    pub fn home_of(store_root: &Root, account: Account) -> std::io::Result<Space> {
        let home = account.home.clone();
        Space::new(store_root, &home, Some(Arc::new(account)))
    }

    pub fn root(&self) -> &Path {
        self.root.path()
    }

    pub fn account(&self) -> Option<&Account> {
        self.account.as_deref()
    }

    /// Whose space this is, for messages and the audit log.
    pub fn owner_name(&self) -> Option<&str> {
        self.account().map(|a| a.name.as_str())
    }

    /// The file system path of an API path inside this space (see [`Root::resolve`]), checked
    /// with the owner's rights.
    pub fn resolve(&self, api_path: &str) -> Result<PathBuf, Error> {
        self.io(|| self.root.resolve(api_path))
    }

    /// The store path of a (normalized) API path.
    pub fn store_path(&self, api_path: &str) -> String {
        match (self.prefix.is_empty(), api_path.is_empty()) {
            (true, _) => api_path.to_string(),
            (false, true) => self.prefix.clone(),
            (false, false) => format!("{}/{api_path}", self.prefix),
        }
    }

    /// The API path of a store path inside this space.
    pub fn api_path(&self, store_path: &str) -> Option<String> {
        if self.prefix.is_empty() {
            return Some(store_path.to_string());
        }
        if store_path == self.prefix {
            return Some(String::new());
        }
        store_path
            .strip_prefix(&self.prefix)
            .and_then(|rest| rest.strip_prefix('/'))
            .map(str::to_string)
    }

    pub fn same_as(&self, other: &Space) -> bool {
        self.root.path() == other.root.path()
    }

    /// Runs `f` with the owner's file access rights on this thread. `f` must not await or touch
    /// the server's own files (the store): it runs as someone else.
    pub fn io<T>(&self, f: impl FnOnce() -> T) -> T {
        match self.account() {
            Some(account) if nix::unistd::geteuid().is_root() => {
                let _as_them = FsIdentity::assume(account);
                f()
            }
            _ => f(),
        }
    }
}

/// Every space of this server: the store root, the administrator's space (the served root),
/// and, in multi-user mode, the homes of the people and projects.
#[derive(Clone, Debug)]
pub struct Spaces {
    /// What store paths are relative to: the served root (single-user) or `/` (multi-user).
    root: Root,
    /// The served root as a space: the token holder's files.
    admin: Space,
    multi_user: bool,
}

impl Spaces {
    pub fn new(served: &Path, multi_user: bool) -> std::io::Result<Spaces> {
        let served = Root::new(served)?;
        let root = if multi_user {
            Root::new(Path::new("/"))?
        } else {
            served.clone()
        };
        let admin = Space::new(&root, served.path(), None)?;
        Ok(Spaces {
            root,
            admin,
            multi_user,
        })
    }

    /// What store paths are relative to.
    pub fn store_root(&self) -> &Path {
        self.root.path()
    }

    /// The administrator's space: the served root.
    pub fn admin(&self) -> &Space {
        &self.admin
    }

    /// The space a file belongs to: its owner's home in multi-user mode, else the served root.
    /// (A person's home wins over the served root, which may hold homes.)
    pub fn space_of(&self, store_path: &str) -> Result<Space, Error> {
        if !self.multi_user {
            return Ok(self.admin.clone());
        }
        match home_account_of(self.root.path(), store_path) {
            Some(account) => Space::home_of(&self.root, account).map_err(Error::OwnerHome),
            None if self.admin.api_path(store_path).is_some() => Ok(self.admin.clone()),
            None => Err(Error::NoOnesHome),
        }
    }

    /// An account's home, as its space.
    pub fn home_of(&self, account: Account) -> std::io::Result<Space> {
        Space::home_of(&self.root, account)
    }
}

/// The calling thread's file-system identity, switched to an account's until dropped.
struct FsIdentity {
    uid: libc::uid_t,
    gid: libc::gid_t,
    groups: Vec<libc::gid_t>,
}

impl FsIdentity {
    /// Takes on an account's file-system identity. Fails closed: if the system refuses any part
    /// of the switch (no CAP_SETUID/CAP_SETGID), it is undone and the caller panics rather than
    /// touch the files as root.
    fn assume(account: &Account) -> FsIdentity {
        // SAFETY: plain system calls on this thread's credentials. `setgroups` is called
        // through `syscall` because the libc wrapper changes every thread of the process.
        let (identity, switched) = unsafe {
            let n = libc::getgroups(0, std::ptr::null_mut());
            let mut groups = vec![0; n.max(0) as usize];
            let n = libc::getgroups(n, groups.as_mut_ptr());
            groups.truncate(n.max(0) as usize);
            let theirs: Vec<libc::gid_t> = account.groups.clone();
            let groups_set = libc::syscall(SETGROUPS, theirs.len(), theirs.as_ptr()) == 0;
            let gid = libc::setfsgid(account.gid) as libc::gid_t;
            let uid = libc::setfsuid(account.uid) as libc::uid_t;
            // setfsuid/setfsgid answer the previous value even when they refuse: read the
            // current one back (an invalid id changes nothing and returns it).
            let now_uid = libc::setfsuid(u32::MAX) as libc::uid_t;
            let now_gid = libc::setfsgid(u32::MAX) as libc::gid_t;
            let switched = groups_set && now_uid == account.uid && now_gid == account.gid;
            (FsIdentity { uid, gid, groups }, switched)
        };
        if !switched {
            drop(identity);
            panic!(
                "cannot take on the file rights of {} (uid {}): refusing to touch its files as root",
                account.name, account.uid
            );
        }
        identity
    }
}

/// The raw `setgroups` system call with 32-bit group ids.
#[cfg(any(target_arch = "x86", target_arch = "arm"))]
const SETGROUPS: libc::c_long = libc::SYS_setgroups32;
#[cfg(not(any(target_arch = "x86", target_arch = "arm")))]
const SETGROUPS: libc::c_long = libc::SYS_setgroups;

impl Drop for FsIdentity {
    fn drop(&mut self) {
        // SAFETY: as above; the uid goes back first, which also restores the capabilities
        // needed to set the groups back.
        unsafe {
            libc::setfsuid(self.uid);
            libc::setfsgid(self.gid);
            libc::syscall(libc::SYS_setgroups, self.groups.len(), self.groups.as_ptr());
        }
    }
}

/// The account whose home directory holds a store path (multi-user mode): the deepest of its
/// ancestors that is the home of the account owning it, a person's (uid ≥ 1000).
pub fn home_account_of(store_root: &Path, store_path: &str) -> Option<Account> {
    use std::os::unix::fs::MetadataExt;
    let full = store_root.join(store_path);
    let mut found = None;
    for dir in full.ancestors().skip(1) {
        if dir == store_root {
            break;
        }
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        if meta.uid() < FIRST_PERSON_UID {
            continue;
        }
        let Ok(Some(user)) = nix::unistd::User::from_uid(meta.uid().into()) else {
            continue;
        };
        if user.dir.canonicalize().ok().as_deref() == Some(dir) {
            found = Account::lookup(&user.name).ok();
            break;
        }
    }
    found
}

/// [`home_account_of`] as the store's file index asks it: the account's uid and home.
pub fn home_dir_of(store_root: &Path, store_path: &str) -> Option<(u32, PathBuf)> {
    home_account_of(store_root, store_path).map(|account| (account.uid, account.home))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_api_paths_to_store_paths_and_back() {
        let outer = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(outer.path().join("home/ada")).unwrap();
        let store_root = Root::new(outer.path()).unwrap();
        let space = Space::new(&store_root, &outer.path().join("home/ada"), None).unwrap();
        assert_eq!(space.store_path("a/b.ipynb"), "home/ada/a/b.ipynb");
        assert_eq!(space.store_path(""), "home/ada");
        assert_eq!(
            space.api_path("home/ada/a/b.ipynb").as_deref(),
            Some("a/b.ipynb")
        );
        assert_eq!(space.api_path("home/ada").as_deref(), Some(""));
        assert_eq!(space.api_path("home/adam/x.ipynb"), None);
        assert_eq!(space.api_path("home/bob/x.ipynb"), None);
        let whole = Space::new(&store_root, outer.path(), None).unwrap();
        assert_eq!(whole.store_path("x.ipynb"), "x.ipynb");
        assert_eq!(
            whole.api_path("home/bob/x.ipynb").as_deref(),
            Some("home/bob/x.ipynb")
        );
    }
}
