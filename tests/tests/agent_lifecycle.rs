//! The agent's life: reloads under traffic, SIGKILL and restart, a bad config,
//! clean stops that detach or keep the data plane running, program replacement.

use std::{collections::BTreeSet, time::Duration};

use alwayson_tests::{
    agent::{config_toml, config_toml_with, Agent, Tables, VipConf, REFUSED},
    bed::{vip4, TestBed, VIP4},
    proc_scan::pids_with_arg,
    require_root,
    traffic::{Opener, Streams},
    wait::wait_until,
};
use lb_common::{types::PROTO_TCP, VipKey};

const STREAMS: usize = 50;
const STREAM_PERIOD: Duration = Duration::from_millis(10);
const OPEN_PERIOD: Duration = Duration::from_millis(10);
/// One connection through the VIP.
const TIMEOUT: Duration = Duration::from_secs(3);

fn new_flows(agent: &Agent) -> u64 {
    let stats = agent.stats().expect("pinned maps");
    let key = VipKey::new(vip4(80).ip(), 80, PROTO_TCP);
    let index = stats.vip(&key).expect("VIPS").expect("the VIP").index;
    stats.vip_stats(index).expect("VIP_STATS").new_flows
}

#[test]
#[ignore = "needs root"]
fn adding_a_backend_by_sighup_moves_no_established_flow() {
    require_root("adding_a_backend_by_sighup_moves_no_established_flow");
    let bed = TestBed::builder().backends(4).build().expect("bed");
    let three = config_toml(&bed, &[VipConf::new(VIP4, 80, "tcp").backends(0..3)]);
    let four = config_toml(&bed, &[VipConf::new(VIP4, 80, "tcp").backends(0..4)]);
    let mut agent = Agent::start(&bed, &three, &[]).expect("agent");

    let streams = Streams::open(&bed, 0, vip4(80), STREAMS, STREAM_PERIOD).expect("streams");
    std::thread::sleep(Duration::from_secs(1));
    agent.reload(&four).expect("reload");
    std::thread::sleep(Duration::from_millis(1500));
    // New connections now reach the fourth backend too.
    let seen = bed.tcp_names(0, vip4(80), 200, TIMEOUT).expect("connections through the VIP");
    let report = streams.stop();

    assert!(report.errors.is_empty(), "streams broke: {:#?}", report.errors);
    assert!(report.max_gap < Duration::from_secs(1), "a stream stalled for {:?}", report.max_gap);
    // The streams ran for the whole test (at least 2.5 s, a round trip per
    // 10 ms or more: at most about 250 each); 100 each shows each kept flowing
    // through the reload instead of opening late or crawling. Stalls are
    // max_gap's job.
    for s in &report.streams {
        assert!(
            s.round_trips > 100,
            "a stream to {} made {} round trips: {report:#?}",
            s.backend,
            s.round_trips
        );
    }
    assert!(seen.contains(&bed.backend_name(3)), "new flows never reached the new backend: {seen:?}");
    assert_eq!(seen.len(), 4, "{seen:?}");
}

#[test]
#[ignore = "needs root"]
fn sigkill_and_restart_lose_no_connection_and_keep_the_connection_table() {
    require_root("sigkill_and_restart_lose_no_connection_and_keep_the_connection_table");
    let bed = TestBed::builder().backends(3).build().expect("bed");
    let two = config_toml(&bed, &[VipConf::new(VIP4, 80, "tcp").backends(0..2)]);
    let config = config_toml(&bed, &[VipConf::new(VIP4, 80, "tcp").backends(0..3)]);
    let mut agent = Agent::start(&bed, &two, &[]).expect("agent");

    let streams = Streams::open(&bed, 0, vip4(80), STREAMS, STREAM_PERIOD).expect("streams");
    // A third backend puts a third of the ring in flux: the streams there are
    // recorded, so the table has something to keep.
    agent.reload(&config).expect("reload");
    let opener = Opener::start(&bed, 0, vip4(80), OPEN_PERIOD);
    std::thread::sleep(Duration::from_secs(1));
    let (opened_before, flows_before) = (opener.ok_so_far(), new_flows(&agent));
    let table_before = agent.stats().unwrap().connections();

    agent.kill().expect("SIGKILL");
    std::thread::sleep(Duration::from_millis(500));
    agent.restart().expect("restart");
    std::thread::sleep(Duration::from_secs(1));

    let opened = opener.stop();
    let report = streams.stop();
    let flows_after = new_flows(&agent);
    let log = agent.log();

    assert!(report.errors.is_empty(), "streams broke: {:#?}", report.errors);
    assert!(report.max_gap < Duration::from_secs(1), "a stream stalled for {:?}", report.max_gap);
    assert!(opened.failed.is_empty(), "new connections failed: {:#?}", opened.failed);
    assert!(log.contains("adopted the running data plane"), "restart did not adopt:\n{log}");
    assert!(
        log.contains("vips_added: 0")
            && log.contains("backends_added: 0")
            && log.contains("ring_slots_written: 0"),
        "the restarted agent rewrote state it should have adopted:\n{log}"
    );
    assert!(table_before >= STREAMS / 10, "connection table held {table_before} flows");
    let table_after = agent.stats().unwrap().connections();
    assert!(
        table_after >= table_before,
        "the table held {table_before} flows, {table_after} after the restart"
    );
    // Every new flow the kernel counted is a connection the opener made: the
    // 50 streams were not seen as new after the restart (that would add 50).
    let counted = flows_after - flows_before;
    let made = opened.ok - opened_before;
    assert!(
        counted >= made.saturating_sub(1) && counted <= made + 3,
        "kernel counted {counted} new flows while {made} connections were opened"
    );
}

#[test]
#[ignore = "needs root"]
fn a_bad_config_on_reload_changes_nothing_and_is_logged() {
    require_root("a_bad_config_on_reload_changes_nothing_and_is_logged");
    let bed = TestBed::builder().backends(4).build().expect("bed");
    let good = config_toml(&bed, &[VipConf::new(VIP4, 80, "tcp").backends(0..3)]);
    let mut agent = Agent::start(&bed, &good, &[]).expect("agent");

    // Adds backend 3 but with an invalid weight: nothing of it may apply.
    let bad = config_toml(&bed, &[VipConf::new(VIP4, 80, "tcp").backends(0..3).backend(3, 999, false)]);
    agent.reload_expecting(&bad, REFUSED).expect("refusal logged");
    let log = agent.log();
    assert!(log.contains("backend[3]") && log.contains("weight") && log.contains("999"), "{log}");
    // Sizes cannot change under a running data plane.
    let resized = config_toml_with(
        &bed,
        &[VipConf::new(VIP4, 80, "tcp").backends(0..3)],
        Tables { global: "ring_size = 4099", ..Tables::default() },
    );
    agent.reload_expecting(&resized, "global.ring_size changed").expect("refusal logged");

    let seen = bed.tcp_names(0, vip4(80), 300, TIMEOUT).expect("connections through the VIP");
    let want: BTreeSet<String> = (0..3).map(|i| bed.backend_name(i)).collect();
    assert_eq!(seen, want, "traffic must still follow the old config");
    agent.stop().expect("stop");
}

/// The config is parsed by a child process so the agent's heap never holds
/// the TOML document. When that child dies, the load fails: the agent must
/// not parse the file itself instead. The config is a FIFO nobody writes, so
/// the child blocks in its read until the test kills it (and an agent that
/// fell back to parsing would block there too, never logging the refusal).
/// Meanwhile the loop goes on: an API change made while the child hangs
/// is applied.
#[test]
#[ignore = "needs root"]
fn a_killed_config_parser_fails_the_reload_and_the_agent_does_not_parse_it() {
    require_root("a_killed_config_parser_fails_the_reload_and_the_agent_does_not_parse_it");
    let bed = TestBed::builder().backends(2).build().expect("bed");
    let good = config_toml(&bed, &[VipConf::new(VIP4, 80, "tcp").backends(0..2)]);
    let mut agent = Agent::start(&bed, &good, &[]).expect("agent");
    let path = agent.config_path().to_path_buf();
    std::fs::remove_file(&path).expect("removing the config");
    let fifo = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: a valid C string; mkfifo only creates the node.
    assert_eq!(unsafe { libc::mkfifo(fifo.as_ptr(), 0o600) }, 0, "mkfifo {}", path.display());

    let refused = agent.count(REFUSED);
    agent.signal(libc::SIGHUP).expect("SIGHUP");
    let agent_pid = agent.pid();
    let wanted = path.to_string_lossy().into_owned();
    let parser =
        wait_until("the config parser to start", Duration::from_secs(10), Duration::from_millis(10), || {
            let parsers = pids_with_arg(|arg| arg == "parse-config");
            parsers
                .into_iter()
                .find(|&pid| pid != agent_pid && pids_with_arg(|arg| arg == wanted).contains(&pid))
        })
        .unwrap_or_else(|e| panic!("{e:#}; log:\n{}", agent.log()));
    // The reload waits for its file off the loop: an API change goes through meanwhile.
    let vip = format!("{VIP4}:80/tcp");
    let backend = bed.backend_name(1);
    let set = agent
        .cli(&["backend", "set", "--vip", &vip, &backend, "--weight", "2"])
        .expect("alwayson backend set");
    assert!(
        set.status.success(),
        "an API change while a reload is parsed: {set:?}\nagent log:\n{}",
        agent.log()
    );
    // SAFETY: kill only sends a signal, to the pid just found.
    assert_eq!(unsafe { libc::kill(parser as i32, libc::SIGKILL) }, 0, "killing the parser {parser}");
    agent.wait_for(REFUSED, refused + 1, Duration::from_secs(10)).expect("the reload refused");
    let log = agent.log();
    assert!(log.contains("killed by signal 9"), "the refusal must say the parser was killed:\n{log}");

    // The running config stayed, and a readable file reloads again.
    std::fs::remove_file(&path).expect("removing the FIFO");
    agent.reload(&good).expect("reload after the FIFO");
    let seen = bed.tcp_names(0, vip4(80), 100, TIMEOUT).expect("connections through the VIP");
    assert_eq!(seen.len(), 2, "both backends answer: {seen:?}");
    agent.stop().expect("stop");
}

#[test]
#[ignore = "needs root"]
fn a_clean_stop_detaches_unless_told_to_keep_running() {
    require_root("a_clean_stop_detaches_unless_told_to_keep_running");
    let bed = TestBed::builder().backends(2).build().expect("bed");
    let config = config_toml(&bed, &[VipConf::new(VIP4, 80, "tcp").backends(0..2)]);
    let xdp_attached = || bed.lb_ns().ip(&["link", "show", "dev", "eth0"]).expect("ip link").contains("xdp");

    let mut agent = Agent::start(&bed, &config, &["--keep-running-on-exit"]).expect("agent");
    assert!(xdp_attached());
    agent.stop().expect("stop");
    assert!(agent.log().contains("keeps running"), "{}", agent.log());
    assert!(xdp_attached() && bed.pin_dir().exists(), "kept data plane is gone");
    // With no agent at all, the VIP still answers.
    assert_eq!(bed.tcp_names(0, vip4(80), 50, TIMEOUT).expect("connections through the VIP").len(), 2);

    // The next agent adopts it; stopped without the flag, it detaches and unpins.
    let mut agent = Agent::start(&bed, &config, &[]).expect("agent");
    assert!(agent.log().contains("adopted the running data plane"), "{}", agent.log());
    agent.stop().expect("stop");
    assert!(agent.log().contains("detached"), "{}", agent.log());
    assert!(!xdp_attached(), "XDP program still attached");
    assert!(!bed.pin_dir().exists(), "pins left behind in {}", bed.pin_dir().display());

    // SIGUSR2 (the systemd unit's stop) detaches even with --keep-running-on-exit.
    let mut agent = Agent::start(&bed, &config, &["--keep-running-on-exit"]).expect("agent");
    let status = agent.stop_by(libc::SIGUSR2).expect("stop by SIGUSR2");
    assert!(status.success(), "alwayson exited with {status} on SIGUSR2; log:\n{}", agent.log());
    assert!(agent.log().contains("detached"), "{}", agent.log());
    assert!(!xdp_attached(), "XDP program still attached after SIGUSR2");
    assert!(!bed.pin_dir().exists(), "pins left behind after SIGUSR2 in {}", bed.pin_dir().display());
}

#[test]
#[ignore = "needs root"]
fn replace_swaps_the_program_without_dropping_flows() {
    require_root("replace_swaps_the_program_without_dropping_flows");
    let bed = TestBed::builder().backends(3).build().expect("bed");
    let config = config_toml(&bed, &[VipConf::new(VIP4, 80, "tcp").backends(0..3)]);
    let mut agent = Agent::start(&bed, &config, &[]).expect("agent");
    let prog_id = || {
        let link = bed.lb_ns().ip(&["-d", "link", "show", "dev", "eth0"]).expect("ip link");
        link.split_whitespace().skip_while(|w| *w != "prog/xdp").nth(2).map(str::to_string)
    };
    let before = prog_id();

    let streams = Streams::open(&bed, 0, vip4(80), 20, STREAM_PERIOD).expect("streams");
    agent.kill().expect("SIGKILL");
    let mut replaced = Agent::start(&bed, &config, &["--replace"]).expect("agent with --replace");
    std::thread::sleep(Duration::from_millis(500));
    let report = streams.stop();

    assert!(replaced.log().contains("swapped in this build's program"), "{}", replaced.log());
    assert_ne!(prog_id(), before, "the XDP program id did not change");
    assert!(report.errors.is_empty(), "streams broke: {:#?}", report.errors);
    replaced.stop().expect("stop");
}
