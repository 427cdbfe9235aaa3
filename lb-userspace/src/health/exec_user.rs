//! Exec checks run as an unprivileged user (`global.check_user`, default
//! `nobody`): a check command is the operator's, but it runs every `inter`
//! and nothing in it needs the agent's root.

use std::ffi::CString;

use anyhow::{bail, Result};

/// Who exec checks run as: `None` runs them as the agent itself (when it is
/// not root, or `check_user` names root).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
}

impl ExecUser {
    /// Looks `name` up in the host's user database.
    pub fn lookup(name: &str) -> Result<Option<Self>> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(None);
        }
        let c_name = CString::new(name)?;
        let mut entry: libc::passwd = unsafe { std::mem::zeroed() };
        let mut found: *mut libc::passwd = std::ptr::null_mut();
        let mut buf = vec![0u8; 4096];
        // SAFETY: getpwnam_r with a zeroed entry, a buffer of its stated size and an out pointer.
        let rc = unsafe {
            libc::getpwnam_r(c_name.as_ptr(), &mut entry, buf.as_mut_ptr().cast(), buf.len(), &mut found)
        };
        if rc != 0 || found.is_null() {
            bail!("global.check_user = {name:?}: no such user on this host (exec checks run as it)");
        }
        if entry.pw_uid == 0 {
            tracing::warn!(
                "global.check_user = {name:?} is root: exec checks run with the agent's privileges"
            );
            return Ok(None);
        }
        Ok(Some(Self { uid: entry.pw_uid, gid: entry.pw_gid }))
    }
}
