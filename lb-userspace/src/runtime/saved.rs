//! The runtime operations on disk, so that a restarted agent keeps them.

use std::path::Path;

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

/// Saves the operations (atomically: a crash leaves the old or the new list).
pub fn save(path: &Path, ops: &[Op]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("tmp");
    let json = serde_json::to_vec_pretty(&Saved { ops: ops.to_vec() }).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}
