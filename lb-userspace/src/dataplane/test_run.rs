//! `BPF_PROG_TEST_RUN`: the program run on a crafted frame, for fixtures and
//! per-packet cost figures.

use std::time::Duration;

use aya::{
    programs::{ProgramError, Xdp},
    Ebpf, TestRun as _, TestRunOptions,
};

use super::{Dataplane, DataplaneError, BASELINE_OBJECT};

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
        run(self.program(), lb_common::maps::PROGRAM, frame, ingress_ifindex, repeat)
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
            let program: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or(DataplaneError::MissingProgram(name))?
                .try_into()
                .map_err(|source: ProgramError| DataplaneError::Program { name, source })?;
            program.load().map_err(|source| DataplaneError::Program { name, source })?;
        }
        Ok(Self { ebpf })
    }

    fn program(&self, name: &'static str) -> Result<&Xdp, DataplaneError> {
        let program = self.ebpf.program(name).ok_or(DataplaneError::MissingProgram(name))?;
        program.try_into().map_err(|source| DataplaneError::Program { name, source })
    }

    pub fn program_mut(&mut self, name: &'static str) -> Result<&mut Xdp, DataplaneError> {
        let program = self.ebpf.program_mut(name).ok_or(DataplaneError::MissingProgram(name))?;
        program.try_into().map_err(|source| DataplaneError::Program { name, source })
    }

    /// Runs `xdp_drop` on `frame`: the floor for per-packet cost.
    pub fn test_run_drop(&self, frame: &[u8], repeat: u32) -> Result<TestRunOutcome, DataplaneError> {
        run(self.program(Self::DROP)?, Self::DROP, frame, 0, repeat)
    }
}
