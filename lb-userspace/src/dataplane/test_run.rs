//! For tests and benchmarks (feature `testing`): `BPF_PROG_TEST_RUN`, the
//! program run on a crafted frame, for fixtures and per-packet cost figures;
//! the baseline programs; what the maps and the program take.

use std::time::Duration;

use aya::{
    maps::{MapData, PerCpuArray},
    programs::Xdp,
    Ebpf, TestRun as _, TestRunOptions,
};
use lb_common::{maps as names, DecapCounter};

use super::{
    error::{map_err, Result},
    load::{load_xdp, xdp_mut},
    Dataplane, DataplaneError, DECAP_OBJECT,
};

/// `xdp_drop` and `xdp_pass`: the measuring floor and the test bed's veth-peer program.
static BASELINE_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/baseline"));

/// Program `name` of `ebpf`, as XDP.
fn xdp<'e>(ebpf: &'e Ebpf, name: &'static str) -> Result<&'e Xdp> {
    let program = ebpf.program(name).ok_or(DataplaneError::MissingProgram(name))?;
    program.try_into().map_err(|source| DataplaneError::Program { name, source })
}

/// Room for programs that grow the frame (encapsulation).
const HEADROOM_OUT: usize = 256;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestRunOutcome {
    /// The XDP action the program returned.
    pub action: u32,
    /// The frame as the program left it.
    pub packet: Vec<u8>,
    /// Average time per run, as the kernel measured it.
    pub per_run: Duration,
}

/// `struct xdp_md` as `ctx_in`: tells the kernel which interface the frame "arrived" on.
fn xdp_md(len: usize, ingress_ifindex: u32) -> [u8; 24] {
    let fields = [0u32, len as u32, 0, ingress_ifindex, 0, 0];
    let mut out = [0u8; 24];
    for (chunk, f) in out.chunks_exact_mut(4).zip(fields) {
        chunk.copy_from_slice(&f.to_ne_bytes());
    }
    out
}

pub(super) fn run(
    program: &Xdp,
    name: &'static str,
    frame: &[u8],
    ingress_ifindex: u32,
    repeat: u32,
) -> Result<TestRunOutcome, DataplaneError> {
    let mut out = vec![0u8; frame.len() + HEADROOM_OUT];
    let ctx = xdp_md(frame.len(), ingress_ifindex);
    let result = program
        .test_run(TestRunOptions {
            data_in: Some(frame),
            data_out: Some(&mut out),
            ctx_in: (ingress_ifindex != 0).then_some(&ctx[..]),
            repeat: repeat.max(1),
            ..Default::default()
        })
        .map_err(|source| DataplaneError::Program { name, source })?;
    out.truncate(result.data_size_out as usize);
    Ok(TestRunOutcome { action: result.return_value, packet: out, per_run: result.duration })
}

impl Dataplane {
    /// Runs the balancer on `frame` as if it arrived on `ingress_ifindex` of the
    /// calling thread's network namespace (0: its loopback), `repeat` times.
    pub fn test_run(
        &self,
        frame: &[u8],
        ingress_ifindex: u32,
        repeat: u32,
    ) -> Result<TestRunOutcome, DataplaneError> {
        run(self.program(), names::PROGRAM, frame, ingress_ifindex, repeat)
    }

    /// Kernel memory of each map, as the kernel accounts it (`memlock` in fdinfo).
    pub fn map_memory(&self) -> Vec<(&'static str, u64)> {
        use std::os::fd::AsRawFd as _;
        self.map_fds
            .iter()
            .map(|(name, fd)| {
                let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
                    .unwrap_or_default();
                let bytes =
                    info.lines().find_map(|l| l.strip_prefix("memlock:")).and_then(|v| v.trim().parse().ok());
                (*name, bytes.unwrap_or(0))
            })
            .collect()
    }

    /// The loaded program's size: instructions the verifier processed, and
    /// bytes of the translated and the JIT-compiled program.
    pub fn program_size(&self) -> Result<(Option<u32>, Option<u32>, u32)> {
        let info = self
            .program()
            .info()
            .map_err(|source| DataplaneError::Program { name: names::PROGRAM, source })?;
        Ok((info.verified_instruction_count(), info.size_translated(), info.size_jitted()))
    }
}

/// The trivial programs of the `baseline` object.
pub struct Baseline {
    ebpf: Ebpf,
}

impl Baseline {
    pub const DROP: &'static str = "xdp_drop";
    pub const PASS: &'static str = "xdp_pass";

    pub fn load() -> Result<Self, DataplaneError> {
        let mut ebpf = Ebpf::load(BASELINE_OBJECT)?;
        for name in [Self::DROP, Self::PASS] {
            load_xdp(&mut ebpf, name)?;
        }
        Ok(Self { ebpf })
    }

    pub fn program_mut(&mut self, name: &'static str) -> Result<&mut Xdp, DataplaneError> {
        xdp_mut(&mut self.ebpf, name)
    }

    /// Runs `xdp_drop` on `frame`: the floor for per-packet cost.
    pub fn test_run_drop(&self, frame: &[u8], repeat: u32) -> Result<TestRunOutcome, DataplaneError> {
        run(xdp(&self.ebpf, Self::DROP)?, Self::DROP, frame, 0, repeat)
    }
}

/// The decap program loaded with a private counter map and attached
/// nowhere, for `BPF_PROG_TEST_RUN`.
pub struct DecapTestRun {
    ebpf: Ebpf,
}

impl DecapTestRun {
    pub fn load() -> Result<Self, DataplaneError> {
        let mut ebpf = Ebpf::load(DECAP_OBJECT)?;
        load_xdp(&mut ebpf, names::DECAP_PROGRAM)?;
        Ok(Self { ebpf })
    }

    /// Runs the program once on `frame`.
    pub fn run(&self, frame: &[u8]) -> Result<TestRunOutcome, DataplaneError> {
        let name = names::DECAP_PROGRAM;
        run(xdp(&self.ebpf, name)?, name, frame, 0, 1)
    }

    pub fn counters(&self) -> Result<Vec<(DecapCounter, u64)>, DataplaneError> {
        let name = names::DECAP_COUNTERS;
        let map = self.ebpf.map(name).ok_or(DataplaneError::MissingMap(name))?;
        let map: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map).map_err(map_err(name))?;
        DecapCounter::ALL
            .into_iter()
            .map(|c| Ok((c, map.get(&c.slot(), 0).map_err(map_err(name))?.iter().sum())))
            .collect()
    }
}
