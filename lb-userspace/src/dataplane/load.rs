//! Getting a data plane: loaded fresh (tests), or pinned under bpffs and
//! attached to an interface — adopting what a previous agent left running, so a
//! restart keeps the connection table and never stops forwarding.

use std::{
    ffi::{CStr, OsStr},
    io,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use aya::{
    maps::{Array, Map, MapData, MapError},
    programs::{
        links::{FdLink, LinkError, PinnedLink},
        ProgramError, Xdp, XdpError, XdpMode as KernelMode,
    },
    sys::SyscallError,
    Ebpf, EbpfLoader,
};
use lb_common::{
    maps::{self as names, SIZED_MAPS},
    sizes::MAX_RING_ENTRIES,
    types::{FLAG_NAT, FLAG_RECORD_EVERY_FLOW, LAYOUT_VERSION},
    DataplaneConfig,
};

use super::{Dataplane, DataplaneError, LoadSettings, BALANCER_OBJECT};

/// `statfs` magic of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Where bpffs is mounted when the pin directory is not on one.
const BPFFS_ROOT: &CStr = c"/sys/fs/bpf";
/// The pinned XDP link, beside the maps.
pub(super) const LINK_PIN: &str = "link";

/// How a program is attached to its interface.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttachMode {
    /// In the driver: fast, if the driver supports XDP.
    Native,
    /// In the generic network stack: works everywhere, slower.
    Generic,
    /// Native, falling back to generic with a warning.
    Auto,
}

/// Where and how to run a pinned, attached data plane.
#[derive(Clone, Debug)]
pub struct PinnedOptions {
    pub settings: LoadSettings,
    /// Directory on bpffs holding the maps and the link.
    pub pin_dir: PathBuf,
    pub interface: String,
    /// How the program is attached (`Auto`: native, falling back to generic with a warning).
    pub mode: AttachMode,
    /// Swap this build's program in (atomically) even if one is running.
    pub replace: bool,
    /// Start from empty maps even if pinned ones exist (drops the connection table).
    pub fresh: bool,
}

/// What `open` found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// Nothing was running: loaded, attached and pinned.
    Attached { generic_fallback: bool },
    /// A data plane was running: its maps and program were adopted as they are.
    Adopted,
    /// A data plane was running: its maps were adopted and this build's program swapped in.
    Replaced,
    /// The pinned link attached nothing useful any more (its interface was
    /// deleted or re-created, or it is on another interface): the maps were
    /// adopted and this build's program attached with a new link, pinned in
    /// its place.
    Reattached { generic_fallback: bool },
}

impl LoadSettings {
    pub(super) fn config(&self) -> DataplaneConfig {
        DataplaneConfig {
            ring_size: self.ring_size,
            hash_seed: self.hash_seed,
            max_vips: self.max_vips,
            max_backends: self.max_backends,
            conn_table_size: self.conn_table_size,
            layout: LAYOUT_VERSION,
            flags: if self.recording.every_flow { FLAG_RECORD_EVERY_FLOW } else { 0 }
                | if self.nat { FLAG_NAT } else { 0 },
            record_limit: self.recording.limit,
            tunnel: self.tunnel,
            too_big_limit: self.too_big_limit,
            nat_table_size: self.nat_table_size,
        }
    }

    /// The first setting in which these differ from `before`: (name, before, now).
    pub fn changed_from(&self, before: &LoadSettings) -> Option<(&'static str, u64, u64)> {
        self.difference(&before.config())
    }

    /// The first setting in which a running data plane differs from this one.
    fn difference(&self, running: &DataplaneConfig) -> Option<(&'static str, u64, u64)> {
        let wanted = self.config();
        [
            ("layout version", running.layout, wanted.layout),
            ("ring_size", running.ring_size, wanted.ring_size),
            ("hash_seed", running.hash_seed, wanted.hash_seed),
            ("max_vips", running.max_vips, wanted.max_vips),
            ("max_backends", running.max_backends, wanted.max_backends),
            ("conn_table_size", running.conn_table_size, wanted.conn_table_size),
            ("nat_table_size", running.nat_table_size, wanted.nat_table_size),
        ]
        .into_iter()
        .find(|(_, r, w)| r != w)
        .map(|(field, r, w)| (field, u64::from(r), u64::from(w)))
    }
}

fn loader(settings: &LoadSettings, pin_dir: Option<&Path>) -> Result<Ebpf, DataplaneError> {
    let ring_slots = u64::from(settings.max_vips) * u64::from(settings.ring_size);
    if ring_slots > MAX_RING_ENTRIES {
        return Err(DataplaneError::RingTooLarge {
            max_vips: settings.max_vips,
            ring_size: settings.ring_size,
            limit: MAX_RING_ENTRIES,
        });
    }
    let mut loader = EbpfLoader::new();
    // aya-log's level, fixed at load: below debug the program's notices cost one compare.
    let level = if settings.kernel_debug { aya_log::Level::Debug } else { aya_log::Level::Info } as u8;
    loader.override_global(aya_log::LEVEL, &level, true);
    for (name, sized_by) in SIZED_MAPS {
        loader.map_max_entries(name, settings.entries(sized_by));
    }
    if let Some(dir) = pin_dir {
        for name in names::ALL {
            loader.map_pin_path(name, dir.join(name));
        }
    }
    let mut ebpf = loader.load(BALANCER_OBJECT)?;
    load_xdp(&mut ebpf, names::PROGRAM)?;
    Ok(ebpf)
}

/// Program `name` of `ebpf`, as XDP, to load or attach.
pub(super) fn xdp_mut<'e>(ebpf: &'e mut Ebpf, name: &'static str) -> Result<&'e mut Xdp, DataplaneError> {
    let program = ebpf.program_mut(name).ok_or(DataplaneError::MissingProgram(name))?;
    program.try_into().map_err(|source| DataplaneError::Program { name, source })
}

/// Program `name` of `ebpf` loaded into the kernel (verified), attached nowhere yet.
pub(super) fn load_xdp<'e>(ebpf: &'e mut Ebpf, name: &'static str) -> Result<&'e mut Xdp, DataplaneError> {
    let program = xdp_mut(ebpf, name)?;
    program.load().map_err(|source| DataplaneError::Program { name, source })?;
    Ok(program)
}

impl Dataplane {
    /// Loads the balancer with fresh, unpinned maps, attached nowhere (for
    /// `BPF_PROG_TEST_RUN` and benchmarks).
    pub fn load(settings: LoadSettings) -> Result<Self, DataplaneError> {
        let ebpf = loader(&settings, None)?;
        Self::from_ebpf(ebpf, settings, None)
    }

    /// Runs the balancer on `options.interface` with maps pinned in
    /// `options.pin_dir`. A data plane already pinned there is adopted: its maps
    /// (connection table included) stay, and its program keeps running unless
    /// `replace` asks for this build's program, which is swapped in atomically.
    pub fn open(options: &PinnedOptions) -> Result<(Self, Opened), DataplaneError> {
        let dir = options.pin_dir.as_path();
        ensure_bpffs(dir)?;
        if options.fresh {
            remove_pins(dir, &names::ALL)?;
        }
        if let Some(running) = running_config(dir)? {
            if let Some((field, running, wanted)) = options.settings.difference(&running) {
                return Err(DataplaneError::SettingsChanged {
                    field,
                    running,
                    wanted,
                    pin_dir: dir.to_owned(),
                });
            }
        }
        std::fs::create_dir_all(dir)
            .map_err(|source| DataplaneError::PinDir { path: dir.to_owned(), source })?;

        let mut ebpf = loader(&options.settings, Some(dir))?;
        let link_path = dir.join(LINK_PIN);
        let interface = options.interface.as_str();
        let opened = if link_path.exists() {
            match stale_link(&link_path, interface)? {
                Some(why) => {
                    tracing::warn!(
                        "the pinned XDP link {} {why}: attaching this agent's program to {interface} \
                         with a new link in its place (the pinned maps, connection table included, \
                         are kept)",
                        link_path.display()
                    );
                    let (link, generic_fallback) = attach_balancer(&mut ebpf, options, &link_path)?;
                    // Attached before the old pin goes, so a failure leaves the old pin as
                    // it was. Should unpinning or pinning fail, the new link closes with
                    // this process's last descriptor of it, and the next agent attaches.
                    std::fs::remove_file(&link_path).map_err(|e| DataplaneError::Pin {
                        path: link_path.clone(),
                        message: format!("removing the old pin: {e}"),
                    })?;
                    pin(link, &link_path)?;
                    Opened::Reattached { generic_fallback }
                }
                None if options.replace => {
                    swap_program(&mut ebpf, &link_path)?;
                    Opened::Replaced
                }
                None => Opened::Adopted,
            }
        } else {
            let (link, generic_fallback) = attach_balancer(&mut ebpf, options, &link_path)?;
            pin(link, &link_path)?;
            Opened::Attached { generic_fallback }
        };
        let mut dataplane = Self::from_ebpf(ebpf, options.settings, Some(dir.to_owned()))?;
        if matches!(opened, Opened::Reattached { .. }) {
            // Cached next hops may name the old interface's ifindex (gone, or another
            // device); the program would trust them for up to NEXTHOP_TTL_NS.
            for (slot, _) in dataplane.backend_entries()? {
                dataplane.forget_next_hop(slot)?;
            }
        }
        Ok((dataplane, opened))
    }

    /// Stops managing the data plane. `keep_running`: leave the program attached
    /// and the maps pinned, so traffic flows on and the next agent adopts them.
    /// Otherwise detach the program and remove every pin.
    pub fn close(self, keep_running: bool) -> Result<(), DataplaneError> {
        let Some(dir) = self.pin_dir.clone() else { return Ok(()) };
        drop(self);
        if keep_running {
            return Ok(());
        }
        remove_pins(&dir, &names::ALL)
    }
}

/// The program behind the pinned link.
pub(super) fn attached_program_id(dir: &Path) -> Result<u32, DataplaneError> {
    let path = dir.join(LINK_PIN);
    let err = |source| DataplaneError::Link { path: path.clone(), source };
    let link = FdLink::from(PinnedLink::from_pin(&path).map_err(err)?);
    Ok(link.info().map_err(err)?.program_id())
}

/// The ifindex the link pinned in `dir` attaches the data plane to; 0 once
/// that interface is gone.
pub fn attached_ifindex(dir: &Path) -> Result<u32, DataplaneError> {
    let path = dir.join(LINK_PIN);
    link_ifindex(&path).map_err(|source| DataplaneError::Link { path, source })
}

/// The `CONFIG` entry of a pinned data plane, if there is one.
fn running_config(dir: &Path) -> Result<Option<DataplaneConfig>, DataplaneError> {
    let path = dir.join(names::CONFIG);
    if !path.exists() {
        return Ok(None);
    }
    let err = |source| DataplaneError::Map { name: names::CONFIG, source };
    let data = MapData::from_pin(&path).map_err(err)?;
    let config: Array<MapData, DataplaneConfig> = match Array::try_from(Map::Array(data)) {
        Ok(config) => config,
        // An older layout's CONFIG cannot even be read as this one's.
        Err(MapError::InvalidValueSize { .. }) => {
            return Err(DataplaneError::LayoutChanged { pin_dir: dir.to_owned() })
        }
        Err(e) => return Err(err(e)),
    };
    let running = config.get(&0, 0).map_err(err)?;
    // An agent that died between creating the maps and writing CONFIG left zeros: nothing to keep.
    Ok((running.ring_size != 0).then_some(running))
}

/// Why the pinned link at `link_path` does not run the data plane on
/// `interface` (in this process's network namespace), or `None` if it does.
pub(super) fn stale_link(link_path: &Path, interface: &str) -> Result<Option<String>, DataplaneError> {
    let attached_to = link_ifindex(link_path)
        .map_err(|source| DataplaneError::Link { path: link_path.to_owned(), source })?;
    let wanted = std::ffi::CString::new(interface)
        .ok()
        // SAFETY: a valid C string.
        .map(|name| unsafe { libc::if_nametoindex(name.as_ptr()) })
        .unwrap_or(0);
    Ok(match attached_to {
        0 => Some(
            "is attached to no interface (the one it was on is gone, deleted or re-created by a \
             driver reload or a reset, or the link was detached), so nothing runs the data plane"
                .to_string(),
        ),
        ifindex if ifindex != wanted => {
            let name = interface_name(ifindex)
                .unwrap_or_else(|| "not an interface of this network namespace".to_string());
            let ours =
                if wanted == 0 { "which does not exist".to_string() } else { format!("ifindex {wanted}") };
            Some(format!(
                "is attached to ifindex {ifindex} ({name}), not to {interface} ({ours}); it will be \
                 detached from there"
            ))
        }
        _ => None,
    })
}

/// The name of interface `ifindex` in this process's network namespace.
fn interface_name(ifindex: u32) -> Option<String> {
    let mut name = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: the buffer holds IF_NAMESIZE bytes, as if_indextoname needs.
    let found = unsafe { libc::if_indextoname(ifindex, name.as_mut_ptr()) };
    // SAFETY: on success if_indextoname wrote a NUL-terminated name into the buffer.
    (!found.is_null()).then(|| unsafe { CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned())
}

/// The ifindex the XDP link pinned at `path` is attached to, 0 once its
/// device is gone (the kernel says so in the link's fdinfo; aya's `LinkInfo`
/// does not carry it).
fn link_ifindex(path: &Path) -> Result<u32, LinkError> {
    let fd = open_pin(path).map_err(|io_error| SyscallError { call: "BPF_OBJ_GET", io_error })?;
    let fdinfo = format!("/proc/self/fdinfo/{}", std::os::fd::AsRawFd::as_raw_fd(&fd));
    let info = std::fs::read_to_string(&fdinfo)
        .map_err(|io_error| SyscallError { call: "reading the link's fdinfo", io_error })?;
    let field =
        |name: &str| info.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(':')).map(str::trim);
    if field("link_type") != Some("xdp") {
        return Err(LinkError::InvalidLink);
    }
    field("ifindex").and_then(|v| v.parse().ok()).ok_or(LinkError::InvalidLink)
}

/// `BPF_OBJ_GET`: a descriptor of the object pinned at `path` (aya keeps the
/// one of a `PinnedLink` to itself).
fn open_pin(path: &Path) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd as _;
    /// The `BPF_OBJ_GET` part of `union bpf_attr`.
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
    }
    const BPF_OBJ_GET: libc::c_long = 7;
    let path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let attr = ObjGet { pathname: path.as_ptr() as u64, bpf_fd: 0, file_flags: 0 };
    // SAFETY: `attr` and the path it points to outlive the call; the kernel
    // reads `size_of::<ObjGet>()` bytes of it.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_OBJ_GET, &attr as *const ObjGet, size_of::<ObjGet>() as u32)
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor, owned by nothing else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) })
}

/// The balancer of `ebpf` attached to `options.interface` in `options.mode`.
fn attach_balancer(
    ebpf: &mut Ebpf,
    options: &PinnedOptions,
    link_path: &Path,
) -> Result<(FdLink, bool), DataplaneError> {
    let program = xdp_mut(ebpf, names::PROGRAM)?;
    attach(program, names::PROGRAM, &options.interface, options.mode, link_path)
}

/// Attaches `program` (called `name`) with a new link, to be pinned at
/// `link_path`. Returns it, and whether `Auto` fell back to generic mode.
pub(super) fn attach(
    program: &mut Xdp,
    name: &'static str,
    interface: &str,
    mode: AttachMode,
    link_path: &Path,
) -> Result<(FdLink, bool), DataplaneError> {
    let try_attach = |program: &mut Xdp, kernel_mode: KernelMode| {
        let mode = if kernel_mode == KernelMode::Skb { "generic" } else { "native" };
        let interface = interface.to_owned();
        program.attach(&interface, kernel_mode).map_err(|source| match occupied(&source) {
            Some(source) => DataplaneError::Occupied { interface, mode, source },
            None => DataplaneError::Attach { interface, mode, source },
        })
    };
    let (id, fallback) = match mode {
        AttachMode::Native => (try_attach(program, KernelMode::Driver)?, false),
        AttachMode::Generic => (try_attach(program, KernelMode::Skb)?, false),
        AttachMode::Auto => match try_attach(program, KernelMode::Driver) {
            Ok(id) => (id, false),
            // Generic mode would meet the same program: falling back would only hide why.
            Err(occupied @ DataplaneError::Occupied { .. }) => return Err(occupied),
            Err(native) => {
                tracing::warn!("native XDP attach failed ({native}); falling back to generic mode");
                (try_attach(program, KernelMode::Skb)?, true)
            }
        },
    };
    let link = program.take_link(id).map_err(|source| DataplaneError::Program { name, source })?;
    // Only a bpf_link can be pinned; aya attaches by netlink where the kernel has no XDP links.
    let link = FdLink::try_from(link)
        .map_err(|source| DataplaneError::Link { path: link_path.to_owned(), source })?;
    Ok((link, fallback))
}

/// The kernel's answer if attaching failed because the interface (or a device
/// above it) already runs another XDP program: `EBUSY` for one in the same
/// mode, by a link or by netlink; `EEXIST` for one in the other mode or on an
/// upper device.
fn occupied(error: &ProgramError) -> Option<io::Error> {
    let errno = match error {
        ProgramError::SyscallError(e) => e.io_error.raw_os_error(),
        ProgramError::XdpError(XdpError::NetlinkError(e)) => e.raw_os_error(),
        _ => None,
    };
    errno.filter(|e| [libc::EBUSY, libc::EEXIST].contains(e)).map(io::Error::from_raw_os_error)
}

pub(super) fn pin(link: FdLink, link_path: &Path) -> Result<(), DataplaneError> {
    link.pin(link_path)
        .map_err(|e| DataplaneError::Pin { path: link_path.to_owned(), message: e.to_string() })?;
    Ok(())
}

/// Swaps this build's program into the pinned link (`bpf_link_update`: no packet sees no program).
fn swap_program(ebpf: &mut Ebpf, link_path: &Path) -> Result<(), DataplaneError> {
    let link_err = |source| DataplaneError::Link { path: link_path.to_owned(), source };
    let pinned = PinnedLink::from_pin(link_path).map_err(link_err)?;
    let link = aya::programs::xdp::XdpLink::try_from(FdLink::from(pinned)).map_err(link_err)?;
    let program = xdp_mut(ebpf, names::PROGRAM)?;
    // The program now holds an fd of the link; dropping it only closes that fd,
    // the pin keeps the link (and the program) attached.
    program
        .attach_to_link(link)
        .map_err(|source| DataplaneError::Program { name: names::PROGRAM, source })?;
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else { return false };
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid C string and a zeroed statfs buffer.
    unsafe { libc::statfs(c.as_ptr(), &mut stat) == 0 && stat.f_type as i64 == BPF_FS_MAGIC }
}

/// Pins need bpffs: mount it at /sys/fs/bpf if the pin directory is not on one.
pub(super) fn ensure_bpffs(dir: &Path) -> Result<(), DataplaneError> {
    let existing = dir.ancestors().find(|p| p.exists()).unwrap_or(Path::new("/"));
    if is_bpffs(existing) {
        return Ok(());
    }
    let root = Path::new(OsStr::from_bytes(BPFFS_ROOT.to_bytes()));
    if !dir.starts_with(root) {
        return Err(DataplaneError::Bpffs {
            path: dir.to_owned(),
            source: io::Error::other(format!("{} is not on a bpf filesystem", existing.display())),
        });
    }
    let (src, fstype) = (c"bpf", c"bpf");
    // SAFETY: static C strings; no data argument.
    let rc = unsafe { libc::mount(src.as_ptr(), BPFFS_ROOT.as_ptr(), fstype.as_ptr(), 0, std::ptr::null()) };
    if rc != 0 {
        return Err(DataplaneError::Bpffs { path: dir.to_owned(), source: io::Error::last_os_error() });
    }
    tracing::info!("mounted bpffs at {}", root.display());
    Ok(())
}

/// Detaches (by unpinning the link, whose last reference it holds) and removes
/// the pinned `maps` and the directory.
pub(super) fn remove_pins(dir: &Path, maps: &[&str]) -> Result<(), DataplaneError> {
    let err = |source| DataplaneError::PinDir { path: dir.to_owned(), source };
    let link_path = dir.join(LINK_PIN);
    if link_path.exists() {
        std::fs::remove_file(&link_path).map_err(err)?;
    }
    for name in maps {
        match std::fs::remove_file(dir.join(name)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(err(e)),
    }
}
