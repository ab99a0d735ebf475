//! Checking a local account's password with PAM, the way `login` does: authentication, then
//! account management (locked, expired and otherwise refused accounts fail even with the right
//! password).
//!
//! libpam is loaded at run time (`dlopen("libpam.so.0")`), so building Quire needs neither
//! libpam's headers nor libclang, and single-user mode never touches it. Each check runs on a
//! blocking thread; [`Pam::check`] bounds how many run at once so a login flood cannot take
//! every blocking thread.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::sync::Arc;

use crate::fs::space::FIRST_PERSON_UID;

const PAM_SUCCESS: c_int = 0;
const PAM_PROMPT_ECHO_OFF: c_int = 1;
const PAM_PROMPT_ECHO_ON: c_int = 2;
const PAM_BUF_ERR: c_int = 5;
const PAM_CONV_ERR: c_int = 19;
const PAM_NEW_AUTHTOK_REQD: c_int = 12;
const PAM_ACCT_EXPIRED: c_int = 13;
const PAM_SILENT: c_int = 0x8000;
const PAM_DISALLOW_NULL_AUTHTOK: c_int = 0x1;

#[repr(C)]
struct PamMessage {
    msg_style: c_int,
    msg: *const c_char,
}

#[repr(C)]
struct PamResponse {
    resp: *mut c_char,
    resp_retcode: c_int,
}

type ConvFn =
    extern "C" fn(c_int, *mut *const PamMessage, *mut *mut PamResponse, *mut c_void) -> c_int;

#[repr(C)]
struct PamConv {
    conv: ConvFn,
    appdata_ptr: *mut c_void,
}

type StartFn =
    unsafe extern "C" fn(*const c_char, *const c_char, *const PamConv, *mut *mut c_void) -> c_int;
type HandleFn = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;

/// The entry points of libpam we use.
struct Library {
    start: StartFn,
    authenticate: HandleFn,
    acct_mgmt: HandleFn,
    end: HandleFn,
}

// The function pointers stay valid for the life of the process (the library is never closed).
unsafe impl Send for Library {}
unsafe impl Sync for Library {}

impl Library {
    fn load() -> Result<Library, LibraryError> {
        // SAFETY: dlopen/dlsym with NUL-terminated names; the symbols have the C signatures
        // declared above (from <security/pam_appl.h>).
        unsafe {
            let handle = libc::dlopen(c"libpam.so.0".as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
            if handle.is_null() {
                return Err(LibraryError::NotInstalled);
            }
            let symbol = |name: &CStr| {
                let ptr = libc::dlsym(handle, name.as_ptr());
                if ptr.is_null() {
                    Err(LibraryError::Lacks(name.to_string_lossy().into_owned()))
                } else {
                    Ok(ptr)
                }
            };
            Ok(Library {
                start: std::mem::transmute::<*mut c_void, StartFn>(symbol(c"pam_start")?),
                authenticate: std::mem::transmute::<*mut c_void, HandleFn>(symbol(
                    c"pam_authenticate",
                )?),
                acct_mgmt: std::mem::transmute::<*mut c_void, HandleFn>(symbol(c"pam_acct_mgmt")?),
                end: std::mem::transmute::<*mut c_void, HandleFn>(symbol(c"pam_end")?),
            })
        }
    }
}

/// Answers every prompt with the password (PAM frees what we allocate, with `free`).
extern "C" fn converse(
    count: c_int,
    messages: *mut *const PamMessage,
    responses: *mut *mut PamResponse,
    password: *mut c_void,
) -> c_int {
    if count <= 0 || messages.is_null() || responses.is_null() {
        return PAM_CONV_ERR;
    }
    // SAFETY: PAM passes `count` messages and expects an array of `count` responses allocated
    // with malloc; `password` is the CString we handed to pam_start, alive for the call.
    unsafe {
        let replies =
            libc::calloc(count as usize, std::mem::size_of::<PamResponse>()) as *mut PamResponse;
        if replies.is_null() {
            return PAM_BUF_ERR;
        }
        for i in 0..count as usize {
            let message = *messages.add(i);
            let style = if message.is_null() {
                0
            } else {
                (*message).msg_style
            };
            if style == PAM_PROMPT_ECHO_OFF || style == PAM_PROMPT_ECHO_ON {
                (*replies.add(i)).resp = libc::strdup(password as *const c_char);
            }
        }
        *responses = replies;
    }
    PAM_SUCCESS
}

/// Why libpam cannot be used.
#[derive(Clone, Debug, thiserror::Error)]
enum LibraryError {
    #[error("libpam.so.0 is not installed")]
    NotInstalled,
    #[error("libpam lacks {0}")]
    Lacks(String),
}

/// Why a login failed. `Refused` deliberately does not say whether the account exists.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    #[error("invalid user name or password")]
    Refused,
    #[error("this account has expired")]
    Expired,
    #[error("this account's password must be changed first")]
    PasswordChangeRequired,
    /// PAM cannot answer (not installed, failing, shutting down): why.
    #[error("login is unavailable: {0}")]
    Unavailable(String),
}

#[derive(Clone)]
pub struct Pam {
    service: CString,
    library: Arc<Result<Library, LibraryError>>,
    slots: Arc<tokio::sync::Semaphore>,
}

impl Pam {
    pub fn new(service: &str, concurrent: usize) -> anyhow::Result<Pam> {
        Ok(Pam {
            service: CString::new(service)?,
            library: Arc::new(Library::load()),
            slots: Arc::new(tokio::sync::Semaphore::new(concurrent.max(1))),
        })
    }

    /// Checks a password and the account's standing; returns the account on success.
    pub async fn check(
        &self,
        username: &str,
        password: &str,
    ) -> Result<nix::unistd::User, LoginError> {
        let _slot = self
            .slots
            .acquire()
            .await
            .map_err(|_| LoginError::Unavailable("shutting down".into()))?;
        let this = self.clone();
        let (username, password) = (username.to_string(), password.to_string());
        tokio::task::spawn_blocking(move || this.check_blocking(&username, &password))
            .await
            .map_err(|e| LoginError::Unavailable(e.to_string()))?
    }

    fn check_blocking(
        &self,
        username: &str,
        password: &str,
    ) -> Result<nix::unistd::User, LoginError> {
        let library = self
            .library
            .as_ref()
            .as_ref()
            .map_err(|e| LoginError::Unavailable(e.to_string()))?;
        let valid_name = !username.is_empty()
            && username.len() <= 64
            && username
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            && !username.starts_with('-');
        // An unknown or unsuitable account still goes through PAM (with a name that cannot
        // exist), so it fails the same way and takes as long as a wrong password.
        let user = if valid_name {
            nix::unistd::User::from_name(username).ok().flatten()
        } else {
            None
        };
        let suitable = user
            .as_ref()
            .is_some_and(|u| u.uid.as_raw() >= FIRST_PERSON_UID && u.uid.as_raw() != u32::MAX - 1);
        let pam_name = if suitable {
            username
        } else {
            "quire-no-such-account"
        };
        let name = CString::new(pam_name).map_err(|_| LoginError::Refused)?;
        let secret = CString::new(password).map_err(|_| LoginError::Refused)?;
        let conv = PamConv {
            conv: converse,
            appdata_ptr: secret.as_ptr() as *mut c_void,
        };
        let mut handle: *mut c_void = std::ptr::null_mut();
        // SAFETY: all pointers are valid for the duration of the calls; the handle is ended
        // exactly once.
        let outcome = unsafe {
            let started = (library.start)(self.service.as_ptr(), name.as_ptr(), &conv, &mut handle);
            if started != PAM_SUCCESS || handle.is_null() {
                return Err(LoginError::Unavailable(format!(
                    "pam_start failed ({started})"
                )));
            }
            let mut status = (library.authenticate)(handle, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
            if status == PAM_SUCCESS {
                status = (library.acct_mgmt)(handle, PAM_SILENT | PAM_DISALLOW_NULL_AUTHTOK);
                if status != PAM_SUCCESS {
                    status = -status;
                }
            }
            (library.end)(handle, status.abs());
            status
        };
        drop(secret);
        match outcome {
            PAM_SUCCESS if suitable => Ok(user.expect("suitable implies found")),
            PAM_SUCCESS => Err(LoginError::Refused),
            s if s == -PAM_ACCT_EXPIRED => Err(LoginError::Expired),
            s if s == -PAM_NEW_AUTHTOK_REQD => Err(LoginError::PasswordChangeRequired),
            _ => Err(LoginError::Refused),
        }
    }
}

/// A fingerprint of an account's password entry (its hash in `/etc/shadow`): it changes when
/// the password changes or the account is locked, and then the account's logins end. `None`
/// when the account has no entry (or we may not read it).
pub fn password_mark(username: &str) -> Option<String> {
    let name = CString::new(username).ok()?;
    // SAFETY: getspnam_r fills `entry` with pointers into `buffer`, both alive while read.
    unsafe {
        let mut entry: libc::spwd = std::mem::zeroed();
        let mut found: *mut libc::spwd = std::ptr::null_mut();
        let mut buffer = vec![0 as libc::c_char; 4096];
        let rc = libc::getspnam_r(
            name.as_ptr(),
            &mut entry,
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        );
        if rc != 0 || found.is_null() || entry.sp_pwdp.is_null() {
            return None;
        }
        let hash = std::ffi::CStr::from_ptr(entry.sp_pwdp).to_bytes();
        Some(collab::content_hash(hash))
    }
}
