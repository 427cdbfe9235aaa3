//! Builds the XDP program (crate `lb-ebpf`) for the BPF target and leaves the
//! object in OUT_DIR, where `dataplane` embeds it.

use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../lb-ebpf");
    let root = root.to_str().ok_or_else(|| anyhow::anyhow!("non-UTF-8 path {}", root.display()))?;
    aya_build::build_ebpf(
        [Package { name: "lb-ebpf", root_dir: root, ..Default::default() }],
        Toolchain::default(),
    )
}
