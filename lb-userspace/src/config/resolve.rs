//! Checks the raw file and builds the resolved config. Checks that compare
//! values (duplicates, counts, DSR rules) skip values that are themselves
//! invalid: those are reported once, where they are written.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    path::Path,
    sync::Arc,
};

use lb_common::sizes::{
    DEFAULT_CONN_TABLE_SIZE, DEFAULT_MAX_BACKENDS, DEFAULT_MAX_VIPS, DEFAULT_RECORD_LIMIT, DEFAULT_RING_SIZE,
    DEFAULT_TOO_BIG_LIMIT, MAX_RING_ENTRIES,
};
use toml::Spanned;

use super::{
    bgp, cluster,
    health::VipChecks,
    listeners::{self, DEFAULT_RUN_DIR},
    nat::{self, NatSettings},
    problems::{labelled, Problems, Shown},
    raw::{RawBackend, RawConfig, RawGlobal, RawVip},
    repeats::{backend_entry, no_repeats, vip_entry, Entry, VipId},
    values::{
        self, choice, duration, entry_name, family, in_range, interface_name, ip, CONN_TABLE_SIZE,
        DEFAULT_FLOW_IDLE_TIMEOUT, DEFAULT_WEIGHT, FLOW_IDLE_TIMEOUT, FLOW_RECORDINGS, FLOW_RECORD_LIMIT,
        ICMP_TOO_BIG_LIMIT, MAX_BACKENDS, MAX_VIPS, ON_ALL_DOWN, PROTOCOLS, TUNNEL_SOURCE_V4,
        TUNNEL_SOURCE_V4_LEN, TUNNEL_SOURCE_V6, TUNNEL_SOURCE_V6_LEN, WEIGHT, XDP_MODES,
    },
    Backend, CheckKind, Config, FlowRecording, Global, Mode, OnAllDown, Problem, Protocol, Vip, XdpMode,
    DEFAULT_CHECK_USER, DEFAULT_HASH_SEED, DEFAULT_PIN_ROOT,
};

pub(super) fn resolve(raw: &RawConfig, text: &str) -> Result<Config, Vec<Problem>> {
    let mut p = Problems::new(text);
    let (global, limits) = global(&raw.global, &mut p);
    let interface = global.as_ref().map(|g| g.interface.clone());
    let api = listeners::api(raw.api.as_ref(), interface.as_deref(), &mut p);
    let web = listeners::web(raw.web.as_ref(), &mut p);
    let bgp = bgp::bgp(raw.bgp.as_ref(), interface.as_deref(), &mut p);
    let cluster = cluster::cluster(raw.cluster.as_ref(), &mut p);
    limits.check_counts(&raw.global, &raw.vip, &mut p);
    let nat = global.as_ref().map(|g| &g.nat);
    let vips: Vec<Option<Vip>> = raw
        .vip
        .iter()
        .enumerate()
        .map(|(i, vip)| resolve_vip(i, vip, limits.ring_size, nat, &mut p))
        .collect();
    let entries: Vec<Entry<VipId>> = raw.vip.iter().enumerate().map(|(i, vip)| vip_entry(i, vip)).collect();
    no_repeats(&entries, "duplicate VIP: same address, port and protocol as", &mut p);
    no_backend_is_a_vip(&raw.vip, &mut p);
    p.finish(|| {
        let vips = vips.into_iter().map(|v| v.map(Arc::new)).collect::<Option<_>>()?;
        Some(Config { global: global?, api: api?, web: web?, bgp: bgp?, cluster: cluster?, vips })
    })
}

/// A backend on any VIP's address, whatever the port, protocol or mode: packets
/// sent to it go where the VIP's go, which is back to a balancer (DSR leaves
/// the VIP as their destination anyway), never to a server.
fn no_backend_is_a_vip(vips: &[RawVip], p: &mut Problems) {
    let mut owners: HashMap<IpAddr, String> = HashMap::new();
    for (i, vip) in vips.iter().enumerate() {
        if let Ok(address) = ip(vip.address.get_ref()) {
            owners.entry(address).or_insert_with(|| labelled(format!("vip[{i}]"), vip.name.as_ref()));
        }
    }
    for (i, vip) in vips.iter().enumerate() {
        let at = labelled(format!("vip[{i}]"), vip.name.as_ref());
        for (j, backend) in vip.backend.iter().enumerate() {
            let raw = &backend.address;
            let Some(owner) = ip(raw.get_ref()).ok().and_then(|address| owners.get(&address)) else {
                continue;
            };
            let field = format!("{}.address", labelled(format!("{at}.backend[{j}]"), backend.name.as_ref()));
            let reason = format!(
                "the address of {owner}: a VIP address cannot be a backend, \
                 its packets would come back to the balancer"
            );
            p.add(field, raw.get_ref().shown(), reason, Some(raw.span()));
        }
    }
}

/// The sizes that VIP and backend counts are compared with; `None` when invalid.
struct Limits {
    ring_size: Option<u32>,
    max_vips: Option<u32>,
    max_backends: Option<u32>,
}

fn global(raw: &RawGlobal, p: &mut Problems) -> (Option<Global>, Limits) {
    let field = |name: &str| format!("global.{name}");
    let interface = p.check(field("interface"), &raw.interface, |s| interface_name(s));
    let xdp_mode =
        p.check_or(field("xdp_mode"), raw.xdp_mode.as_ref(), XdpMode::Auto, |s| choice(s, XDP_MODES));
    let hash_seed = p.check_or(
        field("hash_seed"),
        raw.hash_seed.as_ref(),
        DEFAULT_HASH_SEED,
        in_range(0..=u32::MAX.into()),
    );
    let ring_size =
        p.check_or(field("ring_size"), raw.ring_size.as_ref(), DEFAULT_RING_SIZE, values::ring_size);
    let max_vips = p.check_or(field("max_vips"), raw.max_vips.as_ref(), DEFAULT_MAX_VIPS, in_range(MAX_VIPS));
    let max_backends = p.check_or(
        field("max_backends"),
        raw.max_backends.as_ref(),
        DEFAULT_MAX_BACKENDS,
        in_range(MAX_BACKENDS),
    );
    let conn_table_size = p.check_or(
        field("conn_table_size"),
        raw.conn_table_size.as_ref(),
        DEFAULT_CONN_TABLE_SIZE,
        in_range(CONN_TABLE_SIZE),
    );
    let flow_recording =
        p.check_or(field("flow_recording"), raw.flow_recording.as_ref(), FlowRecording::ChangedSlots, |s| {
            choice(s, FLOW_RECORDINGS)
        });
    let flow_record_limit = p.check_or(
        field("flow_record_limit"),
        raw.flow_record_limit.as_ref(),
        DEFAULT_RECORD_LIMIT,
        in_range(FLOW_RECORD_LIMIT),
    );
    let flow_idle_timeout = p.check_or(
        field("flow_idle_timeout"),
        raw.flow_idle_timeout.as_ref(),
        DEFAULT_FLOW_IDLE_TIMEOUT,
        duration(FLOW_IDLE_TIMEOUT),
    );
    let pin_path = match &raw.pin_path {
        Some(path) => p.check(field("pin_path"), path, |s| values::pin_path(s)),
        None => interface.as_ref().map(|name| Path::new(DEFAULT_PIN_ROOT).join(name)),
    };
    let lock_file = match &raw.lock_file {
        Some(path) => p.check(field("lock_file"), path, |s| values::absolute(s)),
        None => interface.as_ref().map(|name| Path::new(DEFAULT_RUN_DIR).join(format!("{name}.lock"))),
    };
    let check_user =
        p.check_or(field("check_user"), raw.check_user.as_ref(), DEFAULT_CHECK_USER.into(), |s| {
            values::user_name(s)
        });
    let tunnel_source_v4 =
        p.check_or(field("tunnel_source_v4"), raw.tunnel_source_v4.as_ref(), TUNNEL_SOURCE_V4, |s| {
            values::tunnel_source(s, TUNNEL_SOURCE_V4, TUNNEL_SOURCE_V4_LEN)
        });
    let tunnel_source_v6 =
        p.check_or(field("tunnel_source_v6"), raw.tunnel_source_v6.as_ref(), TUNNEL_SOURCE_V6, |s| {
            values::tunnel_source(s, TUNNEL_SOURCE_V6, TUNNEL_SOURCE_V6_LEN)
        });
    let nat = nat::global(raw, p);
    let icmp_too_big_limit = p.check_or(
        field("icmp_too_big_limit"),
        raw.icmp_too_big_limit.as_ref(),
        DEFAULT_TOO_BIG_LIMIT,
        in_range(ICMP_TOO_BIG_LIMIT),
    );
    check_ring_entries(raw, max_vips, ring_size, p);
    let global = (|| {
        Some(Global {
            interface: interface?,
            xdp_mode: xdp_mode?,
            hash_seed: hash_seed?,
            ring_size: ring_size?,
            max_vips: max_vips?,
            max_backends: max_backends?,
            conn_table_size: conn_table_size?,
            flow_recording: flow_recording?,
            flow_record_limit: flow_record_limit?,
            flow_idle_timeout: flow_idle_timeout?,
            pin_path: pin_path?,
            set_forwarding: raw.set_forwarding.unwrap_or(true),
            lock_file: lock_file?,
            check_user: check_user?,
            tunnel_source_v4: tunnel_source_v4?,
            tunnel_source_v6: tunnel_source_v6?,
            nat: nat?,
            icmp_too_big_limit: icmp_too_big_limit?,
        })
    })();
    (global, Limits { ring_size, max_vips, max_backends })
}

/// Every VIP's ring lives in one array map of `max_vips × ring_size` slots.
fn check_ring_entries(raw: &RawGlobal, max_vips: Option<u32>, ring_size: Option<u32>, p: &mut Problems) {
    let (Some(vips), Some(size)) = (max_vips, ring_size) else { return };
    let slots = u64::from(vips) * u64::from(size);
    if slots > MAX_RING_ENTRIES {
        let span = raw.max_vips.as_ref().or(raw.ring_size.as_ref()).map(Spanned::span);
        p.add(
            "global.max_vips × global.ring_size".into(),
            format!("{vips} × {size} = {slots}"),
            format!("more ring slots than the ring map can hold ({MAX_RING_ENTRIES}): lower max_vips or ring_size"),
            span,
        );
    }
}

impl Limits {
    /// The file must fit the maps: VIP slots and backend slots over all VIPs.
    fn check_counts(&self, global: &RawGlobal, vips: &[RawVip], p: &mut Problems) {
        let span = |raw: &Option<Spanned<i64>>| raw.as_ref().map(Spanned::span);
        if let Some(max) = self.max_vips.filter(|&max| vips.len() > max as usize) {
            let reason = format!("more VIPs than global.max_vips = {max}");
            p.add("vip".into(), format!("{} VIPs", vips.len()), reason, span(&global.max_vips));
        }
        let backends: usize = vips.iter().map(|vip| vip.backend.len()).sum();
        if let Some(max) = self.max_backends.filter(|&max| backends > max as usize) {
            let reason = format!("more backends over all VIPs than global.max_backends = {max}");
            p.add(
                "vip[*].backend".into(),
                format!("{backends} backends"),
                reason,
                span(&global.max_backends),
            );
        }
    }
}

fn resolve_vip(
    i: usize,
    raw: &RawVip,
    ring_size: Option<u32>,
    nat: Option<&NatSettings>,
    p: &mut Problems,
) -> Option<Vip> {
    let at = labelled(format!("vip[{i}]"), raw.name.as_ref());
    let name = raw.name.as_ref().map(|name| p.check(format!("{at}.name"), name, |s| entry_name(s)));
    let address = p.check(format!("{at}.address"), &raw.address, |s| ip(s));
    let port = p.check(format!("{at}.port"), &raw.port, in_range(0..=u16::MAX.into()));
    let protocol =
        p.check_or(format!("{at}.protocol"), raw.protocol.as_ref(), Protocol::Tcp, |s| choice(s, PROTOCOLS));
    let mode = p.check_or(format!("{at}.mode"), raw.mode.as_ref(), Mode::Dsr, |s| values::mode(s));
    let nat_address = nat::vip_address(&at, raw, address, mode, nat, p);
    let on_all_down =
        p.check_or(format!("{at}.on_all_down"), raw.on_all_down.as_ref(), OnAllDown::Drop, |s| {
            choice(s, ON_ALL_DOWN)
        });
    let default_check = if protocol == Some(Protocol::Udp) { CheckKind::None } else { CheckKind::Tcp };
    let mut checks = VipChecks::new(&at, raw.check_keys(), default_check, p);
    if let Some(size) = ring_size.filter(|&size| raw.backend.len() > size as usize) {
        let reason = format!("more backends than global.ring_size = {size}: each needs a ring slot");
        p.add(format!("{at}.backend"), format!("{} backends", raw.backend.len()), reason, None);
    }
    let front = Front { address, port, mode };
    let backends: Vec<Option<Backend>> = raw
        .backend
        .iter()
        .enumerate()
        .map(|(j, backend)| resolve_backend(&format!("{at}.backend[{j}]"), backend, &front, &mut checks, p))
        .collect();
    let entries: Vec<Entry<SocketAddr>> =
        raw.backend.iter().enumerate().map(|(j, backend)| backend_entry(&at, j, backend, port)).collect();
    no_repeats(&entries, "listed twice: same address and port as", p);

    let address = address?;
    let (port, protocol) = (port?, protocol?);
    Some(Vip {
        name: name.unwrap_or_else(|| {
            Some(VipId { socket: SocketAddr::new(address, port), protocol }.to_string())
        })?,
        address,
        port,
        protocol,
        mode: mode?,
        nat_address: nat_address?,
        allbackups: raw.allbackups.unwrap_or(false),
        on_all_down: on_all_down?,
        backends: backends.into_iter().collect::<Option<_>>()?,
    })
}

/// What a backend's checks need from its VIP; `None` where the VIP's own
/// value is invalid (reported there).
struct Front {
    address: Option<IpAddr>,
    port: Option<u16>,
    mode: Option<Mode>,
}

fn resolve_backend(
    at: &str,
    raw: &RawBackend,
    front: &Front,
    checks: &mut VipChecks,
    p: &mut Problems,
) -> Option<Backend> {
    let at = labelled(at.to_owned(), raw.name.as_ref());
    let name = raw.name.as_ref().map(|name| p.check(format!("{at}.name"), name, |s| entry_name(s)));
    let address = p.check(format!("{at}.address"), &raw.address, |s| backend_address(s, front));
    let port = match &raw.port {
        Some(port) => p.check(format!("{at}.port"), port, |&port| backend_port(port, front)),
        None => front.port,
    };
    let weight = p.check_or(format!("{at}.weight"), raw.weight.as_ref(), DEFAULT_WEIGHT, in_range(WEIGHT));
    let check = checks.backend(&at, raw.check_keys(), address, port, p);

    let socket = SocketAddr::new(address?, port?);
    let (check, slowstart) = check?;
    Some(Backend {
        name: name.unwrap_or_else(|| Some(socket.to_string()))?,
        address: socket.ip(),
        port: socket.port(),
        weight: weight?,
        backup: raw.backup.unwrap_or(false),
        check,
        slowstart,
    })
}

/// DSR only rewrites MAC addresses: the backend receives the client's packet
/// to the VIP as is, so it must speak the VIP's IP family. A tunnel's outer
/// header takes the backend's family and its inner packet is the VIP's:
/// different families would need IPv4-in-IPv6 or IPv6-in-IPv4, which neither
/// the balancer nor the `decap` program builds or strips.
fn backend_address(s: &str, front: &Front) -> Result<IpAddr, String> {
    let address = ip(s)?;
    match (front.mode, front.address) {
        (Some(Mode::Dsr), Some(vip)) if address.is_ipv4() != vip.is_ipv4() => Err(format!(
            "DSR does not change the IP header: an {} backend cannot serve the {} VIP {vip}",
            family(address),
            family(vip)
        )),
        (Some(Mode::Tunnel), Some(vip)) if address.is_ipv4() != vip.is_ipv4() => Err(format!(
            "a tunnel carries {} in {} only: an {} backend cannot serve the {} VIP {vip} \
             (IPv4-in-IPv6 and IPv6-in-IPv4 are not implemented)",
            family(vip),
            family(vip),
            family(address),
            family(vip)
        )),
        (Some(Mode::Nat), Some(vip)) if address.is_ipv4() != vip.is_ipv4() => Err(format!(
            "NAT keeps the family: an {} backend cannot serve the {} VIP {vip} (NAT64/46 is not implemented)",
            family(address),
            family(vip)
        )),
        _ => Ok(address),
    }
}

/// Port 0 means "every port" and only makes sense behind a port-0 VIP; DSR
/// and tunnels leave the destination port alone, so it must be the VIP's.
fn backend_port(port: i64, front: &Front) -> Result<u16, String> {
    let every_port = front.port == Some(0);
    if port == 0 && !every_port {
        return Err("0 (every port) is only allowed when the VIP port is 0".into());
    }
    let lowest = if every_port { 0 } else { 1 };
    let port: u16 = in_range(lowest..=u16::MAX.into())(&port)?;
    let mode = match front.mode {
        Some(Mode::Dsr) => "DSR",
        Some(Mode::Tunnel) => "a tunnel",
        _ => return Ok(port),
    };
    match front.port {
        Some(0) if port != 0 => {
            Err(format!("{mode} cannot translate ports: behind a port-0 VIP the port must be 0 or omitted"))
        }
        Some(vip) if vip != 0 && port != vip => {
            Err(format!("{mode} cannot translate ports: must be the VIP's port {vip}, or omitted"))
        }
        _ => Ok(port),
    }
}
