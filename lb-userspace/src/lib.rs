//! The Always On agent as a library: everything `alwayson` does, testable.

pub mod agent;
pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod dataplane;
pub mod decap;
pub mod desired;
pub mod health;
pub mod import;
pub mod maglev;
pub mod neighbours;
pub mod reconcile;
pub mod runtime;
pub mod stats;
