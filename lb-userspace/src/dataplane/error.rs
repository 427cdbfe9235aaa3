//! What can go wrong in the data plane, and the map errors said in the map's name.

use std::{io, path::PathBuf};

use aya::{maps::MapError, programs::ProgramError, EbpfError};
use lb_common::maps::{SizedBy, SIZED_MAPS};

#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    #[error("loading the eBPF object: {0}")]
    Load(#[from] EbpfError),
    #[error("program {name}: {source}")]
    Program { name: &'static str, source: ProgramError },
    #[error("map {name}: {source}")]
    Map { name: &'static str, source: MapError },
    #[error("map {0} is missing from the eBPF object")]
    MissingMap(&'static str),
    #[error("program {0} is missing from the eBPF object")]
    MissingProgram(&'static str),
    #[error("map {0} has an unexpected type")]
    WrongMapType(&'static str),
    #[error("counting CPUs: {0}")]
    Cpus(io::Error),
    #[error("a second descriptor of map {name}: {source}")]
    Dup { name: &'static str, source: io::Error },
    #[error("mapping {name} into memory: {source}")]
    Mmap { name: &'static str, source: io::Error },
    #[error("{what} {index} is out of range (the map holds {max})")]
    OutOfRange { what: &'static str, index: u32, max: u32 },
    #[error("max_vips {max_vips} × ring_size {ring_size} exceeds the ring map's limit of {limit} slots")]
    RingTooLarge { max_vips: u32, ring_size: u32, limit: u64 },
    #[error("bpffs is needed for {path}: {source} (mount it: mount -t bpf bpf /sys/fs/bpf)")]
    Bpffs { path: PathBuf, source: io::Error },
    #[error("pin directory {path}: {source}")]
    PinDir { path: PathBuf, source: io::Error },
    #[error("pinning {path}: {message}")]
    Pin { path: PathBuf, message: String },
    #[error("pinned link {path}: {source}")]
    Link { path: PathBuf, source: aya::programs::links::LinkError },
    #[error(
        "the data plane pinned at {pin_dir} runs with {field} = {running}, the config asks for {wanted}; \
         changing it needs new maps: restart with --fresh (drops the connection table)"
    )]
    SettingsChanged { field: &'static str, running: u64, wanted: u64, pin_dir: PathBuf },
    #[error(
        "the data plane pinned at {pin_dir} has maps of another layout (an older build's); \
         restart with --fresh (drops the connection table)"
    )]
    LayoutChanged { pin_dir: PathBuf },
    #[error("attaching XDP ({mode}) to {interface}: {source}")]
    Attach { interface: String, mode: &'static str, source: ProgramError },
    #[error(
        "attaching XDP ({mode}) to {interface}: it (or a device above it) already runs another XDP \
         program, by a link or by netlink (`ip link set dev {interface} xdp …`); the agent replaces \
         only the link it pinned, so detach that program first"
    )]
    Occupied { interface: String, mode: &'static str, source: io::Error },
}

pub(super) type Result<T, E = DataplaneError> = std::result::Result<T, E>;

/// A map the kernel refused to create at load, and what sizes it.
#[derive(Debug)]
pub struct RefusedMap<'a> {
    pub name: &'a str,
    pub sized_by: SizedBy,
    pub reason: &'a io::Error,
}

impl DataplaneError {
    /// The sized map the kernel refused to create, if that is what went wrong
    /// (too large for the kernel's limits or the memory it has).
    pub fn refused_map(&self) -> Option<RefusedMap<'_>> {
        let DataplaneError::Load(EbpfError::MapError(MapError::CreateError { name, io_error })) = self else {
            return None;
        };
        let (_, sized_by) = SIZED_MAPS.iter().find(|(n, _)| n == name)?;
        Some(RefusedMap { name, sized_by: *sized_by, reason: io_error })
    }
}

pub(super) fn map_err(name: &'static str) -> impl FnOnce(MapError) -> DataplaneError {
    move |source| DataplaneError::Map { name, source }
}

/// A lookup's value, `None` if the key is not there.
pub(super) fn found<T>(lookup: Result<T, MapError>, name: &'static str) -> Result<Option<T>> {
    match lookup {
        Ok(value) => Ok(Some(value)),
        Err(MapError::KeyNotFound) => Ok(None),
        Err(source) => Err(DataplaneError::Map { name, source }),
    }
}
