//! `alwayson import-haproxy`: the HAProxy files the importer is tested on are
//! ones HAProxy itself accepts (`haproxy -c`), the command prints a config
//! that `check-config` accepts and warnings with line numbers, and on the
//! bed the imported config reaches the same backends as HAProxy serving the
//! same file.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use alwayson_tests::{
    agent::{config_toml, Agent},
    bed::{vip4, TestBed, VIP4},
    process::bin_path,
    require_root,
    wait::wait_until,
};
use lb_userspace::import::{import_haproxy, Options};

const HAPROXY: &str = "/usr/sbin/haproxy";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root").to_path_buf()
}

/// `tests/haproxy/*.cfg` and `examples/haproxy.cfg`.
fn cfg_files() -> Vec<PathBuf> {
    let dir = repo().join("tests/haproxy");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/haproxy")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cfg"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "tests/haproxy holds {} files", files.len());
    files.push(repo().join("examples/haproxy.cfg"));
    files
}

/// Fails the test unless Debian's haproxy is there: a test that runs (it is
/// ignored unless asked for; `cargo xtask test` asks, and installs haproxy)
/// must never pass without checking.
fn require_haproxy(test: &str) {
    assert!(Path::new(HAPROXY).is_file(), "{test} needs {HAPROXY}: apt-get install haproxy");
}

#[test]
#[ignore = "needs haproxy"]
fn every_test_cfg_is_accepted_by_haproxy() {
    require_haproxy("every_test_cfg_is_accepted_by_haproxy");
    for file in cfg_files() {
        // Relative paths in the files (07's certificate) are tests/haproxy's.
        let out = Command::new(HAPROXY)
            .args(["-c", "-f"])
            .arg(&file)
            .current_dir(repo().join("tests/haproxy"))
            .output()
            .expect("haproxy -c");
        assert!(
            out.status.success(),
            "haproxy -c -f {}: {}{}",
            file.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn every_test_cfg_imports_to_a_valid_config() {
    for file in cfg_files() {
        let text = std::fs::read_to_string(&file).expect("read");
        let mut options = Options::default();
        if file.ends_with("09-nat-source.cfg") {
            options.mode = lb_userspace::config::Mode::Nat;
        }
        let imported = import_haproxy(&text, &options).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(imported.toml.contains("[[vip]]"), "{}: no VIP:\n{}", file.display(), imported.toml);
    }
}

#[test]
fn the_command_prints_toml_and_warnings_with_lines() {
    let alwayson = bin_path("alwayson").expect("alwayson binary");
    let example = repo().join("examples/haproxy.cfg");
    let out = Command::new(&alwayson).arg("import-haproxy").arg(&example).output().expect("import-haproxy");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("haproxy.cfg:18: warning: `balance roundrobin` becomes Maglev"), "{stderr}");
    let dir = std::env::temp_dir().join(format!("alwayson-import-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let toml = dir.join("imported.toml");
    std::fs::write(&toml, &out.stdout).expect("write");
    let check = Command::new(&alwayson).arg("check-config").arg(&toml).output().expect("check-config");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(printed.contains("address = \"10.77.1.12\""), "{printed}");

    let out = Command::new(&alwayson)
        .args(["import-haproxy", "--mode", "tunnel", "--interface", "bond0"])
        .arg(&example)
        .output()
        .expect("import-haproxy");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("interface = \"bond0\"") && stdout.contains("mode = \"tunnel\""), "{stdout}");
}

/// The HAProxy file of the bed: the VIP, backends 0..3 checked, backend 2 disabled.
fn bed_cfg(bed: &TestBed) -> String {
    let mut cfg = format!(
        "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n  timeout server 10s\n\
         frontend fe\n  bind {VIP4}:80\n  default_backend be\nbackend be\n  balance roundrobin\n"
    );
    for i in 0..3 {
        let disabled = if i == 2 { " disabled" } else { "" };
        cfg +=
            &format!("  server {} {}:80 check inter 200{disabled}\n", bed.backend_name(i), bed.backend_v4(i));
    }
    cfg
}

/// Who answers 200 connections through the VIP; None if one fails.
fn names(bed: &TestBed) -> Option<BTreeSet<String>> {
    (0..200).map(|_| bed.tcp_name(0, vip4(80), Duration::from_secs(1)).ok()).collect()
}

#[test]
#[ignore = "needs root"]
fn imported_config_serves_the_backends_haproxy_serves() {
    require_root("imported_config_serves_the_backends_haproxy_serves");
    require_haproxy("imported_config_serves_the_backends_haproxy_serves");
    let bed = TestBed::builder().backends(3).build().expect("bed");
    let cfg = bed_cfg(&bed);
    let imported = import_haproxy(&cfg, &Options::default()).expect("import");
    // The bed's [global] (pins, lock file), [api] and [web], then the imported VIPs.
    let vips = &imported.toml[imported.toml.find("[[vip]]").expect("a VIP")..];
    let config = format!("{}\n{vips}", config_toml(&bed, &[]));
    let mut agent = Agent::start(&bed, &config, &[]).expect("agent");
    let through_agent = wait_until(
        "both enabled backends to answer",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || names(&bed).filter(|seen| seen.len() >= 2),
    )
    .expect("agent");
    agent.stop().expect("stop agent");

    // HAProxy on the balancer, serving the same file on the VIP.
    bed.lb_ns().ip(&["addr", "add", &format!("{VIP4}/32"), "dev", "lo"]).expect("VIP on the LB");
    let path = bed.temp_dir().join("haproxy.cfg");
    std::fs::write(&path, &cfg).expect("haproxy.cfg");
    let _haproxy = bed
        .spawn(bed.lb_ns(), HAPROXY, &["-db", "-f", &path.display().to_string()], "haproxy")
        .expect("haproxy");
    let through_haproxy =
        wait_until("HAProxy to answer", Duration::from_secs(10), Duration::from_millis(100), || {
            names(&bed).filter(|seen| seen.len() >= 2)
        })
        .expect("haproxy");

    let want: BTreeSet<String> = [bed.backend_name(0), bed.backend_name(1)].into();
    assert_eq!(through_agent, want);
    assert_eq!(through_haproxy, want);
}
