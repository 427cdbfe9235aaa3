use which::which;

/// Rebuild the program when bpf-linker changes (a new LLVM can change codegen).
fn main() {
    if let Ok(bpf_linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", bpf_linker.display());
    }
}
