//! The Always On agent as a library: everything `alwayson` does, testable.

pub mod dataplane;
pub mod maglev;
