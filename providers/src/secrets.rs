//! Provider keys from `secrets/<provider>.env` files.
//!
//! A file holds `NAME=value` lines (`#` comments, optional `export `, optional
//! quotes). A key file that group or others can read is refused, as ssh refuses
//! a private key, because a leaked upstream key costs money. The value is only
//! ever held as a [`Secret`].

use std::path::Path;

use crate::http::Secret;

/// Why a provider has no usable key; shown in `/v1/chat/providers` and 404s.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct KeyUnavailable(pub String);

/// Reads `var` from the key file at `path`.
pub fn load_key(path: &Path, var: &str) -> Result<Secret, KeyUnavailable> {
    let shown = path.display();
    let metadata = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(KeyUnavailable(format!(
                "no key file {shown}: create it with `{var}=<key>` and `chmod 600 {shown}`"
            )));
        }
        Err(e) => return Err(KeyUnavailable(format!("cannot read key file {shown}: {e}"))),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyUnavailable(format!(
                "refusing key file {shown}: mode {mode:04o} lets group or others read it; run `chmod 600 {shown}`"
            )));
        }
    }
    #[cfg(not(unix))]
    let _ = metadata;
    let text = std::fs::read_to_string(path)
        .map_err(|e| KeyUnavailable(format!("cannot read key file {shown}: {e}")))?;
    match find_var(&text, var) {
        Some(value) if !value.is_empty() => Ok(Secret::new(value)),
        _ => Err(KeyUnavailable(format!(
            "key file {shown} sets no {var}, or sets it empty"
        ))),
    }
}

fn find_var(text: &str, var: &str) -> Option<String> {
    text.lines().rev().find_map(|line| {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (name, value) = line.split_once('=')?;
        if name.trim() != var {
            return None;
        }
        let value = value.trim();
        let unquoted = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(value);
        Some(unquoted.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn write(dir: &Path, name: &str, body: &str, mode: u32) -> std::path::PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        path
    }

    fn tempdir() -> std::path::PathBuf {
        let dir =
            std::env::temp_dir().join(format!("lakehouse-secrets-{}", crate::openai::new_id("")));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_the_named_variable() {
        let dir = tempdir();
        let path = write(
            &dir,
            "kimi.env",
            "# comment\nOTHER=x\nexport KIMI_API_KEY=\"sk-abc\"\n",
            0o600,
        );
        assert_eq!(load_key(&path, "KIMI_API_KEY").unwrap().expose(), "sk-abc");
    }

    #[test]
    fn missing_empty_and_open_files_are_refused_with_reasons() {
        let dir = tempdir();
        let err = load_key(&dir.join("none.env"), "K").unwrap_err();
        assert!(err.0.contains("no key file"), "{err}");
        let path = write(&dir, "empty.env", "K=\n", 0o600);
        assert!(load_key(&path, "K").unwrap_err().0.contains("sets no K"));
        let path = write(&dir, "open.env", "K=secret-value\n", 0o644);
        let err = load_key(&path, "K").unwrap_err();
        assert!(err.0.contains("chmod 600"), "{err}");
        assert!(!err.0.contains("secret-value"));
    }
}
