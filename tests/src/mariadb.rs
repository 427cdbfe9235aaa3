//! Real MariaDB servers (Debian's `mariadb-server`) on a test bed: each with its
//! own datadir and socket under the bed's temp dir, run as `mariadbd` in a
//! namespace (no systemd, no system config: every program gets `--no-defaults`),
//! set up as primary and replica with real replication, and clients that speak
//! to them over TCP from any namespace with the `mariadb` CLI.
//!
//! ```text
//! let primary = MariaDb::on_backend(&bed, 0, 1)?;   // server-id 1
//! let replica = MariaDb::on_backend(&bed, 1, 2)?;   // server-id 2
//! setup_replication(&primary, &replica)?;           // both replica threads run
//! create_app(&primary)?;                            // users, database, table: replicated
//! query(bed.client_ns(0), vip, &APP, "SELECT 1", Duration::from_secs(1))?;
//! ```

use std::{
    collections::BTreeMap,
    io::Read as _,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{anyhow, bail, Context as _, Result};

use crate::{
    bed::TestBed,
    netns::Netns,
    process::Process,
    wait::{try_wait_until, wait_until},
};

/// The port every server listens on (all addresses, so also on the VIPs a
/// DSR backend holds on `lo`).
pub const PORT: u16 = 3306;
/// The application's database and its table: `id INT PRIMARY KEY, value VARCHAR(64)`.
pub const DATABASE: &str = "app";
pub const TABLE: &str = "app.items";

const STARTUP: Duration = Duration::from_secs(30);
/// Admin statements over the socket: generous, they only fail when something is wrong.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);
const REPLICATION_START: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(50);

/// A MariaDB account: created with host `%`, so it may connect from anywhere.
#[derive(Clone, Copy, Debug)]
pub struct User {
    pub name: &'static str,
    pub password: &'static str,
}

/// What the replica logs in as (REPLICATION SLAVE).
pub const REPLICATION: User = User { name: "repl", password: "repl-pw" };
/// The application: all rights on [`DATABASE`].
pub const APP: User = User { name: "app", password: "app-pw" };
/// The health check: may connect, nothing more.
pub const MONITOR: User = User { name: "monitor", password: "monitor-pw" };

/// One `mariadbd` in a namespace, killed (SIGKILL) when dropped, also on panic.
/// Its files live in `<bed temp dir>/<name>/`, removed with the bed.
pub struct MariaDb<'b> {
    ns: &'b Netns,
    name: String,
    host: IpAddr,
    socket: PathBuf,
    process: Process,
}

impl<'b> MariaDb<'b> {
    /// A server on backend `i` of the bed, reached by others at the backend's
    /// IPv4 address, named `mariadb-backend<i>`.
    pub fn on_backend(bed: &'b TestBed, i: usize, server_id: u32) -> Result<Self> {
        Self::start(
            bed,
            bed.backend_ns(i),
            bed.backend_v4(i),
            &format!("mariadb-{}", bed.backend_name(i)),
            server_id,
        )
    }

    /// Creates a fresh datadir (`mariadb-install-db`), starts `mariadbd` in `ns`
    /// listening on 0.0.0.0:3306 with binary logging and `server_id`, and returns
    /// once it accepts connections. `host` is the address other servers (a
    /// replica) reach it at.
    pub fn start(bed: &'b TestBed, ns: &'b Netns, host: IpAddr, name: &str, server_id: u32) -> Result<Self> {
        let dir = bed.temp_dir().join(name);
        let data = dir.join("data");
        let tmp = dir.join("tmp");
        for d in [&data, &tmp] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        install_db(&data, &tmp, &dir.join("install.log"))?;

        let socket = dir.join("mysqld.sock");
        let path = |p: &Path| p.display().to_string();
        let args = vec![
            // First, or mariadbd reads /etc/mysql (bind-address 127.0.0.1, the system datadir).
            "--no-defaults".to_string(),
            "--user=root".into(),
            format!("--datadir={}", path(&data)),
            format!("--tmpdir={}", path(&tmp)),
            format!("--socket={}", path(&socket)),
            format!("--pid-file={}", path(&dir.join("mariadbd.pid"))),
            "--bind-address=0.0.0.0".into(),
            format!("--port={PORT}"),
            format!("--server-id={server_id}"),
            format!("--log-bin={}", path(&data.join("binlog"))),
            format!("--relay-log={}", path(&data.join("relay"))),
            "--binlog-format=ROW".into(),
            // No DNS in the namespaces: never look a client's address up.
            "--skip-name-resolve".into(),
            // Clients killed mid-handshake while a backend fails over must not get their host blocked.
            "--max-connect-errors=1000000".into(),
            // Small and quick: a test server, not a production one.
            "--innodb-buffer-pool-size=32M".into(),
            "--innodb-log-file-size=16M".into(),
            "--performance-schema=OFF".into(),
            // A replica starts replicating only when told to (setup_replication).
            "--skip-slave-start".into(),
        ];
        let mut process = bed.spawn(ns, "mariadbd", &args, name)?;
        process
            .wait_for_line("ready for connections", STARTUP)
            .with_context(|| format!("starting MariaDB {name} in {}", ns.name()))?;
        let server = Self { ns, name: name.to_string(), host, socket, process };
        let id = server.sql("SELECT @@server_id")?;
        if id.trim() != server_id.to_string() {
            bail!("MariaDB {name} says its server_id is {:?}, not {server_id}", id.trim());
        }
        Ok(server)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address other servers reach this one at.
    pub fn host(&self) -> IpAddr {
        self.host
    }

    /// What `mariadbd` has written (its error log goes to stderr).
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Runs `sql` (one or more statements) as root over the socket; returns
    /// the result rows, tab-separated, without a header.
    pub fn sql(&self, sql: &str) -> Result<String> {
        self.root_client(&["--skip-column-names", "-e", sql])
    }

    /// The `mariadb` CLI as root over the socket, in batch mode, with `args`.
    fn root_client(&self, args: &[&str]) -> Result<String> {
        let socket = format!("--socket={}", self.socket.display());
        let mut all = vec!["--no-defaults", &socket, "--user=root", "--batch"];
        all.extend_from_slice(args);
        run_bounded(self.ns, "mariadb", &all, ADMIN_TIMEOUT).with_context(|| format!("on {}", self.name))
    }

    /// Polls `sql` until its output, trimmed, is `expected`.
    pub fn wait_for(&self, sql: &str, expected: &str, timeout: Duration) -> Result<()> {
        let mut last = Ok(String::new());
        let what = format!("{}: {sql:?} to give {expected:?}", self.name);
        let given = wait_until(&what, timeout, POLL, || {
            last = self.sql(sql);
            matches!(&last, Ok(out) if out.trim() == expected).then_some(())
        });
        given.map_err(|e| anyhow!("{e:#}; last: {last:?}"))
    }

    /// `SHOW SLAVE STATUS` as field → value (empty when this is no replica).
    pub fn slave_status(&self) -> Result<BTreeMap<String, String>> {
        // Vertical output, with the names (--skip-column-names would drop them).
        let out = self.root_client(&["-e", "SHOW SLAVE STATUS\\G"])?;
        Ok(out
            .lines()
            .filter_map(|line| line.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect())
    }

    /// SIGKILL: the server dies as in a crash (no shutdown, no goodbye to clients).
    pub fn kill(&mut self) -> Result<()> {
        self.process.signal(libc::SIGKILL)?;
        self.process
            .wait(Duration::from_secs(5))
            .with_context(|| format!("MariaDB {} did not die on SIGKILL", self.name))?;
        Ok(())
    }
}

/// A fresh system database in `data`, root logging in without a password
/// (over the socket, as root, it could anyway).
fn install_db(data: &Path, tmp: &Path, log: &Path) -> Result<()> {
    let out = Command::new("mariadb-install-db")
        .arg("--no-defaults")
        .arg("--user=root")
        .arg(format!("--datadir={}", data.display()))
        // Its own, not /tmp: two bootstraps at once have failed on each other's temporary tables there.
        .arg(format!("--tmpdir={}", tmp.display()))
        .args(["--auth-root-authentication-method=normal", "--skip-test-db", "--skip-name-resolve"])
        .stdin(Stdio::null())
        .output()
        .context("running mariadb-install-db (is mariadb-server installed? cargo xtask setup)")?;
    let text = [out.stdout, out.stderr].concat();
    let _ = std::fs::write(log, &text);
    if !out.status.success() {
        bail!(
            "mariadb-install-db --datadir={} failed ({}):\n{}",
            data.display(),
            out.status,
            String::from_utf8_lossy(&text)
        );
    }
    Ok(())
}

/// Makes `replica` replicate `primary`: a replication user on the primary,
/// `CHANGE MASTER TO … MASTER_USE_GTID=slave_pos; START SLAVE` on the replica,
/// and waits until `SHOW SLAVE STATUS` says both the IO and the SQL thread run.
/// Call it on fresh servers, before anything else is written to the primary:
/// the replica starts from the primary's first binlog.
pub fn setup_replication(primary: &MariaDb, replica: &MariaDb) -> Result<()> {
    let User { name, password } = REPLICATION;
    primary.sql(&format!(
        "CREATE USER IF NOT EXISTS '{name}'@'%' IDENTIFIED BY '{password}'; \
         GRANT REPLICATION SLAVE ON *.* TO '{name}'@'%';"
    ))?;
    replica.sql(&format!(
        "CHANGE MASTER TO MASTER_HOST='{}', MASTER_PORT={PORT}, MASTER_USER='{name}', \
         MASTER_PASSWORD='{password}', MASTER_USE_GTID=slave_pos, MASTER_CONNECT_RETRY=1; \
         START SLAVE;",
        primary.host()
    ))?;
    let mut last = BTreeMap::new();
    let what = format!("{} to replicate {}", replica.name(), primary.name());
    let running = try_wait_until(&what, REPLICATION_START, POLL, || {
        last = replica.slave_status()?;
        let field = |k: &str| last.get(k).map(String::as_str).unwrap_or("");
        Ok((field("Slave_IO_Running") == "Yes" && field("Slave_SQL_Running") == "Yes").then_some(()))
    });
    running.map_err(|e| {
        let field = |k: &str| last.get(k).map(String::as_str).unwrap_or("");
        anyhow!(
            "{e:#}: IO {:?} ({}), SQL {:?} ({}); replica log:\n{}",
            field("Slave_IO_Running"),
            field("Last_IO_Error"),
            field("Slave_SQL_Running"),
            field("Last_SQL_Error"),
            replica.log()
        )
    })
}

/// On the primary (so they replicate): the [`APP`] and [`MONITOR`] users,
/// [`DATABASE`] and the empty [`TABLE`].
pub fn create_app(primary: &MariaDb) -> Result<()> {
    let (app, monitor) = (APP, MONITOR);
    primary.sql(&format!(
        "CREATE DATABASE {DATABASE}; \
         CREATE TABLE {TABLE} (id INT PRIMARY KEY, value VARCHAR(64) NOT NULL) ENGINE=InnoDB; \
         CREATE USER '{}'@'%' IDENTIFIED BY '{}'; \
         GRANT ALL ON {DATABASE}.* TO '{}'@'%'; \
         CREATE USER '{}'@'%' IDENTIFIED BY '{}';",
        app.name, app.password, app.name, monitor.name, monitor.password
    ))?;
    Ok(())
}

/// The health check for an agent's `exec_command` (run by `/bin/sh -c`):
/// `mariadb-admin ping` as [`MONITOR`] over TCP to the backend the agent names
/// in `$ALWAYSON_BACKEND_ADDR` and `$ALWAYSON_BACKEND_PORT`; exit 0 when the
/// server answers. Contains no quotes, so it fits in a TOML string as it is.
pub fn ping_command() -> String {
    format!(
        "mariadb-admin --no-defaults --protocol=tcp --host=$ALWAYSON_BACKEND_ADDR \
         --port=$ALWAYSON_BACKEND_PORT --user={} --password={} --connect-timeout=1 ping",
        MONITOR.name, MONITOR.password
    )
}

/// Runs `sql` as `user` with the `mariadb` CLI in namespace `ns`, connecting
/// over TCP to `server` (e.g. a VIP); returns the rows, tab-separated, without
/// a header. The whole attempt (connect, login, query) is bounded by
/// `timeout`: past it the client is killed and this fails.
pub fn query(ns: &Netns, server: SocketAddr, user: &User, sql: &str, timeout: Duration) -> Result<String> {
    let host = format!("--host={}", server.ip());
    let port = format!("--port={}", server.port());
    let login = format!("--user={}", user.name);
    let password = format!("--password={}", user.password);
    let connect = format!("--connect-timeout={}", timeout.as_secs_f64().ceil().max(1.0) as u64);
    let args = [
        "--no-defaults",
        "--protocol=tcp",
        &host,
        &port,
        &login,
        &password,
        &connect,
        "--batch",
        "--skip-column-names",
        "-e",
        sql,
    ];
    run_bounded(ns, "mariadb", &args, timeout).with_context(|| format!("as {} on {server}", user.name))
}

/// `program args…` in `ns` (by [`Netns::command`]: killing the child kills
/// the program); its stdout, or an error with its stderr, or an error once
/// `timeout` has passed (the program killed).
fn run_bounded(ns: &Netns, program: &str, args: &[&str], timeout: Duration) -> Result<String> {
    let mut child = ns
        .command(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {program} in {}", ns.name()))?;
    let reader = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut text);
            }
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = reader(child.stdout.take().map(|p| Box::new(p) as _));
    let stderr = reader(child.stderr.take().map(|p| Box::new(p) as _));
    let what = format!("{program} in {}", ns.name());
    let status = try_wait_until(&what, timeout, Duration::from_millis(2), || Ok(child.try_wait()?)).ok();
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let (out, err) = (stdout.join().unwrap_or_default(), stderr.join().unwrap_or_default());
    match status {
        None => bail!("{program} in {} did not finish within {timeout:?}: {}", ns.name(), err.trim()),
        Some(status) if !status.success() => {
            bail!("{program} in {} failed ({status}): {}", ns.name(), err.trim())
        }
        Some(_) => Ok(out),
    }
}
