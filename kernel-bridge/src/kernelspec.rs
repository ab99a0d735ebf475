//! Kernelspecs, found where Jupyter looks for them.
//!
//! Search order (first name found wins, as in `jupyter kernelspec list`): every entry of
//! `JUPYTER_PATH`, the user data directory (`JUPYTER_DATA_DIR`, else `$XDG_DATA_HOME/jupyter`,
//! else `~/.local/share/jupyter`), the active Python prefix (`VIRTUAL_ENV`, `CONDA_PREFIX`, and
//! the prefix of the `python3` on `PATH`), then `/usr/local/share/jupyter` and
//! `/usr/share/jupyter`; kernels live in each directory's `kernels/NAME/kernel.json`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// One installed kernel: its directory and what its kernel.json says.
#[derive(Clone, Debug)]
pub struct KernelSpec {
    pub name: String,
    pub dir: PathBuf,
    pub argv: Vec<String>,
    pub display_name: String,
    pub language: String,
    pub env: BTreeMap<String, String>,
    /// `signal` (SIGINT to the process group) or `message` (interrupt_request on control).
    pub interrupt_mode: String,
    /// The kernel.json as written, for the REST API.
    pub raw: Value,
}

impl KernelSpec {
    /// Reads `dir/kernel.json`; the directory's name is the kernel's name.
    pub fn read(dir: &Path) -> Result<KernelSpec, String> {
        let name = dir
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or("kernel directory without a name")?
            .to_string();
        let path = dir.join("kernel.json");
        let text = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let raw: Value =
            serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let argv: Vec<String> = raw
            .get("argv")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if argv.is_empty() {
            return Err(format!("{}: no argv", path.display()));
        }
        let text_of = |key: &str| raw.get(key).and_then(Value::as_str).map(String::from);
        let env = raw
            .get("env")
            .and_then(Value::as_object)
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(KernelSpec {
            display_name: text_of("display_name").unwrap_or_else(|| name.clone()),
            language: text_of("language").unwrap_or_default(),
            interrupt_mode: text_of("interrupt_mode").unwrap_or_else(|| "signal".into()),
            name,
            dir: dir.to_path_buf(),
            argv,
            env,
            raw,
        })
    }

    /// The command line for a connection file. A bare `python`/`python3` first word means the
    /// Python the kernelspec was installed with: the one in the same prefix, when it exists.
    pub fn command_line(&self, connection_file: &Path) -> Vec<String> {
        let mut argv: Vec<String> = self
            .argv
            .iter()
            .map(|a| {
                a.replace("{connection_file}", &connection_file.to_string_lossy())
                    .replace("{resource_dir}", &self.dir.to_string_lossy())
            })
            .collect();
        if argv[0] == "python" || argv[0] == "python3" {
            // <prefix>/share/jupyter/kernels/<name>
            if let Some(prefix) = self.dir.ancestors().nth(4) {
                for exe in ["python3", "python"] {
                    let candidate = prefix.join("bin").join(exe);
                    if candidate.is_file() {
                        argv[0] = candidate.to_string_lossy().into_owned();
                        break;
                    }
                }
            }
        }
        argv
    }

    /// Jupyter Server's shape for one entry of `GET /api/kernelspecs`.
    pub fn to_api(&self) -> Value {
        json!({
            "name": self.name,
            "spec": {
                "argv": self.argv,
                "display_name": self.display_name,
                "language": self.language,
                "interrupt_mode": self.interrupt_mode,
                "env": self.env,
                "metadata": self.raw.get("metadata").cloned().unwrap_or_else(|| json!({})),
            },
            "resources": {},
        })
    }
}

/// The data directories searched, in order.
pub fn data_dirs() -> Vec<PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(paths) = env("JUPYTER_PATH") {
        dirs.extend(std::env::split_paths(&paths));
    }
    if let Some(dir) = env("JUPYTER_DATA_DIR") {
        dirs.push(dir.into());
    } else if let Some(xdg) = env("XDG_DATA_HOME") {
        dirs.push(PathBuf::from(xdg).join("jupyter"));
    } else if let Some(home) = env("HOME") {
        dirs.push(PathBuf::from(home).join(".local/share/jupyter"));
    }
    for var in ["VIRTUAL_ENV", "CONDA_PREFIX"] {
        if let Some(prefix) = env(var) {
            dirs.push(PathBuf::from(prefix).join("share/jupyter"));
        }
    }
    if let Some(prefix) = python_prefix() {
        dirs.push(prefix.join("share/jupyter"));
    }
    dirs.push("/usr/local/share/jupyter".into());
    dirs.push("/usr/share/jupyter".into());
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// The prefix of the `python3` found on PATH (a venv's or the system's), without running it.
fn python_prefix() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("python3"))
        .find(|p| p.is_file())
        .and_then(|p| p.parent()?.parent().map(Path::to_path_buf))
}

/// Every kernelspec found in `dirs`; the first of each name wins. Unreadable ones are logged.
pub fn find_all(dirs: &[PathBuf]) -> Vec<KernelSpec> {
    let mut found: BTreeMap<String, KernelSpec> = BTreeMap::new();
    for dir in dirs {
        let Ok(entries) = std::fs::read_dir(dir.join("kernels")) else {
            continue;
        };
        let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        entries.sort();
        for entry in entries {
            if !entry.join("kernel.json").is_file() {
                continue;
            }
            match KernelSpec::read(&entry) {
                Ok(spec) => {
                    found.entry(spec.name.clone()).or_insert(spec);
                }
                Err(e) => tracing::warn!("skipping kernelspec: {e}"),
            }
        }
    }
    found.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_directory_wins_and_python_resolves_to_its_prefix() {
        let root = tempfile::tempdir().unwrap();
        let prefix = root.path().join("venv");
        let first = prefix.join("share/jupyter/kernels/python3");
        std::fs::create_dir_all(&first).unwrap();
        std::fs::create_dir_all(prefix.join("bin")).unwrap();
        std::fs::write(prefix.join("bin/python"), "").unwrap();
        std::fs::write(
            first.join("kernel.json"),
            r#"{"argv": ["python", "-m", "ipykernel_launcher", "-f", "{connection_file}"],
                "display_name": "Python 3", "language": "python"}"#,
        )
        .unwrap();
        let second = root.path().join("other/kernels/python3");
        std::fs::create_dir_all(&second).unwrap();
        std::fs::write(
            second.join("kernel.json"),
            r#"{"argv": ["x"], "display_name": "Other"}"#,
        )
        .unwrap();
        let broken = root.path().join("other/kernels/broken");
        std::fs::create_dir_all(&broken).unwrap();
        std::fs::write(broken.join("kernel.json"), "{").unwrap();
        let specs = find_all(&[prefix.join("share/jupyter"), root.path().join("other")]);
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].display_name, "Python 3");
        let argv = specs[0].command_line(Path::new("/run/k.json"));
        assert_eq!(argv[0], prefix.join("bin/python").to_string_lossy());
        assert_eq!(argv[4], "/run/k.json");
    }
}
