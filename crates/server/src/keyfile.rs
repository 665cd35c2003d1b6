//! Private key files (the log's signing key, a witness's cosigning key):
//! read only if nobody else may read or write them, created whole with mode
//! 0600 or not at all.

use std::path::Path;

/// Why a key file could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// Others may read or write it (the file's mode).
    Permissions(u32),
    Io(std::io::Error),
}

/// The file's text, `None` if there is none; refused if others may read or
/// write it.
pub fn read_private(path: &Path) -> Result<Option<String>, ReadError> {
    let meta = match std::fs::metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        other => other.map_err(ReadError::Io)?,
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(ReadError::Permissions(mode));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    std::fs::read_to_string(path)
        .map(Some)
        .map_err(ReadError::Io)
}

/// Write `contents` as a new private file at `path` (directories created).
/// It is written whole to a temporary file (named with a random nonce of its
/// own: nothing of the key it holds), synced, then linked into place, so the
/// file appears complete or not at all. `Ok(false)`: another process created
/// it first; read theirs.
pub fn create_private(path: &Path, contents: &str) -> std::io::Result<bool> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut nonce = [0u8; 8];
    getrandom::fill(&mut nonce).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(format!(".tmp-{}", hex::encode(nonce)));
    let tmp = path.with_file_name(tmp_name);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let written = options.open(&tmp).and_then(|mut file| {
        std::io::Write::write_all(&mut file, contents.as_bytes())?;
        file.sync_all()
    });
    let linked = written.and_then(|()| std::fs::hard_link(&tmp, path));
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        other => other.map(|()| true),
    }
}
