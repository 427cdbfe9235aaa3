//! One agent per interface. Before it touches the kernel, an agent takes an
//! exclusive lock on `global.lock_file` (bpffs, where the maps are pinned,
//! cannot hold regular files). The file holds the running agent's pid, so a
//! second agent can say whom it met, and the host settings the agents on this
//! interface changed, so the one that finally detaches restores them even if
//! an earlier agent made the change and left the data plane running.

use std::{
    collections::BTreeMap,
    fs::File,
    io::{Read as _, Seek as _, SeekFrom, Write as _},
    os::{fd::AsRawFd as _, unix::fs::OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use anyhow::{bail, Context as _, Result};
use serde::{Deserialize, Serialize};

/// What the lock file says.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
struct Held {
    pid: u32,
    /// Settings (a /proc/sys path) and the value they had before an agent changed them.
    #[serde(default)]
    restore: BTreeMap<PathBuf, String>,
}

/// The lock, held until the agent exits (the kernel releases it with the
/// descriptor, also when the agent is killed).
pub struct InterfaceLock {
    file: File,
    path: PathBuf,
    held: Held,
}

impl InterfaceLock {
    pub fn acquire(path: &Path, interface: &str) -> Result<Self> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .with_context(|| format!("global.lock_file: opening {}", path.display()))?;
        // SAFETY: flock(2) on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(e).with_context(|| format!("global.lock_file: locking {}", path.display()));
            }
            let who = match read(&mut file) {
                Held { pid: 0, .. } => "another alwayson".to_string(),
                Held { pid, .. } => format!("another alwayson (pid {pid})"),
            };
            bail!(
                "{who} is running on interface {interface} (it holds {}); stop it first, \
                 or give this agent another interface",
                path.display()
            );
        }
        let before = read(&mut file);
        let mut lock = Self { file, path: path.to_owned(), held: Held { pid: std::process::id(), ..before } };
        lock.write()?;
        Ok(lock)
    }

    /// Remembers `setting`'s value before this agent changes it, unless an
    /// earlier agent already did (its original value is the one to restore).
    pub fn remember(&mut self, setting: &Path, original: &str) -> Result<()> {
        if self.held.restore.contains_key(setting) {
            return Ok(());
        }
        self.held.restore.insert(setting.to_owned(), original.to_owned());
        self.write()
    }

    /// Hands over every remembered setting to be restored, and forgets them.
    pub fn take_restores(&mut self) -> Result<BTreeMap<PathBuf, String>> {
        let taken = std::mem::take(&mut self.held.restore);
        self.write()?;
        Ok(taken)
    }

    fn write(&mut self) -> Result<()> {
        let text = serde_json::to_string(&self.held).context("encoding the lock file")?;
        let written = (|| {
            self.file.set_len(0)?;
            self.file.seek(SeekFrom::Start(0))?;
            self.file.write_all(text.as_bytes())?;
            self.file.write_all(b"\n")?;
            self.file.sync_data()
        })();
        written.with_context(|| format!("writing {}", self.path.display()))
    }
}

/// What an agent left in the file: nothing usable reads as nothing held (an
/// older agent wrote no JSON, a crash may have left it empty).
fn read(file: &mut File) -> Held {
    let mut text = String::new();
    if file.seek(SeekFrom::Start(0)).is_err() || file.read_to_string(&mut text).is_err() {
        return Held::default();
    }
    serde_json::from_str(text.trim()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Other tests of this process fork children: until a child execs (the
    /// descriptor is close-on-exec) it shares the lock, so a lock just
    /// released may take a moment to be free.
    fn acquire_once_free(path: &Path) -> InterfaceLock {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            match InterfaceLock::acquire(path, "eth9") {
                Ok(lock) => return lock,
                Err(e) if std::time::Instant::now() > deadline => panic!("{e:#}"),
                Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
            }
        }
    }

    #[test]
    fn a_second_agent_is_refused_with_the_first_ones_pid_and_restores_carry_over() {
        let dir = std::env::temp_dir().join(format!("alwayson-lock-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("eth9.lock");
        let mut first = InterfaceLock::acquire(&path, "eth9").unwrap();
        first.remember(Path::new("/proc/sys/x"), "0").unwrap();
        first.remember(Path::new("/proc/sys/x"), "1").unwrap();

        // flock locks belong to the open file: a second open in this process conflicts too.
        let refused = InterfaceLock::acquire(&path, "eth9").err().unwrap().to_string();
        let pid = std::process::id();
        assert!(refused.contains(&format!("(pid {pid}) is running on interface eth9")), "{refused}");

        drop(first);
        let mut second = acquire_once_free(&path);
        let restores = second.take_restores().unwrap();
        assert_eq!(restores.into_iter().collect::<Vec<_>>(), [(PathBuf::from("/proc/sys/x"), "0".into())]);
        drop(second);
        let mut third = acquire_once_free(&path);
        assert!(third.take_restores().unwrap().is_empty(), "restored settings were handed over once");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
