//! Grants to people and groups per notebook, and projects with their members.

use collab::{Capabilities, FileId, UserName};
use rusqlite::{params, OptionalExtension};

use super::{now_secs, Result, Store};

/// Whom a grant names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Grantee {
    User,
    Group,
}

impl Grantee {
    /// The grantee a stored or requested kind names (`"user"`, `"group"`).
    pub fn parse(kind: &str) -> Option<Grantee> {
        match kind {
            "user" => Some(Grantee::User),
            "group" => Some(Grantee::Group),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Grantee::User => "user",
            Grantee::Group => "group",
        }
    }
}

/// One grant: a person or group holding capabilities on a notebook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub file: FileId,
    pub grantee: Grantee,
    pub name: String,
    pub caps: Capabilities,
    pub granted_by: String,
    pub created_at: i64,
}

const GRANT_COLUMNS: &str = "file_id, kind, name, caps, granted_by, created_at";

/// A grant from its row (`GRANT_COLUMNS`); `None` for a row naming an unknown kind or file.
fn grant_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Option<Grant>> {
    let file: String = row.get(0)?;
    let kind: String = row.get(1)?;
    let (Some(file), Some(grantee)) = (FileId::parse(&file), Grantee::parse(&kind)) else {
        return Ok(None);
    };
    Ok(Some(Grant {
        file,
        grantee,
        name: row.get(2)?,
        caps: Capabilities::from_bits(row.get::<_, u8>(3)?),
        granted_by: row.get(4)?,
        created_at: row.get(5)?,
    }))
}

impl Store {
    /// Gives (or changes) a grant; whether it is new.
    pub fn set_grant(
        &self,
        file: FileId,
        kind: Grantee,
        name: &str,
        caps: Capabilities,
        by: &str,
    ) -> Result<bool> {
        let db = self.db();
        let changed = db.execute(
            "UPDATE grants SET caps = ?1, granted_by = ?2 WHERE file_id = ?3 AND kind = ?4 AND name = ?5",
            params![caps.bits(), by, file.to_string(), kind.as_str(), name],
        )?;
        if changed == 1 {
            return Ok(false);
        }
        db.execute(
            "INSERT INTO grants (file_id, kind, name, caps, granted_by, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![
                file.to_string(),
                kind.as_str(),
                name,
                caps.bits(),
                by,
                now_secs()
            ],
        )?;
        Ok(true)
    }

    pub fn grant(&self, file: FileId, kind: Grantee, name: &str) -> Result<Option<Capabilities>> {
        let caps = self
            .db()
            .query_row(
                "SELECT caps FROM grants WHERE file_id = ?1 AND kind = ?2 AND name = ?3",
                params![file.to_string(), kind.as_str(), name],
                |row| row.get::<_, u8>(0),
            )
            .optional()?;
        Ok(caps.map(Capabilities::from_bits))
    }

    pub fn remove_grant(&self, file: FileId, kind: Grantee, name: &str) -> Result<bool> {
        let removed = self.db().execute(
            "DELETE FROM grants WHERE file_id = ?1 AND kind = ?2 AND name = ?3",
            params![file.to_string(), kind.as_str(), name],
        )?;
        Ok(removed == 1)
    }

    /// The grants on one notebook, groups first, then by name.
    pub fn grants_on(&self, file: FileId) -> Result<Vec<Grant>> {
        let db = self.db();
        let mut stmt = db.prepare_cached(&format!(
            "SELECT {GRANT_COLUMNS} FROM grants WHERE file_id = ?1 ORDER BY kind DESC, name"
        ))?;
        let rows = stmt.query_map([file.to_string()], grant_from_row)?;
        Ok(rows
            .collect::<rusqlite::Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect())
    }

    /// Every grant on every notebook.
    pub fn all_grants(&self) -> Result<Vec<Grant>> {
        let db = self.db();
        let mut stmt = db.prepare(&format!(
            "SELECT {GRANT_COLUMNS} FROM grants ORDER BY file_id, kind, name"
        ))?;
        let rows = stmt.query_map([], grant_from_row)?;
        Ok(rows
            .collect::<rusqlite::Result<Vec<_>>>()?
            .into_iter()
            .flatten()
            .collect())
    }

    pub fn add_project(&self, name: &str) -> Result<bool> {
        let added = self.db().execute(
            "INSERT OR IGNORE INTO projects (name, created_at) VALUES (?1, ?2)",
            params![name, now_secs()],
        )?;
        Ok(added == 1)
    }

    pub fn remove_project(&self, name: &str) -> Result<Vec<UserName>> {
        let members = self.members(name)?;
        let mut db = self.db();
        let tx = db.transaction()?;
        tx.execute("DELETE FROM project_members WHERE project = ?1", [name])?;
        let removed = tx.execute("DELETE FROM projects WHERE name = ?1", [name])?;
        tx.commit()?;
        Ok(if removed == 1 { members } else { Vec::new() })
    }

    pub fn is_project(&self, name: &str) -> Result<bool> {
        let found = self
            .db()
            .query_row("SELECT 1 FROM projects WHERE name = ?1", [name], |_| Ok(()))
            .optional()?;
        Ok(found.is_some())
    }

    pub fn projects(&self) -> Result<Vec<String>> {
        let db = self.db();
        let mut stmt = db.prepare("SELECT name FROM projects ORDER BY name")?;
        let rows = stmt.query_map([], |row| row.get(0))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn members(&self, project: &str) -> Result<Vec<UserName>> {
        let db = self.db();
        let mut stmt = db
            .prepare("SELECT username FROM project_members WHERE project = ?1 ORDER BY username")?;
        let rows = stmt.query_map([project], |row| row.get(0).map(UserName))?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    pub fn is_member(&self, project: &str, username: &UserName) -> Result<bool> {
        let found = self
            .db()
            .query_row(
                "SELECT 1 FROM project_members WHERE project = ?1 AND username = ?2",
                [project, username.as_str()],
                |_| Ok(()),
            )
            .optional()?;
        Ok(found.is_some())
    }

    pub fn set_member(&self, project: &str, username: &UserName, member: bool) -> Result<bool> {
        let changed = if member {
            self.db().execute(
                "INSERT OR IGNORE INTO project_members (project, username, added_at) VALUES (?1, ?2, ?3)",
                params![project, username.as_str(), now_secs()],
            )?
        } else {
            self.db().execute(
                "DELETE FROM project_members WHERE project = ?1 AND username = ?2",
                [project, username.as_str()],
            )?
        };
        Ok(changed == 1)
    }
}
