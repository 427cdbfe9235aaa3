//! The runtime operations on disk, so that a restarted agent keeps them.

use std::{io::Write as _, os::unix::fs::OpenOptionsExt as _, path::Path};

use serde::{Deserialize, Serialize};

use super::Op;

#[derive(Debug, Default, Serialize, Deserialize)]
struct Saved {
    ops: Vec<Op>,
}

/// The operations saved by a previous agent (none if the file is missing), as
/// they were saved: an older agent's list may be long and its adds unnamed;
/// [`replay`](super::replay) names and compacts what still applies.
pub fn load(path: &Path) -> std::io::Result<Vec<Op>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice::<Saved>(&bytes)
            .map(|s| s.ops)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The operations as one document, the form shared through etcd.
pub fn encode(ops: &[Op]) -> Vec<u8> {
    serde_json::to_vec(&Saved { ops: ops.to_vec() }).expect("operations serialize")
}

pub fn decode(bytes: &[u8]) -> Result<Vec<Op>, serde_json::Error> {
    serde_json::from_slice::<Saved>(bytes).map(|s| s.ops)
}

/// Saves the operations (atomically: a crash leaves the old or the new list).
pub fn save(path: &Path, ops: &[Op]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let json = serde_json::to_vec_pretty(&Saved { ops: ops.to_vec() }).map_err(std::io::Error::other)?;
    // Root-only from its first byte: the list names backends, addresses and
    // commands. A leftover temporary file may have another mode: start anew.
    match std::fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
    file.write_all(&json)?;
    file.sync_data()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    #[test]
    fn saved_changes_are_readable_by_their_owner_only() {
        let dir = std::env::temp_dir().join(format!("alwayson-saved-{}", std::process::id()));
        let path = dir.join("rt.json");
        std::fs::create_dir_all(&dir).unwrap();
        // An older agent's file, and a temporary one, world-readable.
        std::fs::write(&path, "{\"ops\": []}").unwrap();
        std::fs::write(path.with_extension("tmp"), "").unwrap();
        for p in [&path, &path.with_extension("tmp")] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o644)).unwrap();
        }
        save(&path, &[]).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load(&path).unwrap(), Vec::new());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
