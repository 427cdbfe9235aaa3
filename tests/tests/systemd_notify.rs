//! The agent under systemd's notify protocol (`Type=notify`, `WatchdogSec=`),
//! systemd faked by a datagram socket: READY=1 once the config is applied,
//! WATCHDOG=1 from the reconcile loop at half `WATCHDOG_USEC`,
//! RELOADING=1 / READY=1 around a SIGHUP reload, STOPPING=1 on SIGTERM.

use std::{
    os::unix::net::UnixDatagram,
    time::{Duration, Instant},
};

use alwayson_tests::{
    agent::{config_toml, Agent, VipConf},
    bed::{TestBed, VIP4},
    require_root,
};

#[test]
#[ignore = "needs root"]
fn the_agent_tells_systemd_ready_reloading_stopping_and_pings_the_watchdog() {
    require_root("the_agent_tells_systemd_ready_reloading_stopping_and_pings_the_watchdog");
    let bed = TestBed::builder().backends(1).build().expect("bed");
    let config = config_toml(&bed, &[VipConf::new(VIP4, 80, "tcp").backends(0..1)]);
    let path = bed.temp_dir().join("notify.sock");
    let systemd = UnixDatagram::bind(&path).expect("binding the fake NOTIFY_SOCKET");
    systemd.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
    let next = || {
        let mut buf = [0u8; 512];
        let n = systemd.recv(&mut buf).expect("a notification within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // The next message other than a watchdog ping.
    let next_state = || loop {
        let message = next();
        if message != "WATCHDOG=1" {
            return message;
        }
    };

    let notify_socket = format!("NOTIFY_SOCKET={}", path.display());
    let wrapper = ["env", notify_socket.as_str(), "WATCHDOG_USEC=400000"];
    let mut agent = Agent::start_under(&bed, &wrapper, &config, &[]).expect("agent");
    let ready = next();
    assert!(ready.starts_with("READY=1"), "first notification: {ready:?}");
    let since = Instant::now();
    for _ in 0..3 {
        assert_eq!(next(), "WATCHDOG=1");
    }
    // Every 200 ms: three pings well within a second (the first comes at once).
    assert!(since.elapsed() < Duration::from_secs(2), "three pings took {:?}", since.elapsed());

    agent.reload(&config).expect("reload");
    let reloading = next_state();
    assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading:?}");
    let ready = next_state();
    assert!(ready.starts_with("READY=1"), "after the reload: {ready:?}");

    agent.stop().expect("stop");
    assert_eq!(next_state(), "STOPPING=1");
}
