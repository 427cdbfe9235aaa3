//! The agent with only the capabilities packaging/alwayson.service grants
//! (`CapabilityBoundingSet=`, the agent running as root): it attaches, runs
//! exec checks as `nobody`, balances, is adopted by the next agent and
//! detaches on the unit's stop signal (SIGUSR2).

use std::time::Duration;

use alwayson_tests::{
    agent::{config_toml, Agent, VipConf},
    bed::{vip4, TestBed, VIP4},
    require_root,
};

const TIMEOUT: Duration = Duration::from_secs(3);

/// The unit's capability set, as setpriv's `--bounding-set` wants it.
fn unit_bounding_set() -> String {
    let unit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/alwayson.service");
    let text = std::fs::read_to_string(&unit).expect("the unit");
    let caps = text
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("CapabilityBoundingSet= in the unit");
    let caps: Vec<String> = caps
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect();
    assert!(!caps.is_empty());
    format!("--bounding-set=-all,{}", caps.join(","))
}

#[test]
#[ignore = "needs root"]
fn the_agent_works_with_the_units_capabilities_only() {
    require_root("the_agent_works_with_the_units_capabilities_only");
    let bed = TestBed::builder().backends(2).build().expect("bed");
    let vip =
        VipConf::new(VIP4, 80, "tcp").backends(0..2).keys("check = \"exec\"\nexec_command = \"exit 0\"");
    let config = config_toml(&bed, &[vip]);
    let bounding = unit_bounding_set();
    let wrapper = ["setpriv", bounding.as_str(), "--"];
    let xdp_attached = || bed.lb_ns().ip(&["link", "show", "dev", "eth0"]).expect("ip link").contains("xdp");

    let mut agent = Agent::start_under(&bed, &wrapper, &config, &["--keep-running-on-exit"]).expect("agent");
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).expect("status");
    let bnd = status.lines().find_map(|l| l.strip_prefix("CapBnd:")).expect("CapBnd").trim().to_string();
    let bnd = u64::from_str_radix(&bnd, 16).expect("hex");
    assert!(bnd.count_ones() <= 6, "the agent runs with more capabilities: {bnd:#x}");
    assert!(!agent.log().contains("will not be logged"), "{}", agent.log());
    let names = bed.tcp_names(0, vip4(80), 50, TIMEOUT).expect("connections through the VIP");
    assert_eq!(names.len(), 2, "both backends (exec checks up) take connections: {names:?}");
    agent.stop().expect("stop");

    let mut agent = Agent::start_under(&bed, &wrapper, &config, &["--keep-running-on-exit"]).expect("agent");
    assert!(agent.log().contains("adopted the running data plane"), "{}", agent.log());
    let status = agent.stop_by(libc::SIGUSR2).expect("SIGUSR2");
    assert!(status.success(), "alwayson exited with {status}; log:\n{}", agent.log());
    assert!(!xdp_attached(), "XDP program still attached");
    assert!(!bed.pin_dir().exists(), "pins left behind in {}", bed.pin_dir().display());
}
