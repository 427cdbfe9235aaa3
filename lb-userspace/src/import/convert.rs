//! Frontends and their backends become VIPs: one per `bind` address and
//! port, with the servers of the backend it uses.

use std::{
    collections::{BTreeMap, HashSet},
    net::IpAddr,
    ops::RangeInclusive,
    time::Duration,
};

use super::{
    haproxy::{Section, SectionKind},
    proxy::{self, Proxy, Settings},
    server::Server,
    Options, Warnings,
};
use crate::config::{
    values::{INTER, SLOWSTART, TIMEOUT},
    Mode,
};

/// One VIP to write.
#[derive(Debug)]
pub struct Vip {
    pub name: String,
    pub address: IpAddr,
    pub port: u16,
    pub nat_address: Option<IpAddr>,
    pub settings: Settings,
    pub backends: Vec<Server>,
}

pub fn vips(sections: &[Section], options: &Options, w: &mut Warnings) -> Vec<Vip> {
    let mut defaults = Proxy::default();
    let mut backends: BTreeMap<String, (usize, Proxy)> = BTreeMap::new();
    let mut frontends: Vec<(String, usize, Proxy)> = Vec::new();
    for section in sections {
        let name = section.name.clone().unwrap_or_default();
        let header = section.header.number;
        match &section.kind {
            SectionKind::Global => {
                for line in &section.lines {
                    w.add(line.number, format!("global `{}` not carried over", line.word(0)));
                }
            }
            SectionKind::Other(kind) => {
                w.add(header, format!("section `{kind}` not carried over (Always On has no equivalent)"));
            }
            SectionKind::Defaults => {
                if section.header.words.len() > 1 {
                    w.add(
                        header,
                        "named defaults and `from` not carried over: the section applies to what follows",
                    );
                }
                defaults = Proxy::default();
                read(&mut defaults, section, options, w);
                let ignored = defaults.binds.len() + defaults.servers.len();
                if ignored > 0 || defaults.default_backend.is_some() {
                    w.add(header, "bind, server and default_backend lines in defaults are ignored");
                }
                defaults.binds.clear();
                defaults.servers.clear();
            }
            kind => {
                let mut proxy = Proxy { settings: defaults.settings.clone(), ..Proxy::default() };
                read(&mut proxy, section, options, w);
                if *kind != SectionKind::Backend {
                    if *kind == SectionKind::Listen {
                        proxy.default_backend = Some(name.clone());
                    }
                    frontends.push((name.clone(), header, proxy.clone()));
                }
                if *kind != SectionKind::Frontend {
                    backends.insert(name, (header, proxy));
                }
            }
        }
    }

    let mut used = HashSet::new();
    let mut names = HashSet::new();
    let mut vips = Vec::new();
    for (name, header, front) in &frontends {
        let Some(target) = front.use_backend.as_ref().or(front.default_backend.as_ref()) else {
            w.add(*header, format!("`{name}` has no default_backend (or plain use_backend): no VIP made"));
            continue;
        };
        let Some((_, pool)) = backends.get(target) else {
            w.add(*header, format!("`{name}` uses backend `{target}`, which is not defined: no VIP made"));
            continue;
        };
        used.insert(target.clone());
        if front.binds.is_empty() {
            w.add(*header, format!("`{name}` binds no usable address: no VIP made"));
        }
        for bind in &front.binds {
            let mut vip_name = name.clone();
            let mut n = 1;
            while !names.insert(vip_name.clone()) {
                n += 1;
                vip_name = format!("{name}-{n}");
            }
            vips.push(vip(vip_name, bind, pool, options, w));
        }
    }
    for (name, (header, _)) in &backends {
        if !used.contains(name) {
            w.add(*header, format!("backend `{name}` is used by no frontend: not imported"));
        }
    }
    vips
}

fn read(proxy: &mut Proxy, section: &Section, options: &Options, w: &mut Warnings) {
    for line in &section.lines {
        proxy::line(proxy, line, options.vip_address, w);
    }
}

fn vip(name: String, bind: &proxy::Bind, pool: &Proxy, options: &Options, w: &mut Warnings) -> Vip {
    let family = |a: &IpAddr| a.is_ipv4() == bind.address.is_ipv4();
    let mut nat_address = None;
    if options.mode == Mode::Nat {
        let global = options.nat_address.iter().find(|a| family(a));
        nat_address = pool.settings.source.filter(family);
        if nat_address.is_none() && global.is_none() {
            w.add(
                bind.line,
                format!(
                    "VIP {name}: mode nat needs an address of the balancer to send from; none can be \
                     derived (no `source` in the backend): pass --nat-address or set nat_address"
                ),
            );
        }
    }
    let mut settings = pool.settings.clone();
    settings.timeout_check_ms = in_range(settings.timeout_check_ms, TIMEOUT, "timeout check", bind.line, w);
    let mut backends = Vec::new();
    for server in &pool.servers {
        if !family(&server.address) {
            w.add(
                server.line,
                format!("server `{}` skipped for VIP {name}: not of the VIP's IP family", server.name),
            );
            continue;
        }
        let mut server = server.clone();
        if options.mode != Mode::Nat {
            match server.port {
                Some(port) if port == bind.port => server.port = None,
                Some(port) => {
                    w.add(
                        server.line,
                        format!(
                            "server `{}` skipped for VIP {name}: port {port} differs from the VIP's port {} \
                             and mode {} cannot translate ports (use --mode nat)",
                            server.name, bind.port, options.mode
                        ),
                    );
                    continue;
                }
                None => {}
            }
        }
        if server.opts.disabled {
            w.add(
                server.line,
                format!(
                    "server `{}` is disabled: the config file cannot put a backend in maintenance, so it gets \
                     weight 0 (drain); `alwayson backend set --vip {name} {} --state maint` does it at run time",
                    server.name, server.name
                ),
            );
            server.opts.weight = Some(0);
        }
        let line = server.line;
        server.opts.inter_ms = in_range(server.opts.inter_ms, INTER, "inter", line, w);
        server.opts.slowstart_ms = in_range(server.opts.slowstart_ms, SLOWSTART, "slowstart", line, w);
        backends.push(server);
    }
    Vip { name, address: bind.address, port: bind.port, nat_address, settings, backends }
}

fn in_range(
    ms: Option<u64>,
    range: RangeInclusive<Duration>,
    key: &str,
    line: usize,
    w: &mut Warnings,
) -> Option<u64> {
    match ms {
        Some(ms) if !range.contains(&Duration::from_millis(ms)) => {
            let (low, high) = (range.start().as_millis(), range.end().as_millis());
            w.add(
                line,
                format!("`{key}` {ms}ms is out of Always On's range {low}..={high} ms: the default is used"),
            );
            None
        }
        other => other,
    }
}
