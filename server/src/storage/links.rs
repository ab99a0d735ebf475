//! Live-share links, the guest sessions opened through them, and forgetting a deleted file's
//! sharing.

use collab::{Capabilities, FileId, LinkId};
use rand::RngCore;
use rusqlite::{params, OptionalExtension};

use super::{now_secs, Error, Result, Store};

/// A guest session, as stored: the link it was opened through (live), its notebook and
/// capabilities, and the name the guest gave.
#[derive(Clone, Debug)]
pub struct GuestSession {
    pub link_id: LinkId,
    pub file: FileId,
    pub caps: Capabilities,
    pub name: String,
    /// The hash of the guest's cookie.
    pub cookie_hash: String,
}

/// A fresh secret: 32 random bytes, in hex.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// What is stored of a secret (a token, a cookie): its SHA-256.
pub fn secret_hash(secret: &str) -> String {
    collab::content_hash(secret.as_bytes())
}

/// A link as listed (never with its token).
#[derive(Clone, Debug)]
pub struct Link {
    pub id: LinkId,
    pub file: String,
    pub caps: Capabilities,
    pub label: String,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub max_uses: Option<i64>,
    pub uses: i64,
}

#[derive(Debug, PartialEq, Eq)]
pub enum RedeemError {
    Unknown,
    Expired,
    UsedUp,
}

impl Store {
    /// Creates a link; returns it and its token (which is not kept).
    pub fn create_link(
        &self,
        file: FileId,
        caps: Capabilities,
        label: &str,
        expires_at: Option<i64>,
        max_uses: Option<i64>,
    ) -> Result<(Link, String)> {
        let token = random_secret();
        let id = LinkId::new_random();
        let created_at = now_secs();
        self.db().execute(
            "INSERT INTO links (id, file_id, token_hash, caps, label, created_at, expires_at, max_uses)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![id.as_str(), file.to_string(), secret_hash(&token), caps.bits(), label, created_at, expires_at, max_uses],
        )?;
        let link = Link {
            id,
            file: file.to_string(),
            caps,
            label: label.to_string(),
            created_at,
            expires_at,
            max_uses,
            uses: 0,
        };
        Ok((link, token))
    }

    fn link_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Link> {
        Ok(Link {
            id: LinkId(row.get(0)?),
            file: row.get(1)?,
            caps: Capabilities::from_bits(row.get::<_, u8>(2)?),
            label: row.get(3)?,
            created_at: row.get(4)?,
            expires_at: row.get(5)?,
            max_uses: row.get(6)?,
            uses: row.get(7)?,
        })
    }

    /// The links of a notebook that are not revoked.
    pub fn links_of(&self, file: FileId) -> Result<Vec<Link>> {
        let db = self.db();
        let mut stmt = db.prepare(
            "SELECT id, file_id, caps, label, created_at, expires_at, max_uses, uses FROM links
             WHERE file_id = ?1 AND revoked_at IS NULL ORDER BY created_at, id",
        )?;
        let rows = stmt.query_map([file.to_string()], Store::link_from_row)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn set_link_caps(&self, file: FileId, id: &LinkId, caps: Capabilities) -> Result<bool> {
        let changed = self.db().execute(
            "UPDATE links SET caps = ?1 WHERE id = ?2 AND file_id = ?3 AND revoked_at IS NULL",
            params![caps.bits(), id.as_str(), file.to_string()],
        )?;
        Ok(changed == 1)
    }

    /// Revokes a link and ends the guest sessions made through it.
    pub fn revoke_link(&self, file: FileId, id: &LinkId) -> Result<bool> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let changed = tx.execute(
            "UPDATE links SET revoked_at = ?1 WHERE id = ?2 AND file_id = ?3 AND revoked_at IS NULL",
            params![now_secs(), id.as_str(), file.to_string()],
        )?;
        tx.execute("DELETE FROM guests WHERE link_id = ?1", [id.as_str()])?;
        tx.commit()?;
        Ok(changed == 1)
    }

    /// Uses a link: checks it, counts the use, and makes a guest session; returns its cookie.
    pub fn redeem(&self, token: &str, name: &str) -> Result<Result<(Link, String), RedeemError>> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let found = tx
            .query_row(
                "SELECT id, file_id, caps, label, created_at, expires_at, max_uses, uses FROM links
                 WHERE token_hash = ?1 AND revoked_at IS NULL",
                [secret_hash(token)],
                Store::link_from_row,
            )
            .optional()?;
        let Some(link) = found else {
            return Ok(Err(RedeemError::Unknown));
        };
        if link.expires_at.is_some_and(|t| t <= now_secs()) {
            return Ok(Err(RedeemError::Expired));
        }
        if link.max_uses.is_some_and(|m| link.uses >= m) {
            return Ok(Err(RedeemError::UsedUp));
        }
        tx.execute(
            "UPDATE links SET uses = uses + 1 WHERE id = ?1",
            [link.id.as_str()],
        )?;
        let cookie = random_secret();
        tx.execute(
            "INSERT INTO guests (cookie_hash, link_id, name, created_at) VALUES (?1, ?2, ?3, ?4)",
            params![secret_hash(&cookie), link.id.as_str(), name, now_secs()],
        )?;
        tx.commit()?;
        Ok(Ok((link, cookie)))
    }

    /// Forgets the files at or under a store path (deleted): their ids, grants and links (with
    /// the guest sessions made through them). Returns each file with its links that were live.
    pub fn forget(&self, store_path: &str) -> Result<Vec<(FileId, Vec<LinkId>)>> {
        let mut db = self.db();
        let tx = db.transaction()?;
        let ids: Vec<String> = {
            let mut stmt = tx.prepare(
                "SELECT id FROM files WHERE path = ?1 OR substr(path, 1, length(?2)) = ?2",
            )?;
            let rows =
                stmt.query_map(params![store_path, format!("{store_path}/")], |r| r.get(0))?;
            rows.collect::<rusqlite::Result<_>>()?
        };
        let mut forgotten = Vec::new();
        for id in ids {
            let links: Vec<LinkId> = {
                let mut stmt =
                    tx.prepare("SELECT id FROM links WHERE file_id = ?1 AND revoked_at IS NULL")?;
                let rows = stmt.query_map([&id], |r| r.get(0).map(LinkId))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            tx.execute(
                "DELETE FROM guests WHERE link_id IN (SELECT id FROM links WHERE file_id = ?1)",
                [&id],
            )?;
            tx.execute(
                "UPDATE links SET revoked_at = ?2 WHERE file_id = ?1 AND revoked_at IS NULL",
                params![id, now_secs()],
            )?;
            tx.execute("DELETE FROM grants WHERE file_id = ?1", [&id])?;
            tx.execute("DELETE FROM files WHERE id = ?1", [&id])?;
            if let Some(file) = FileId::parse(&id) {
                forgotten.push((file, links));
            }
        }
        tx.commit()?;
        Ok(forgotten)
    }

    /// The links (file, id) whose expiry falls in `(after, upto]`, in seconds.
    pub fn links_expiring(&self, after: i64, upto: i64) -> Result<Vec<(String, LinkId)>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(
            "SELECT file_id, id FROM links
             WHERE revoked_at IS NULL AND expires_at > ?1 AND expires_at <= ?2",
        )?;
        let rows = stmt.query_map(params![after, upto], |row| {
            Ok((row.get(0)?, LinkId(row.get(1)?)))
        })?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// A link's capabilities now, if it is live (not revoked, not expired).
    pub fn link_caps(&self, id: &LinkId) -> Result<Option<Capabilities>> {
        self.db()
            .query_row(
                "SELECT caps FROM links WHERE id = ?1 AND revoked_at IS NULL
                   AND (expires_at IS NULL OR expires_at > ?2)",
                params![id.as_str(), now_secs()],
                |row| row.get::<_, u8>(0),
            )
            .optional()
            .map(|caps| caps.map(Capabilities::from_bits))
            .map_err(Error::from)
    }

    /// The guest behind a cookie, while its link is live (not revoked, not expired).
    pub fn guest(&self, cookie: &str) -> Result<Option<GuestSession>> {
        let row = self
            .db()
            .query_row(
                "SELECT g.link_id, l.file_id, l.caps, g.name, g.cookie_hash FROM guests g
                 JOIN links l ON l.id = g.link_id
                 WHERE g.cookie_hash = ?1 AND l.revoked_at IS NULL
                   AND (l.expires_at IS NULL OR l.expires_at > ?2)",
                params![secret_hash(cookie), now_secs()],
                |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, u8>(2)?,
                        row.get::<_, String>(3)?,
                        row.get::<_, String>(4)?,
                    ))
                },
            )
            .optional()?;
        Ok(row.and_then(|(link_id, file, caps, name, cookie_hash)| {
            Some(GuestSession {
                link_id: LinkId(link_id),
                file: FileId::parse(&file)?,
                caps: Capabilities::from_bits(caps),
                name,
                cookie_hash,
            })
        }))
    }
}
