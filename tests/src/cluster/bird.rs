//! BIRD on the cluster bed: the router's config (ECMP over eBGP, BFD, the
//! GRACEFUL_SHUTDOWN rule), the config a node runs when the bed announces for
//! it, BIRD started in a namespace, and `birdc`.

use std::{
    fmt::Write as _,
    net::IpAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail, Result};

use super::plan::{node_as, node_v4, router_v4, ROUTER_AS, VIP_RANGE};
use crate::{netns::Netns, process::Process, run, wait::try_wait_until};

pub const BIRD: &str = "/usr/sbin/bird";
pub const BIRDC: &str = "/usr/sbin/birdc";
/// BFD on both sides: a silent node is dropped after about 3 × 100 ms.
pub const BFD_INTERVAL_MS: u64 = 100;
pub const BFD_MULTIPLIER: u32 = 3;
/// How long BIRD may take to open its control socket.
const STARTUP: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(20);

/// BIRD's files for one instance, all in `dir`.
#[derive(Clone, Debug)]
pub struct BirdFiles {
    pub config: PathBuf,
    pub socket: PathBuf,
    pub pid: PathBuf,
    pub log: PathBuf,
}

impl BirdFiles {
    pub fn in_dir(dir: &Path) -> Self {
        Self {
            config: dir.join("bird.conf"),
            socket: dir.join("bird.ctl"),
            pid: dir.join("bird.pid"),
            log: dir.join("bird.log"),
        }
    }
}

/// The router's BIRD: one eBGP session per node (BFD on, quick to come up),
/// imports only host routes in [`VIP_RANGE`], lowers to local preference 0
/// whatever carries GRACEFUL_SHUTDOWN (RFC 8326, so it leaves the ECMP set),
/// and puts the best paths, merged, into the kernel.
///
/// Graceful restart is off: a node whose session drops without a NOTIFICATION
/// (BIRD killed, hold timer) must lose its paths at once, not keep them as
/// stale for the restart time.
pub fn router_config(nodes: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "router id {};\nlog stderr all;\ntimeformat log iso long ms;\ntimeformat protocol iso long ms;",
        router_v4()
    );
    let _ = writeln!(out, "debug protocols {{ states, events }};\n");
    let _ = writeln!(out, "protocol device {{ scan time 10; }}\n");
    let _ =
        writeln!(out, "protocol kernel {{\n  ipv4 {{ export all; import none; }};\n  merge paths on;\n}}\n");
    let _ = writeln!(
        out,
        "protocol bfd {{\n  interface \"eth0\" {{ interval {BFD_INTERVAL_MS} ms; multiplier {BFD_MULTIPLIER}; }};\n}}\n"
    );
    let _ = writeln!(
        out,
        "filter vips_in {{\n  if net ~ [ {VIP_RANGE}{{32,32}} ] then {{\n    \
         if (65535, 0) ~ bgp_community then bgp_local_pref = 0;\n    accept;\n  }}\n  reject;\n}}\n"
    );
    let _ = writeln!(
        out,
        "template bgp node {{\n  local {} as {ROUTER_AS};\n  bfd on;\n  graceful restart off;\n  \
         hold time 3;\n  keepalive time 1;\n  startup hold time 5;\n  connect delay time 1;\n  \
         connect retry time 1;\n  error wait time 1, 5;\n  \
         ipv4 {{ import filter vips_in; export none; }};\n}}\n",
        router_v4()
    );
    for node in 1..=nodes {
        let _ = writeln!(
            out,
            "protocol bgp lb{node} from node {{ neighbor {} as {}; }}\n",
            node_v4(node),
            node_as(node)
        );
    }
    out
}

/// A node's BIRD when the bed, not the agent, announces: `vips` as blackhole
/// host routes, exported to the router over eBGP with BFD.
pub fn static_node_config(node: usize, vips: &[IpAddr]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "router id {};\nlog stderr all;\ntimeformat log iso long ms;\ntimeformat protocol iso long ms;",
        node_v4(node)
    );
    let _ = writeln!(out, "debug protocols {{ states, events }};\n");
    let _ = writeln!(out, "protocol device {{ }}\n");
    let _ = writeln!(
        out,
        "protocol bfd {{\n  interface \"eth0\" {{ interval {BFD_INTERVAL_MS} ms; multiplier {BFD_MULTIPLIER}; }};\n}}\n"
    );
    let _ = writeln!(out, "protocol static bed_vips {{\n  ipv4;");
    for vip in vips.iter().filter(|v| v.is_ipv4()) {
        let _ = writeln!(out, "  route {vip}/32 blackhole;");
    }
    let _ = writeln!(out, "}}\n");
    let _ = writeln!(
        out,
        "protocol bgp upstream {{\n  local {} as {};\n  neighbor {} as {ROUTER_AS};\n  bfd on;\n  \
         connect delay time 1;\n  connect retry time 1;\n  error wait time 1, 5;\n  \
         ipv4 {{ import none; export where proto = \"bed_vips\"; }};\n}}",
        node_v4(node),
        node_as(node),
        router_v4()
    );
    out
}

/// `bird -f -c CONFIG -s SOCKET -P PID` in `ns`, output to the log file;
/// returns once BIRD answers on its socket (fails with its log otherwise).
pub fn start(ns: &Netns, files: &BirdFiles) -> Result<Process> {
    // A socket left by an earlier BIRD would look like an answer.
    let _ = std::fs::remove_file(&files.socket);
    let args = [
        "-f".to_string(),
        "-c".into(),
        files.config.display().to_string(),
        "-s".into(),
        files.socket.display().to_string(),
        "-P".into(),
        files.pid.display().to_string(),
    ];
    let mut process = Process::spawn(ns, BIRD, &args, &files.log)?;
    let up = try_wait_until("BIRD to answer on its socket", STARTUP, POLL, || {
        if !process.running() {
            bail!("BIRD exited");
        }
        Ok(birdc(&files.socket, &["show", "status"]).ok().filter(|s| s.contains("Daemon is up")))
    });
    up.map_err(|e| anyhow!("{e:#}; BIRD's log:\n{}", read_log(&files.log)))?;
    Ok(process)
}

/// `birdc -s SOCKET ARGS…` (the socket is a path: no namespace to enter).
pub fn birdc(socket: &Path, args: &[&str]) -> Result<String> {
    let socket = socket.display().to_string();
    let mut all = vec!["-s", &socket];
    all.extend_from_slice(args);
    run(BIRDC, &all)
}

/// A whole log file, or a note that there is none.
pub(super) fn read_log(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("({}: {e})\n", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_router_config_has_a_session_per_node_and_the_shutdown_rule() {
        let text = router_config(3);
        for (node, addr, asn) in [(1, "10.77.160.11", 65001), (3, "10.77.160.13", 65003)] {
            assert!(
                text.contains(&format!("protocol bgp lb{node} from node {{ neighbor {addr} as {asn}; }}"))
            );
        }
        assert!(text.contains("merge paths on;"), "{text}");
        assert!(text.contains("if (65535, 0) ~ bgp_community then bgp_local_pref = 0;"), "{text}");
        assert!(text.contains("10.77.163.0/24{32,32}"), "{text}");
        let node = static_node_config(2, &["10.77.163.1".parse().unwrap()]);
        assert!(node.contains("route 10.77.163.1/32 blackhole;"), "{node}");
        assert!(node.contains("local 10.77.160.12 as 65002;"), "{node}");
    }
}
