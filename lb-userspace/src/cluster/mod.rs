//! Several LB nodes: shared health through etcd, announcements through BIRD.

pub mod announce;
pub mod bird;
pub mod etcd;
pub mod flows;
pub mod keeper;
pub mod member;
pub mod quorum;
pub mod share;
