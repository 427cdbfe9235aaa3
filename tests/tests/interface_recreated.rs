//! A data plane kept running (`--keep-running-on-exit`) whose interface is
//! deleted and re-created, as a driver reload or a veth or VF reset does: its
//! pinned XDP link then attaches nothing, and the next agent must attach again
//! instead of adopting it, keeping the pinned maps.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use alwayson_tests::{
    agent::{config_toml, Agent, VipConf},
    bed::{TestBed, UDP_PORT, VIP4, VIP6},
    require_root,
};
use lb_userspace::dataplane::{attached_ifindex, Baseline};

const TIMEOUT: Duration = Duration::from_secs(2);
/// Tries per exchange: a datagram lost while the bridge learns the new port
/// is not the failure looked for.
const TRIES: usize = 3;
const REATTACHED: &str = "re-attached";

fn config(bed: &TestBed) -> String {
    let vips: Vec<VipConf> = [VIP4, VIP6]
        .into_iter()
        .flat_map(|vip| {
            [VipConf::new(vip, 80, "tcp").backends(0..2), VipConf::new(vip, UDP_PORT, "udp").backends(0..2)]
        })
        .collect();
    config_toml(bed, &vips)
}

/// A TCP connection and a UDP exchange through each VIP; what failed, each
/// after `TRIES` tries.
fn failures_through_vips(bed: &TestBed) -> Vec<String> {
    let mut failed = Vec::new();
    for vip in [VIP4, VIP6] {
        let ip: IpAddr = vip.parse().expect("VIP address");
        let (tcp, udp) = (SocketAddr::new(ip, 80), SocketAddr::new(ip, UDP_PORT));
        let last_error = |exchange: &dyn Fn() -> std::io::Result<String>| {
            let mut last = None;
            for _ in 0..TRIES {
                match exchange() {
                    Ok(_) => return None,
                    Err(e) => last = Some(e),
                }
            }
            last
        };
        if let Some(e) = last_error(&|| bed.tcp_name(0, tcp, TIMEOUT)) {
            failed.push(format!("TCP {tcp}: {e}"));
        }
        if let Some(e) = last_error(&|| bed.udp_name(0, udp, TIMEOUT)) {
            failed.push(format!("UDP {udp}: {e}"));
        }
    }
    failed
}

/// Re-creates the LB's `eth0` and checks that the kept link now attaches nothing.
fn recreate_interface(bed: &mut TestBed) -> u32 {
    let before = bed.lb_ns().ifindex("eth0").expect("ifindex of eth0");
    assert_eq!(attached_ifindex(bed.pin_dir()).expect("pinned link"), before);
    bed.recreate_lb_link().expect("re-creating the LB's eth0");
    let after = bed.lb_ns().ifindex("eth0").expect("ifindex of the new eth0");
    assert_ne!(after, before, "the re-created eth0 kept its ifindex");
    assert_eq!(
        attached_ifindex(bed.pin_dir()).expect("pinned link"),
        0,
        "the kernel still shows the kept link attached after its interface was deleted"
    );
    after
}

/// Starts an agent with `args` on the re-created interface, checks that it
/// attached again and that traffic flows, and stops it (keeping the data plane
/// running if `args` asks to).
fn start_on_new_interface(bed: &TestBed, config: &str, args: &[&str], ifindex: u32) -> String {
    let mut agent = Agent::start(bed, config, args).expect("agent");
    let failed = failures_through_vips(bed);
    let log = agent.log();
    assert!(
        log.contains(REATTACHED) && log.contains("is attached to no interface"),
        "{args:?}: the agent did not say it re-attached (traffic: {failed:#?}):\n{log}"
    );
    assert_eq!(
        attached_ifindex(bed.pin_dir()).expect("pinned link"),
        ifindex,
        "{args:?}: the pinned link is not on the new eth0"
    );
    assert!(failed.is_empty(), "{args:?}: traffic through the VIPs failed: {failed:#?}\n{log}");
    // The maps were adopted, not rebuilt: the config was already in them.
    assert!(
        log.contains("vips_added: 0")
            && log.contains("backends_added: 0")
            && log.contains("ring_slots_written: 0"),
        "{args:?}: the re-attached agent rewrote state the pinned maps held:\n{log}"
    );
    agent.stop().expect("stop");
    agent.log()
}

#[test]
#[ignore = "needs root"]
fn a_kept_data_plane_is_attached_again_to_a_recreated_interface() {
    require_root("a_kept_data_plane_is_attached_again_to_a_recreated_interface");
    let mut bed = TestBed::builder().backends(2).build().expect("bed");
    let config = config(&bed);
    {
        let mut agent = Agent::start(&bed, &config, &["--keep-running-on-exit"]).expect("agent");
        let failed = failures_through_vips(&bed);
        assert!(failed.is_empty(), "traffic through the VIPs failed before any change: {failed:#?}");
        agent.stop().expect("stop");
    }

    let ifindex = recreate_interface(&mut bed);
    let log = start_on_new_interface(&bed, &config, &["--keep-running-on-exit"], ifindex);
    assert!(log.contains("keeps running"), "{log}");

    // `--replace` cannot swap a program into a link that attaches nothing
    // (the kernel refuses); it attaches a new link too.
    let ifindex = recreate_interface(&mut bed);
    let log = start_on_new_interface(&bed, &config, &["--replace"], ifindex);
    assert!(log.contains("detached"), "{log}");
    assert!(!bed.pin_dir().exists(), "pins left behind in {}", bed.pin_dir().display());
}

#[test]
#[ignore = "needs root"]
fn a_recreated_interface_running_another_program_is_left_alone() {
    require_root("a_recreated_interface_running_another_program_is_left_alone");
    let mut bed = TestBed::builder().backends(2).build().expect("bed");
    // `auto`: an occupied interface is refused as such, not tried again in generic mode.
    let config = config(&bed).replace("xdp_mode = \"native\"", "xdp_mode = \"auto\"");
    let mut agent = Agent::start(&bed, &config, &["--keep-running-on-exit"]).expect("agent");
    agent.stop().expect("stop");
    drop(agent);
    recreate_interface(&mut bed);

    // Someone else's program on the new eth0, attached by netlink (no bpf_link)
    // with `ip link set … xdp pinned`, so it is pinned first.
    let mut other = Baseline::load().expect("baseline programs");
    let pass = other.program_mut(Baseline::PASS).expect("xdp_pass");
    let pinned = bed.pin_dir().join("other_xdp_pass");
    pass.pin(&pinned).expect("pinning xdp_pass");
    let path = pinned.display().to_string();
    // nsenter, not `ip -n`: that remounts /sys, hiding the pin.
    let status =
        bed.lb_ns().command("ip").args(["link", "set", "dev", "eth0", "xdp", "pinned", &path]).status();
    assert!(status.expect("running ip").success(), "ip link set dev eth0 xdp pinned {path} failed");
    let shown = || bed.lb_ns().ip(&["-d", "link", "show", "dev", "eth0"]).expect("ip link");
    let before = shown();
    assert!(before.contains("prog/xdp"), "{before}");

    let refused = Agent::start(&bed, &config, &[]).err().expect("the agent started on an occupied eth0");
    let refused = format!("{refused:#}");
    assert!(refused.contains("already runs another XDP program"), "{refused}");
    assert!(!refused.contains("falling back to generic"), "{refused}");
    assert_eq!(shown(), before, "the other program was touched");
    assert_eq!(
        attached_ifindex(bed.pin_dir()).expect("the kept pin"),
        0,
        "a failed attach must leave the kept pin as it was"
    );
}
