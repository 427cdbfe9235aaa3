//! Traffic that tests judge the balancer by: long-lived streaming connections
//! (did any reset or stall?) and a steady trickle of new connections (did any
//! fail?).

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddr, TcpStream},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc,
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::bed::TestBed;

const IO_TIMEOUT: Duration = Duration::from_secs(3);

/// How long a stream waits for an echo before it counts as broken, unless
/// the test expects a longer stall (see [`Streams::open_patient`]).
pub const STREAM_PATIENCE: Duration = IO_TIMEOUT;

/// What the streams saw.
#[derive(Debug, Default)]
pub struct StreamReport {
    /// Every failure: resets, early EOFs, timeouts, wrong echoes.
    pub errors: Vec<String>,
    /// The longest wait for an echo on any stream.
    pub max_gap: Duration,
    /// Round trips completed, over all streams.
    pub round_trips: u64,
    /// Which backend each stream is on, by its banner.
    pub backends: Vec<String>,
    /// Each stream's own outcome, in opening order.
    pub streams: Vec<StreamOutcome>,
}

#[derive(Debug, Clone)]
pub struct StreamOutcome {
    pub backend: String,
    pub round_trips: u64,
    pub max_gap: Duration,
    pub error: Option<String>,
}

impl StreamReport {
    /// Failures of the streams that were not on any of `backends`.
    pub fn errors_except_on(&self, backends: &[&str]) -> Vec<String> {
        self.streams
            .iter()
            .filter(|s| !backends.contains(&s.backend.as_str()))
            .filter_map(|s| s.error.clone())
            .collect()
    }

    /// The longest stall of the streams that were not on any of `backends`.
    pub fn max_gap_except_on(&self, backends: &[&str]) -> Duration {
        self.streams
            .iter()
            .filter(|s| !backends.contains(&s.backend.as_str()))
            .map(|s| s.max_gap)
            .max()
            .unwrap_or_default()
    }
}

/// `n` TCP connections to `vip`, each sending a chunk every `period` and
/// checking its echo, until stopped. Dropped without [`Streams::stop`] (a test
/// that panicked), the threads are stopped and joined all the same.
pub struct Streams {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<(u64, Duration, Option<String>)>>,
    backends: Vec<String>,
    /// Each stream's local address (the flow's source), in opening order.
    locals: Vec<SocketAddr>,
    /// Round trips each stream has completed, counted as they happen.
    trips: Vec<Arc<AtomicU64>>,
}

impl Streams {
    pub fn open(
        bed: &TestBed,
        client: usize,
        vip: SocketAddr,
        n: usize,
        period: Duration,
    ) -> std::io::Result<Self> {
        Self::open_patient(bed, client, vip, n, period, STREAM_PATIENCE)
    }

    /// Like [`Streams::open`], for a test in which some streams are meant to
    /// stall: a stream breaks only after waiting `patience` for an echo.
    /// A path that is down for W seconds can stall a stream for about 2W,
    /// since TCP doubles its retransmission timeout on every loss.
    pub fn open_patient(
        bed: &TestBed,
        client: usize,
        vip: SocketAddr,
        n: usize,
        period: Duration,
        patience: Duration,
    ) -> std::io::Result<Self> {
        // Built first, so a connection that fails part way stops the streams
        // already running (by Drop) instead of leaving them behind.
        let mut streams = Self {
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            backends: Vec::new(),
            locals: Vec::new(),
            trips: Vec::new(),
        };
        for id in 0..n {
            let stream = bed.tcp_connect(client, vip, IO_TIMEOUT)?;
            stream.set_read_timeout(Some(IO_TIMEOUT))?;
            let mut reader = BufReader::new(stream.try_clone()?);
            let mut banner = String::new();
            reader.read_line(&mut banner)?;
            stream.set_read_timeout(Some(patience))?;
            streams.backends.push(banner.trim().to_string());
            streams.locals.push(stream.local_addr()?);
            let (stop, trips) = (streams.stop.clone(), Arc::new(AtomicU64::new(0)));
            streams.trips.push(trips.clone());
            streams
                .threads
                .push(std::thread::spawn(move || stream_loop(id, stream, reader, period, &stop, &trips)));
        }
        Ok(streams)
    }

    pub fn backends(&self) -> &[String] {
        &self.backends
    }

    /// Each stream's local address, in opening order: with the VIP, its flow.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.locals
    }

    /// Round trips each stream has completed so far, in opening order.
    pub fn round_trips_so_far(&self) -> Vec<u64> {
        self.trips.iter().map(|t| t.load(Ordering::Relaxed)).collect()
    }

    pub fn stop(mut self) -> StreamReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut report = StreamReport { backends: self.backends.clone(), ..Default::default() };
        let threads = std::mem::take(&mut self.threads);
        for (t, backend) in threads.into_iter().zip(std::mem::take(&mut self.backends)) {
            let (trips, gap, error) = t.join().expect("stream thread");
            report.round_trips += trips;
            report.max_gap = report.max_gap.max(gap);
            report.errors.extend(error.clone());
            report.streams.push(StreamOutcome { backend, round_trips: trips, max_gap: gap, error });
        }
        report
    }
}

impl Drop for Streams {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            // A panicked stream thread has nothing more to report.
            let _ = thread.join();
        }
    }
}

fn stream_loop(
    id: usize,
    mut stream: TcpStream,
    mut reader: BufReader<TcpStream>,
    period: Duration,
    stop: &AtomicBool,
    done: &AtomicU64,
) -> (u64, Duration, Option<String>) {
    let mut trips = 0u64;
    let mut max_gap = Duration::ZERO;
    let mut last = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let chunk = format!("stream {id} chunk {trips:08}\n");
        let mut echo = vec![0u8; chunk.len()];
        let result = stream.write_all(chunk.as_bytes()).and_then(|()| reader.read_exact(&mut echo));
        if let Err(e) = result {
            return (
                trips,
                max_gap.max(last.elapsed()),
                Some(format!("stream {id} after {trips} round trips: {e}")),
            );
        }
        if echo != chunk.as_bytes() {
            return (
                trips,
                max_gap,
                Some(format!("stream {id}: echo {:?} for {chunk:?}", String::from_utf8_lossy(&echo))),
            );
        }
        trips += 1;
        done.store(trips, Ordering::Relaxed);
        max_gap = max_gap.max(last.elapsed());
        last = Instant::now();
        std::thread::sleep(period);
    }
    (trips, max_gap, None)
}

/// What the opener saw.
#[derive(Debug, Default)]
pub struct OpenReport {
    pub ok: u64,
    pub failed: Vec<String>,
    /// When each failure happened (since the opener started).
    pub failed_at: Vec<Duration>,
    /// Successful connections by backend.
    pub by_backend: BTreeMap<String, u64>,
    /// (time since start, backend) of every successful connection.
    pub timeline: Vec<(Duration, String)>,
}

/// Opens a new connection to `vip` every `period` (reads the banner, closes),
/// on its own thread, until stopped. Dropped without [`Opener::stop`] (a test
/// that panicked), the thread is stopped and joined all the same.
pub struct Opener {
    stop: Arc<AtomicBool>,
    /// `None` once [`Opener::stop`] has joined it.
    thread: Option<JoinHandle<OpenReport>>,
    ok: Arc<AtomicU64>,
    started: Instant,
}

impl Opener {
    pub fn start(bed: &TestBed, client: usize, vip: SocketAddr, period: Duration) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let ok = Arc::new(AtomicU64::new(0));
        let ns = bed.client_ns(client).name().to_string();
        let (stop2, ok2) = (stop.clone(), ok.clone());
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            crate::netns::enter(&ns);
            let start = started;
            let mut report = OpenReport::default();
            while !stop2.load(Ordering::Relaxed) {
                let at = start.elapsed();
                match banner(vip) {
                    Ok(name) => {
                        report.ok += 1;
                        ok2.fetch_add(1, Ordering::Relaxed);
                        *report.by_backend.entry(name.clone()).or_default() += 1;
                        report.timeline.push((at, name));
                    }
                    Err(e) => {
                        report.failed.push(format!("at {at:?}: {e}"));
                        report.failed_at.push(at);
                    }
                }
                std::thread::sleep(period.saturating_sub(start.elapsed() - at));
            }
            report
        });
        Self { stop, thread: Some(thread), ok, started }
    }

    /// The instant the timeline's durations count from.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Successful connections so far.
    pub fn ok_so_far(&self) -> u64 {
        self.ok.load(Ordering::Relaxed)
    }

    pub fn stop(mut self) -> OpenReport {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.take().expect("joined only here").join().expect("opener thread")
    }
}

impl Drop for Opener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            // A panicked opener thread has nothing more to report.
            let _ = thread.join();
        }
    }
}

fn banner(vip: SocketAddr) -> std::io::Result<String> {
    let stream = TcpStream::connect_timeout(&vip, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    let mut name = String::new();
    BufReader::new(stream).read_line(&mut name)?;
    if name.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "closed before the banner"));
    }
    Ok(name.trim().to_string())
}
