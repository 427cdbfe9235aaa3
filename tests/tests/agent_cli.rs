//! `alwayson` as an operator meets it: `check-config` on good and bad files,
//! and `run` refusing clearly when it cannot work.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use alwayson_tests::{
    agent::{cli, config_toml, VipConf},
    bed::{TestBed, VIP4},
    process::bin_path,
    require_root,
};

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write config");
    path.display().to_string()
}

/// A directory of this test's own, removed on drop (also when the test panics).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("alwayson-cli-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("cleanup: removing {}: {e}", self.0.display());
        }
    }
}

#[test]
fn check_config_prints_the_resolved_config() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/alwayson.toml");
    let run = cli(&["check-config", &example.display().to_string()]).expect("alwayson check-config");
    assert!(run.status.success(), "{}", run.stderr);
    let out = run.stdout;
    for expected in
        ["interface = \"eth0\"", "ring_size = 65537", "conn_table_size = 262144", "[[vip.backend]]"]
    {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
}

#[test]
fn check_config_names_field_value_and_reason_for_every_problem() {
    let dir = TempDir::new("bad");
    let cases = [
        ("[global]\ninterface = \"eth0\"\nbogus = 1\n", &["bogus", "line 3"][..]),
        (
            "[global]\ninterface = \"eth0\"\nring_size = 65536\n[[vip]]\naddress = \"10.77.100.1\"\nport = 70000\n\
             [[vip.backend]]\naddress = \"fd77::1\"\nweight = 300\n",
            &["global.ring_size", "65536", "prime", "vip[0].port", "70000", "weight", "300", "IPv6"][..],
        ),
        (
            "[global]\ninterface = \"eth0\"\n[[vip]]\naddress = \"10.77.100.1\"\nport = 80\n\
             [[vip.backend]]\naddress = \"10.77.1.10\"\n[[vip.backend]]\naddress = \"10.77.1.10\"\n",
            &["backend[1]", "10.77.1.10", "twice"][..],
        ),
    ];
    for (i, (text, needles)) in cases.iter().enumerate() {
        let path = write(&dir.0, &format!("bad{i}.toml"), text);
        let run = cli(&["check-config", &path]).expect("alwayson check-config");
        assert!(!run.status.success(), "case {i} accepted:\n{}", run.stdout);
        for needle in *needles {
            assert!(run.stderr.contains(needle), "case {i}: {needle:?} missing from:\n{}", run.stderr);
        }
    }
}

#[test]
#[ignore = "needs root"]
fn run_refuses_clearly_without_root_a_missing_interface_or_bpffs() {
    require_root("run_refuses_clearly_without_root_a_missing_interface_or_bpffs");
    let bed = TestBed::builder().backends(1).build().expect("bed");
    let config = config_toml(&bed, &[VipConf::new(VIP4, 80, "tcp").backends(0..1)]);
    let in_lb = |config: &str, tag: &str, user: Option<&str>| {
        let path = write(bed.temp_dir(), &format!("{tag}.toml"), config);
        let bin = bin_path("alwayson").expect("alwayson binary").display().to_string();
        let mut args = vec!["run", "--config", &path];
        let mut argv: Vec<&str> = vec![];
        if let Some(user) = user {
            argv.extend(["setpriv", "--reuid", user, "--regid", "nogroup", "--clear-groups", "--"]);
        }
        argv.push(&bin);
        argv.append(&mut args);
        let mut process = bed.spawn(bed.lb_ns(), argv[0], &argv[1..], tag).expect("spawn");
        let status = process.wait(Duration::from_secs(10)).expect("alwayson should exit");
        (status.success(), process.log())
    };

    let (ok, log) = in_lb(&config, "nobody", Some("nobody"));
    assert!(!ok && log.contains("needs root"), "{log}");

    let (ok, log) = in_lb(&config.replace("interface = \"eth0\"", "interface = \"nosuch0\""), "noif", None);
    assert!(!ok && log.contains("global.interface") && log.contains("nosuch0"), "{log}");

    let elsewhere = bed.temp_dir().join("not-bpffs").display().to_string();
    let (ok, log) = in_lb(&config.replace(&bed.pin_dir().display().to_string(), &elsewhere), "nobpffs", None);
    assert!(!ok && log.contains("bpffs") && log.contains("not-bpffs"), "{log}");

    // None of them left anything attached.
    let link = bed.lb_ns().ip(&["link", "show", "dev", "eth0"]).expect("ip link");
    assert!(!link.contains("xdp"), "{link}");
}

#[test]
fn stats_without_an_agent_config_says_what_to_give_once() {
    let out = cli(&["stats", "--config", "/nonexistent/alwayson.toml"]).expect("alwayson stats");
    assert!(!out.status.success(), "{out:?}");
    let said = out.stderr.trim();
    assert!(said.contains("--config FILE") && said.contains("--socket PATH"), "{said}");
    assert_eq!(said.matches("No such file or directory").count(), 1, "each cause once: {said}");
}
