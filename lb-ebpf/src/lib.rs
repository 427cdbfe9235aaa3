#![no_std]
// The program is the `balancer` binary (src/main.rs). This empty library lets
// lb-userspace name the crate as a build-dependency, so cargo rebuilds the
// agent (which embeds the object) when this crate changes.
