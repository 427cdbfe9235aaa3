//! The etcd client (`lb_userspace::cluster::etcd`) against a real etcd
//! (Debian's `etcd-server`) on loopback: leases, puts, ranges, the
//! create-if-absent transaction, and endpoints that are dead or silent.

use std::{
    fs::File,
    net::TcpListener,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use lb_userspace::cluster::etcd::{Etcd, EtcdError};

const ETCD: &str = "/usr/bin/etcd";
const TIMEOUT: Duration = Duration::from_secs(1);
const STARTUP: Duration = Duration::from_secs(30);

/// Fails the calling test when etcd is not installed. Tests that call it are
/// `#[ignore = "needs etcd (Debian etcd-server)"]`: `cargo xtask test` runs them
/// when root or under `CI=true`, where a missing etcd must fail, never pass unseen.
fn require_etcd(test: &str) {
    if !Path::new(ETCD).is_file() {
        panic!("{test} needs etcd at {ETCD}: apt-get install etcd-server (or `cargo xtask setup` as root)");
    }
}

/// A single-member etcd on 127.0.0.1 in a fresh temp dir; killed and its dir
/// removed on drop, also when the test panics.
struct EtcdServer {
    child: Child,
    dir: PathBuf,
    client: String,
}

impl EtcdServer {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("alwayson-etcd-{}-{}", std::process::id(), nanos()));
        std::fs::create_dir(&dir).expect("temp dir");
        let (client_port, peer_port) = (free_port(), free_port());
        let client = format!("http://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = File::create(dir.join("etcd.log")).expect("log file");
        let child = Command::new(ETCD)
            .arg("--name=t")
            .arg(format!("--data-dir={}", dir.join("data").display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=t={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        Self { child, dir, client }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default()
    }

    /// Until etcd answers a status request (it has elected itself leader by then).
    async fn wait_ready(&mut self, etcd: &Etcd) {
        let deadline = Instant::now() + STARTUP;
        loop {
            match etcd.status().await {
                Ok(version) if !version.is_empty() => return,
                result => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!("etcd exited ({status}) before answering; log:\n{}", self.log());
                    }
                    if Instant::now() >= deadline {
                        panic!("etcd did not answer within {STARTUP:?}: {result:?}; log:\n{}", self.log());
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn nanos() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

/// A port nobody listens on (the kernel's pick, released at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("local_addr").port()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

fn endpoints(list: &[&str]) -> Vec<String> {
    list.iter().map(|e| e.to_string()).collect()
}

#[test]
#[ignore = "needs etcd (Debian etcd-server)"]
fn every_call_against_a_real_etcd() {
    require_etcd("every_call_against_a_real_etcd");
    let mut server = EtcdServer::start();
    runtime().block_on(async {
        let etcd = Etcd::new(&endpoints(&[&server.client]), TIMEOUT).expect("client");
        server.wait_ready(&etcd).await;

        // A leased key lives and dies with its lease.
        let lease = etcd.grant(Duration::from_secs(30)).await.expect("grant");
        let first = etcd.put("lb/health/a", b"up", Some(lease)).await.expect("put with lease");
        let second = etcd.put("lb/health/b", b"down", None).await.expect("put");
        assert!(second > first, "revisions {first} then {second}");
        etcd.put("lb/healthy", b"outside the prefix", None).await.expect("put");
        let (revision, kvs) = etcd.get_prefix("lb/health/").await.expect("get_prefix");
        assert!(revision >= second);
        assert_eq!(
            kvs,
            vec![("lb/health/a".into(), b"up".to_vec()), ("lb/health/b".into(), b"down".to_vec())]
        );
        let ttl = etcd.keep_alive(lease).await.expect("keep_alive");
        assert!(ttl > Duration::from_secs(20) && ttl <= Duration::from_secs(30), "TTL {ttl:?}");
        etcd.revoke(lease).await.expect("revoke");
        assert_eq!(etcd.get("lb/health/a").await.expect("get"), None);
        let (_, kvs) = etcd.get_prefix("lb/health/").await.expect("get_prefix");
        assert_eq!(kvs, vec![("lb/health/b".into(), b"down".to_vec())]);
        let kept = etcd.keep_alive(lease).await;
        assert!(matches!(kept, Err(EtcdError::LeaseGone)), "keep_alive on a revoked lease: {kept:?}");
        let put = etcd.put("lb/health/a", b"up", Some(lease)).await;
        assert!(matches!(put, Err(EtcdError::LeaseGone)), "put on a revoked lease: {put:?}");

        // The whole key space, get and delete.
        let (_, all) = etcd.get_prefix("").await.expect("get_prefix of everything");
        assert_eq!(all.len(), 2, "{all:?}");
        assert_eq!(etcd.get("lb/healthy").await.expect("get"), Some(b"outside the prefix".to_vec()));
        etcd.delete("lb/healthy").await.expect("delete");
        etcd.delete("lb/healthy").await.expect("deleting a missing key");
        assert_eq!(etcd.get("lb/healthy").await.expect("get"), None);

        // Create-if-absent: the first writer wins, the second learns its value.
        let created = etcd.put_if_absent("lb/owner", b"node-1", None).await.expect("put_if_absent");
        assert_eq!(created, (true, b"node-1".to_vec()));
        let lost = etcd.put_if_absent("lb/owner", b"node-2", None).await.expect("put_if_absent");
        assert_eq!(lost, (false, b"node-1".to_vec()));
        assert_eq!(etcd.get("lb/owner").await.expect("get"), Some(b"node-1".to_vec()));

        // A dead first endpoint and a silent one: the live one answers, and
        // once it has, the next request goes to it first (no timeout to wait).
        let refused = format!("127.0.0.1:{}", free_port());
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let silent = listener.local_addr().expect("local_addr").to_string();
        let etcd = Etcd::new(&endpoints(&[&refused, &silent, &server.client]), TIMEOUT).expect("client");
        let started = Instant::now();
        assert_eq!(etcd.get("lb/owner").await.expect("get past dead endpoints"), Some(b"node-1".to_vec()));
        assert!(started.elapsed() >= TIMEOUT, "the silent endpoint was not waited for");
        let started = Instant::now();
        etcd.put("lb/owner2", b"x", None).await.expect("put");
        assert!(started.elapsed() < TIMEOUT / 2, "took {:?}: not the live endpoint first", started.elapsed());
    });
}

#[test]
fn unreachable_endpoints_fail_within_the_timeout() {
    runtime().block_on(async {
        let refused = format!("127.0.0.1:{}", free_port());
        let etcd = Etcd::new(&endpoints(&[&refused]), TIMEOUT).expect("client");
        let started = Instant::now();
        let result = etcd.put("k", b"v", None).await;
        assert!(started.elapsed() < TIMEOUT, "took {:?}", started.elapsed());
        match result {
            Err(EtcdError::Unreachable(why)) => assert!(why.contains(&refused), "{why}"),
            other => panic!("expected Unreachable, got {other:?}"),
        }

        // Accepts (the kernel's backlog) but never answers.
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let silent = listener.local_addr().expect("local_addr").to_string();
        let etcd = Etcd::new(&endpoints(&[&format!("http://{silent}"), &refused]), TIMEOUT).expect("client");
        let started = Instant::now();
        let result = etcd.get_prefix("k").await;
        let took = started.elapsed();
        assert!(took >= TIMEOUT && took < TIMEOUT + Duration::from_millis(500), "took {took:?}");
        match result {
            Err(EtcdError::Unreachable(why)) => {
                assert!(why.contains(&silent) && why.contains(&refused), "{why}")
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
    });
}
