//! Mapping API paths to files, without ever leaving the served root.
//!
//! An API path is `/`-separated and relative to the root. Components `..`, `.`, NUL bytes and
//! absolute paths are refused outright; then the deepest existing ancestor is canonicalized and
//! must lie inside the canonical root, compared component by component (so `/srv/nb-evil` is not
//! inside `/srv/nb`, and a symlink pointing outside is refused).

use std::path::{Component, Path, PathBuf};

use super::Error;

/// The canonical served root.
#[derive(Clone, Debug)]
pub struct Root(PathBuf);

impl Root {
    pub fn new(dir: &Path) -> std::io::Result<Root> {
        Ok(Root(dir.canonicalize()?))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Normalizes an API path: no leading or trailing slash, no empty components.
    pub fn normalize(api_path: &str) -> Result<String, Error> {
        let invalid = |why| Error::InvalidPath(api_path.to_string(), why);
        if api_path.contains('\0') {
            return Err(invalid("contains a NUL byte"));
        }
        let mut parts = Vec::new();
        for part in api_path.split('/') {
            match part {
                "" => continue,
                "." | ".." => return Err(invalid("contains . or .. components")),
                _ => parts.push(part),
            }
        }
        Ok(parts.join("/"))
    }

    /// The file system path for an API path, which need not exist yet; its existing part must
    /// resolve inside the root.
    pub fn resolve(&self, api_path: &str) -> Result<PathBuf, Error> {
        let normalized = Root::normalize(api_path)?;
        let candidate = self.0.join(&normalized);
        if !candidate.starts_with(&self.0)
            || candidate
                .components()
                .any(|c| matches!(c, Component::ParentDir))
        {
            return Err(Error::Outside(api_path.to_string()));
        }
        // Walk up to the deepest existing ancestor and check where it really is.
        let mut existing = candidate.as_path();
        loop {
            if std::fs::symlink_metadata(existing).is_ok() {
                break;
            }
            match existing.parent() {
                Some(parent) => existing = parent,
                None => break,
            }
        }
        let real = existing
            .canonicalize()
            .map_err(|_| Error::Outside(api_path.to_string()))?;
        if !real.starts_with(&self.0) {
            return Err(Error::Outside(api_path.to_string()));
        }
        let rest = candidate
            .strip_prefix(existing)
            .expect("an ancestor is a prefix");
        if rest.as_os_str().is_empty() {
            return Ok(real);
        }
        Ok(real.join(rest))
    }

    /// The API path of a file system path inside the root.
    pub fn api_path(&self, path: &Path) -> String {
        path.strip_prefix(&self.0)
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_every_way_out() {
        let outer = tempfile::tempdir().unwrap();
        let root_dir = outer.path().join("nb");
        let sibling = outer.path().join("nb-evil");
        std::fs::create_dir_all(root_dir.join("sub")).unwrap();
        std::fs::create_dir_all(&sibling).unwrap();
        std::fs::write(sibling.join("secret.ipynb"), "{}").unwrap();
        std::os::unix::fs::symlink(&sibling, root_dir.join("link")).unwrap();
        let root = Root::new(&root_dir).unwrap();
        for bad in [
            "../nb-evil/secret.ipynb",
            "sub/../../nb-evil/secret.ipynb",
            "..",
            "a\0b",
            "link/secret.ipynb",
            "link",
        ] {
            assert!(root.resolve(bad).is_err(), "{bad:?} must be refused");
        }
        assert_eq!(
            root.resolve("/sub/new.ipynb").unwrap(),
            root.path().join("sub/new.ipynb")
        );
        assert_eq!(root.resolve("").unwrap(), root.path());
        std::fs::write(root.path().join("sub/x.ipynb"), "{}").unwrap();
        assert!(root.resolve("sub/x.ipynb").unwrap().is_file());
    }
}
