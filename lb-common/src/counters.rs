//! Layout of the global per-CPU `COUNTERS` array: one slot per XDP verdict,
//! then one per drop reason, then one per event. Events are things worth
//! counting that are not drops (a packet forwarded despite IPv4 options, a
//! flow re-selected because its backend went away).

/// XDP verdicts, numbered as the kernel numbers `xdp_action`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Aborted = 0,
    Drop = 1,
    Pass = 2,
    Tx = 3,
    Redirect = 4,
}

impl Verdict {
    pub const ALL: [Verdict; 5] = [Self::Aborted, Self::Drop, Self::Pass, Self::Tx, Self::Redirect];

    pub const fn from_action(action: u32) -> Option<Self> {
        match action {
            0 => Some(Self::Aborted),
            1 => Some(Self::Drop),
            2 => Some(Self::Pass),
            3 => Some(Self::Tx),
            4 => Some(Self::Redirect),
            _ => None,
        }
    }

    pub const fn slot(self) -> u32 {
        self as u32
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Aborted => "aborted",
            Self::Drop => "drop",
            Self::Pass => "pass",
            Self::Tx => "tx",
            Self::Redirect => "redirect",
        }
    }
}

/// Why the balancer dropped a packet. Every `XDP_DROP` has exactly one.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// An IP or L4 header runs past the end of the frame.
    Truncated = 0,
    /// IPv4 header length below 20 bytes, or an IP version that disagrees with the EtherType.
    BadIpHeader = 1,
    /// IPv4 total length or IPv6 payload length claims more than the frame holds,
    /// or less than the headers.
    BadIpLength = 2,
    /// An IP fragment addressed to a VIP address: fragments carry no ports
    /// (after the first), so they cannot be balanced consistently.
    Fragment = 3,
    /// More IPv6 extension headers before the L4 header than the parser walks,
    /// addressed to a VIP address.
    Ipv6ExtChain = 4,
    /// The VIP's ring is empty: no usable backend.
    NoBackend = 5,
    /// `bpf_fib_lookup` found no route to the backend (or forwarding is disabled).
    NoRoute = 6,
    /// The backend's next hop has no resolved neighbour entry yet.
    NoNeighbour = 7,
    /// A ring slot or flow names a backend slot that is not set up.
    BadBackend = 8,
    /// The VIP asks for a forwarding mode this program does not implement.
    UnsupportedMode = 9,
    /// A map lookup that cannot fail did (a VIP or backend index beyond the map).
    Internal = 10,
}

impl DropReason {
    pub const COUNT: usize = 11;
    pub const ALL: [DropReason; Self::COUNT] = [
        Self::Truncated,
        Self::BadIpHeader,
        Self::BadIpLength,
        Self::Fragment,
        Self::Ipv6ExtChain,
        Self::NoBackend,
        Self::NoRoute,
        Self::NoNeighbour,
        Self::BadBackend,
        Self::UnsupportedMode,
        Self::Internal,
    ];

    pub const fn slot(self) -> u32 {
        Verdict::ALL.len() as u32 + self as u32
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Truncated => "truncated",
            Self::BadIpHeader => "bad_ip_header",
            Self::BadIpLength => "bad_ip_length",
            Self::Fragment => "fragment",
            Self::Ipv6ExtChain => "ipv6_ext_chain",
            Self::NoBackend => "no_backend",
            Self::NoRoute => "no_route",
            Self::NoNeighbour => "no_neighbour",
            Self::BadBackend => "bad_backend",
            Self::UnsupportedMode => "unsupported_mode",
            Self::Internal => "internal",
        }
    }
}

/// Counted occurrences that are not drops.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A VIP packet with IPv4 options: forwarded unchanged (DSR does not touch L3).
    Ipv4Options = 0,
    /// A fragment to an address that is not a VIP: passed to the stack.
    FragmentPassed = 1,
    /// A VIP packet that carried IPv6 extension headers the parser walked.
    Ipv6ExtHeaders = 2,
    /// A packet to a non-VIP address the parser could not fully classify
    /// (unknown L4, too many extension headers): passed to the stack.
    UnclassifiedPassed = 3,
    /// A connection-table hit whose backend was DOWN or removed: re-selected.
    ConnReselected = 4,
    /// The connection table refused an insert; the packet was still forwarded.
    ConnInsertFailed = 5,
}

impl Event {
    pub const COUNT: usize = 6;
    pub const ALL: [Event; Self::COUNT] = [
        Self::Ipv4Options,
        Self::FragmentPassed,
        Self::Ipv6ExtHeaders,
        Self::UnclassifiedPassed,
        Self::ConnReselected,
        Self::ConnInsertFailed,
    ];

    pub const fn slot(self) -> u32 {
        Verdict::ALL.len() as u32 + DropReason::COUNT as u32 + self as u32
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Ipv4Options => "ipv4_options",
            Self::FragmentPassed => "fragment_passed",
            Self::Ipv6ExtHeaders => "ipv6_ext_headers",
            Self::UnclassifiedPassed => "unclassified_passed",
            Self::ConnReselected => "conn_reselected",
            Self::ConnInsertFailed => "conn_insert_failed",
        }
    }
}

/// Entries of the `COUNTERS` map.
pub const COUNTER_SLOTS: u32 = (Verdict::ALL.len() + DropReason::COUNT + Event::COUNT) as u32;

// The `ALL` tables must list every variant once, in slot order.
const _: () = {
    let mut i = 0;
    while i < DropReason::COUNT {
        assert!(DropReason::ALL[i] as usize == i);
        i += 1;
    }
    let mut i = 0;
    while i < Event::COUNT {
        assert!(Event::ALL[i] as usize == i);
        i += 1;
    }
    let mut i = 0;
    while i < Verdict::ALL.len() {
        assert!(Verdict::ALL[i] as usize == i);
        i += 1;
    }
};
