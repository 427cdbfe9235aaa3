//! The `decap` program on a backend's interface (`alwayson decap`): loaded,
//! attached and pinned as the balancer is (the same bpffs, attach, pin and
//! stale-link code), so it keeps stripping tunnels once the command exits;
//! its counters read from the pin; detached by removing the pins.

use std::path::{Path, PathBuf};

use aya::{
    maps::{Map, MapData, PerCpuArray},
    EbpfLoader,
};
use lb_common::{maps as names, DecapCounter};

use super::{
    load::{attach, ensure_bpffs, load_xdp, pin, remove_pins, stale_link, AttachMode, LINK_PIN},
    map_err, DataplaneError, DECAP_OBJECT,
};

/// Everything pinned beside the link.
const PINNED_MAPS: [&str; 1] = [names::DECAP_COUNTERS];

/// What `attach_decap` found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapAttached {
    /// Loaded, attached and pinned.
    Attached { generic_fallback: bool },
    /// Already running on the interface from this pin directory: left as it is.
    Running,
    /// The pinned link had lost its interface (deleted or re-created): attached again in its place.
    Reattached { generic_fallback: bool },
}

/// Loads `decap`, attaches it to `interface` and pins the link and its
/// counters in `pin_dir`, unless it already runs there.
pub fn attach_decap(
    interface: &str,
    pin_dir: &Path,
    mode: AttachMode,
) -> Result<DecapAttached, DataplaneError> {
    ensure_bpffs(pin_dir)?;
    let link_path = pin_dir.join(LINK_PIN);
    let stale = if link_path.exists() {
        match stale_link(&link_path, interface)? {
            None => return Ok(DecapAttached::Running),
            Some(why) => {
                tracing::warn!("the pinned decap link {} {why}: attaching anew", link_path.display());
                true
            }
        }
    } else {
        false
    };
    std::fs::create_dir_all(pin_dir)
        .map_err(|source| DataplaneError::PinDir { path: pin_dir.to_owned(), source })?;
    let mut loader = EbpfLoader::new();
    // A pinned counter map (of a link gone stale) is reused: its counts go on.
    loader.map_pin_path(names::DECAP_COUNTERS, pin_dir.join(names::DECAP_COUNTERS));
    let mut ebpf = loader.load(DECAP_OBJECT)?;
    let name = names::DECAP_PROGRAM;
    let program = load_xdp(&mut ebpf, name)?;
    let (link, generic_fallback) = match attach(program, name, interface, mode, &link_path) {
        Ok(attached) => attached,
        Err(e) => {
            // Nothing of ours runs: leave no pins behind (a stale link's stay, as found).
            if !stale {
                let _ = remove_pins(pin_dir, &PINNED_MAPS);
            }
            return Err(e);
        }
    };
    if stale {
        std::fs::remove_file(&link_path).map_err(|e| DataplaneError::Pin {
            path: link_path.clone(),
            message: format!("removing the old pin: {e}"),
        })?;
    }
    pin(link, &link_path)?;
    Ok(if stale {
        DecapAttached::Reattached { generic_fallback }
    } else {
        DecapAttached::Attached { generic_fallback }
    })
}

/// The decap counters pinned in `pin_dir`, summed over CPUs, by [`DecapCounter`].
pub fn decap_counters(pin_dir: &Path) -> Result<Vec<(DecapCounter, u64)>, DataplaneError> {
    let name = names::DECAP_COUNTERS;
    let data = MapData::from_pin(pin_dir.join(name)).map_err(map_err(name))?;
    let map: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(Map::PerCpuArray(data)).map_err(map_err(name))?;
    DecapCounter::ALL
        .into_iter()
        .map(|c| Ok((c, map.get(&c.slot(), 0).map_err(map_err(name))?.iter().sum())))
        .collect()
}

/// Detaches the decap program pinned in `pin_dir` (unpinning its link drops
/// the last reference) and removes the pins. False if nothing was pinned there.
pub fn detach_decap(pin_dir: &Path) -> Result<bool, DataplaneError> {
    if !pin_dir.join(LINK_PIN).exists() && !pin_dir.exists() {
        return Ok(false);
    }
    remove_pins(pin_dir, &PINNED_MAPS)?;
    Ok(true)
}

/// Where `alwayson decap` pins for `interface` unless told otherwise: apart
/// from the balancer's pins, so both can run on one host.
pub fn default_decap_pin_dir(interface: &str) -> PathBuf {
    PathBuf::from(format!("/sys/fs/bpf/alwayson-decap/{interface}"))
}
