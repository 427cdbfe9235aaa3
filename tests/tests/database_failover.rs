//! A database behind a VIP: real MariaDB primary and replica (real replication)
//! on two backends, the VIP on 3306 with the primary as backend and the replica
//! as backup, an `exec` health check that pings the server. A client writes rows
//! through the VIP, the primary is SIGKILLed, and the client must read the same
//! rows from the replica through the same VIP within 3 s.

use std::time::{Duration, Instant};

use alwayson_tests::{
    agent::Agent,
    bed::{vip4, TestBed, VIP4},
    mariadb::{self, create_app, setup_replication, MariaDb, APP, PORT, TABLE},
    require_root,
};

const ROWS: u32 = 100;
/// Rows go in through this many connections, ROWS / BATCHES rows each.
const BATCHES: u32 = 10;
/// The promise: from the primary's death to the first good read from the replica.
const FAILOVER_BUDGET: Duration = Duration::from_secs(3);
/// One client attempt (connect, login, query) during the failover.
const ATTEMPT: Duration = Duration::from_millis(500);
const BETWEEN_ATTEMPTS: Duration = Duration::from_millis(20);
/// How long the reader keeps trying before the test gives up (the assertion is on FAILOVER_BUDGET).
const GIVE_UP: Duration = Duration::from_secs(15);

/// The agent's config: the primary (backend 0) with the replica (backend 1) as
/// backup, health checked by `mariadb-admin ping` every 250 ms.
fn config(bed: &TestBed) -> String {
    format!(
        r#"[global]
interface = "eth0"
xdp_mode = "native"
pin_path = "{pin}"
lock_file = "{tmp}/eth0.lock"

[api]
socket = "{tmp}/api.sock"
runtime_file = "{tmp}/runtime.json"

[[vip]]
name = "db"
address = "{VIP4}"
port = {PORT}
protocol = "tcp"
check = "exec"
exec_command = "{check}"
inter = "250ms"
timeout = "500ms"
rise = 2
fall = 2

  [[vip.backend]]
  name = "primary"
  address = "{primary}"

  [[vip.backend]]
  name = "replica"
  address = "{replica}"
  backup = true
"#,
        pin = bed.pin_dir().display(),
        tmp = bed.temp_dir().display(),
        check = mariadb::ping_command(),
        primary = bed.backend_v4(0),
        replica = bed.backend_v4(1),
    )
}

/// What the client reads: row count, a fingerprint of all rows, and which server answered.
fn read_sql() -> String {
    format!(
        "SELECT COUNT(*), COALESCE(SUM(id), 0), COALESCE(MD5(GROUP_CONCAT(id, '=', value ORDER BY id)), ''), \
         @@server_id FROM {TABLE}"
    )
}

/// (count, fingerprint, server_id) from one line of `read_sql` output.
fn parse_read(out: &str) -> (u32, String, u32) {
    let fields: Vec<&str> = out.trim().split('\t').collect();
    assert_eq!(fields.len(), 4, "unexpected answer {out:?}");
    (
        fields[0].parse().expect("count"),
        format!("{}/{}", fields[1], fields[2]),
        fields[3].parse().expect("server_id"),
    )
}

#[test]
#[ignore = "needs root"]
fn killing_the_primary_moves_the_vip_to_the_replica_within_3s() {
    require_root("killing_the_primary_moves_the_vip_to_the_replica_within_3s");
    let started = Instant::now();
    let bed = TestBed::builder().clients(1).backends(2).start_servers(false).build().expect("bed");
    let client = bed.client_ns(0);

    // 1. Primary and replica, real replication, checked with a row.
    let (primary, replica) = std::thread::scope(|s| {
        let primary = s.spawn(|| MariaDb::on_backend(&bed, 0, 1));
        let replica = s.spawn(|| MariaDb::on_backend(&bed, 1, 2));
        (primary.join().unwrap(), replica.join().unwrap())
    });
    let mut primary = primary.expect("primary MariaDB");
    let replica = replica.expect("replica MariaDB");
    setup_replication(&primary, &replica).expect("replication");
    create_app(&primary).expect("app schema and users");
    primary
        .sql("CREATE TABLE app.marker (note VARCHAR(32)); INSERT INTO app.marker VALUES ('replicated')")
        .expect("marker row");
    replica
        .wait_for("SELECT note FROM app.marker", "replicated", Duration::from_secs(10))
        .expect("a row written on the primary shows up on the replica");
    eprintln!("MariaDB primary and replica replicating after {:?}", started.elapsed());

    // 2. The agent; rows written through the VIP land on the primary.
    let agent = Agent::start(&bed, &config(&bed), &[]).expect("agent");
    for batch in 0..BATCHES {
        let per = ROWS / BATCHES;
        let values: Vec<String> =
            (batch * per + 1..=(batch + 1) * per).map(|id| format!("({id}, 'row-{id}')")).collect();
        let sql = format!("INSERT INTO {TABLE} (id, value) VALUES {}", values.join(", "));
        mariadb::query(client, vip4(PORT), &APP, &sql, Duration::from_secs(5))
            .expect("insert through the VIP");
    }
    let before =
        mariadb::query(client, vip4(PORT), &APP, &read_sql(), Duration::from_secs(5)).expect("read via VIP");
    let (count, fingerprint, server_id) = parse_read(&before);
    assert_eq!(server_id, 1, "the primary (server_id 1) should answer through the VIP");
    assert_eq!(count, ROWS, "rows read back through the VIP");
    replica
        .wait_for(&format!("SELECT COUNT(*) FROM {TABLE}"), &ROWS.to_string(), Duration::from_secs(10))
        .expect("the replica has every row");

    // 3. The primary dies; the client retries through the same VIP until the replica answers.
    primary.kill().expect("SIGKILL the primary");
    let killed = Instant::now();
    let mut attempts = 0u32;
    let mut last = String::new();
    let (answer, failover) = loop {
        attempts += 1;
        match mariadb::query(client, vip4(PORT), &APP, &read_sql(), ATTEMPT) {
            Ok(out) => {
                let at = killed.elapsed();
                let answer = parse_read(&out);
                if answer.2 == 2 && answer.0 == ROWS {
                    break (answer, at);
                }
                last = format!("answered {out:?}");
            }
            Err(e) => last = format!("{e:#}"),
        }
        assert!(
            killed.elapsed() < GIVE_UP,
            "no good read through the VIP {GIVE_UP:?} after the kill ({attempts} attempts); last: {last}\n\
             agent log:\n{}",
            agent.log()
        );
        std::thread::sleep(BETWEEN_ATTEMPTS);
    };

    if last.is_empty() {
        last = "none".into();
    }
    let report = format!(
        "database failover: first good read from the replica {:.0} ms after SIGKILL of the primary \
         ({attempts} attempts; last failure: {last})",
        failover.as_secs_f64() * 1000.0
    );
    println!("{report}");
    eprintln!("{report}");
    assert!(failover <= FAILOVER_BUDGET, "failover took {failover:?}, over {FAILOVER_BUDGET:?}");
    assert_eq!(answer.0, ROWS, "every row is on the replica");
    assert_eq!(answer.1, fingerprint, "the replica's rows are the ones written through the VIP");
    let log = agent.log();
    let primary_addr = bed.backend_v4(0).to_string();
    let down = log
        .lines()
        .find(|l| l.contains("UP -> DOWN") && (l.contains("primary") || l.contains(&primary_addr)));
    assert!(down.is_some(), "the agent should log the primary going UP -> DOWN; log:\n{log}");
    eprintln!("agent: {}", down.unwrap_or_default());
    eprintln!("test took {:?}", started.elapsed());
}
