//! The control API's unix socket: created root-only from the start, never
//! taken from a process that still serves it, and removed when the agent
//! drops it (at exit, or when a start fails after binding) only if it is
//! still the one this agent created.

use std::{
    io,
    os::unix::fs::{FileTypeExt as _, MetadataExt as _},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use tokio::net::UnixListener;

/// The socket file this agent created, by identity (a later agent may have
/// replaced it at the same path). The inode number alone is not enough: tmpfs
/// gives a freed number to the next file; the change time tells them apart.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    identity: Identity,
}

type Identity = (u64, u64, i64, i64);

fn identity(meta: &std::fs::Metadata) -> Identity {
    (meta.dev(), meta.ino(), meta.ctime(), meta.ctime_nsec())
}

impl SocketFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file if it is still the socket this agent bound.
    fn remove(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if identity(&meta) == self.identity => {
                if let Err(e) = std::fs::remove_file(&self.path) {
                    tracing::warn!("removing the control socket {}: {e}", self.path.display());
                }
            }
            _ => {
                tracing::debug!("{} is not the socket this agent created; left as it is", self.path.display())
            }
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Binds `path`, mode 0600 from the moment it exists. A socket left by an
/// agent that died is replaced; one that still answers, or a file that is
/// not a socket, is an error naming it.
pub fn bind(path: &Path) -> Result<(UnixListener, SocketFile)> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            bail!(
                "api.socket: {} exists and is not a socket; remove it or choose another path",
                path.display()
            )
        }
        Ok(_) => match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => bail!(
                "api.socket: another process serves {} (another agent with this socket path?); \
                 stop it or choose another path",
                path.display()
            ),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path)
                    .with_context(|| format!("removing the stale socket {}", path.display()))?;
            }
            Err(e) => return Err(e).with_context(|| format!("api.socket: checking {}", path.display())),
        },
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("api.socket: {}", path.display())),
    }
    let listener = bind_private(path).with_context(|| format!("binding {}", path.display()))?;
    let meta = std::fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    Ok((listener, SocketFile { path: path.to_owned(), identity: identity(&meta) }))
}

/// bind(2) under a umask that leaves only the owner's read and write, so the
/// socket is never reachable by others, not even between bind and a chmod.
fn bind_private(path: &Path) -> io::Result<UnixListener> {
    // SAFETY: umask(2) cannot fail. It is process-wide: the agent binds its
    // socket before it starts anything that creates files.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    bound
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("alwayson-socket-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[tokio::test]
    async fn a_live_socket_is_kept_and_a_stale_one_replaced() {
        let dir = dir("live");
        let path = dir.join("api.sock");
        let (first, file) = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "created root-only");
        let refused = bind(&path).unwrap_err().to_string();
        assert!(refused.contains("another process serves"), "{refused}");
        assert!(path.exists(), "a refused second bind removed the first one's socket");

        // The first agent died: its socket is stale and can be replaced.
        drop(first);
        let (_second, second_file) = bind(&path).unwrap();
        // The first agent's exit must not remove the second one's socket.
        drop(file);
        assert!(path.exists(), "removed a socket this agent did not create");
        drop(second_file);
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_file_that_is_not_a_socket_is_left_alone() {
        let dir = dir("file");
        let path = dir.join("api.sock");
        std::fs::write(&path, "data").unwrap();
        let refused = bind(&path).unwrap_err().to_string();
        assert!(refused.contains("is not a socket"), "{refused}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "data");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
