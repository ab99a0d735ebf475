//! Logins: the token holder's login cookies (tied to the token they were made with) and
//! people's logins with their accounts (tied to their password entry as it was).

use collab::UserName;
use rusqlite::{params, OptionalExtension};

use super::{now_secs, Error, Result, Store};

/// How long a login cookie made with the token stays valid.
pub const LOGIN_LIFETIME_SECS: i64 = 30 * 24 * 3600;

/// How long a person's login lasts.
pub const SESSION_LIFETIME_SECS: i64 = 7 * 24 * 3600;

impl Store {
    /// Remembers a login cookie (hashed), tied to the token it was issued for.
    pub fn add_login(&self, cookie_hash: &str, token_hash: &str) -> Result<()> {
        let db = self.db();
        db.execute(
            "DELETE FROM logins WHERE created_at < ?1",
            [now_secs() - LOGIN_LIFETIME_SECS],
        )?;
        db.execute(
            "INSERT OR IGNORE INTO logins (cookie_hash, token_hash, created_at) VALUES (?1, ?2, ?3)",
            params![cookie_hash, token_hash, now_secs()],
        )?;
        Ok(())
    }

    /// Whether a cookie was issued for this token and has not expired. A new token (after a
    /// leak, say) invalidates every cookie issued for the old one.
    pub fn has_login(&self, cookie_hash: &str, token_hash: &str) -> Result<bool> {
        let found = self
            .db()
            .query_row(
                "SELECT 1 FROM logins WHERE cookie_hash = ?1 AND token_hash = ?2 AND created_at >= ?3",
                params![cookie_hash, token_hash, now_secs() - LOGIN_LIFETIME_SECS],
                |_| Ok(()),
            )
            .optional()?;
        Ok(found.is_some())
    }

    /// Remembers a login: its cookie (hashed), whose it is, and the mark of their password
    /// entry as it was (a changed password ends the login).
    pub fn add_user_session(&self, cookie: &str, username: &str, mark: &str) -> Result<()> {
        let db = self.db();
        db.execute(
            "DELETE FROM user_sessions WHERE created_at < ?1",
            [now_secs() - SESSION_LIFETIME_SECS],
        )?;
        db.execute(
            "INSERT INTO user_sessions (cookie_hash, username, created_at, password_mark)
             VALUES (?1, ?2, ?3, ?4)",
            params![
                collab::content_hash(cookie.as_bytes()),
                username,
                now_secs(),
                mark
            ],
        )?;
        Ok(())
    }

    /// The account and password mark of a live login, by the hash of its cookie.
    pub fn user_session(&self, cookie_hash: &str) -> Result<Option<(UserName, String)>> {
        self.db()
            .query_row(
                "SELECT username, password_mark FROM user_sessions
                 WHERE cookie_hash = ?1 AND created_at >= ?2",
                params![cookie_hash, now_secs() - SESSION_LIFETIME_SECS],
                |row| Ok((UserName(row.get(0)?), row.get(1)?)),
            )
            .optional()
            .map_err(Error::from)
    }

    pub fn end_user_session(&self, cookie: &str) -> Result<()> {
        self.db().execute(
            "DELETE FROM user_sessions WHERE cookie_hash = ?1",
            [collab::content_hash(cookie.as_bytes())],
        )?;
        Ok(())
    }
}
