//! Layout of the global per-CPU `COUNTERS` array: one slot per XDP verdict,
//! then one per drop reason, then one per event. Events are things worth
//! counting that are not drops (a packet forwarded despite IPv4 options, a
//! flow re-selected because its backend went away).

/// XDP verdicts, numbered as the kernel numbers `xdp_action` (the XDP program
/// asserts this at compile time), so a verdict's counter slot is its action.
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

    pub const fn slot(self) -> u32 {
        self as u32
    }

    /// The `xdp_action` the program returns for this verdict.
    pub const fn action(self) -> u32 {
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
    /// The frame ends inside a header: a runt Ethernet frame, a VLAN tag, the IP
    /// header; or, addressed to a VIP address, an IPv6 extension header or the
    /// TCP/UDP header (which must also end within the IP packet).
    Truncated = 0,
    /// IPv4 header length below 20 bytes, or an IP version that disagrees with the EtherType.
    BadIpHeader = 1,
    /// IPv4 total length or IPv6 payload length claims more than the frame holds
    /// (all of its buffers, for a multi-buffer frame), or less than the headers.
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
    /// The ring slot a new flow hashes to names a backend slot that is beyond
    /// the map, belongs to another VIP, or does not take flows (neither UP nor
    /// DRAINING). A pinned flow whose backend is unusable is re-selected instead.
    BadBackend = 8,
    /// The VIP asks for a forwarding mode this program does not implement.
    UnsupportedMode = 9,
    /// A map lookup that cannot fail did (the config entry, a ring chunk or a
    /// next-hop slot beyond its map), or the agent has not written the ring size yet.
    Internal = 10,
    /// The FIB reaches the backend through a gateway. DSR leaves the IP header
    /// as it is, so the router would send the frame straight back: a DSR
    /// backend must be on one of the balancer's links.
    NotOnLink = 11,
    /// A TCP header, addressed to a VIP address, whose data offset is below
    /// 5 words or runs past the end of the IP packet: no TCP stack would take
    /// it, so it is not worth a backend's time (nor a connection-table entry).
    BadL4Header = 12,
    /// `mode = "tunnel"`: the frame could not be grown by the outer header
    /// (`bpf_xdp_adjust_head` refused: no headroom), or the outer packet would
    /// be longer than its length field can say (65,535 bytes).
    EncapNoRoom = 13,
    /// `mode = "tunnel"`: the encapsulated packet would exceed the egress
    /// MTU and no ICMP error answered it: IPv4 without DF (XDP cannot
    /// fragment), or this CPU's ICMP budget for the second was spent.
    EncapTooBig = 14,
    /// `mode = "nat"`: every source port tried for a new mapping is taken
    /// toward that backend (the VIP's port range is exhausted, or nearly).
    NatNoPort = 15,
    /// `mode = "nat"`: a NAT table refused a new mapping (full).
    NatTableFull = 16,
    /// `mode = "nat"`: a TCP packet other than a SYN for a flow with no
    /// mapping: only a SYN may create one (a flood of ACKs cannot fill the
    /// table), and a backend would reset a connection it never saw.
    NatNoEntry = 17,
}

impl DropReason {
    pub const COUNT: usize = 18;
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
        Self::NotOnLink,
        Self::BadL4Header,
        Self::EncapNoRoom,
        Self::EncapTooBig,
        Self::NatNoPort,
        Self::NatTableFull,
        Self::NatNoEntry,
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
            Self::NotOnLink => "not_on_link",
            Self::BadL4Header => "bad_l4_header",
            Self::EncapNoRoom => "encap_no_room",
            Self::EncapTooBig => "encap_too_big",
            Self::NatNoPort => "nat_no_port",
            Self::NatTableFull => "nat_table_full",
            Self::NatNoEntry => "nat_no_entry",
        }
    }
}

/// Counted occurrences that are not drops.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A VIP packet with IPv4 options, forwarded unchanged (DSR does not touch L3).
    Ipv4Options = 0,
    /// A fragment to an address that is not a VIP: passed to the stack.
    FragmentPassed = 1,
    /// A VIP packet with IPv6 extension headers the parser walked, forwarded unchanged.
    Ipv6ExtHeaders = 2,
    /// A packet to a non-VIP address the parser could not classify (TCP/UDP
    /// header cut short, a TCP data offset below 5 or past the IP packet, IPv6
    /// extension chain cut short or longer than the parser walks): passed to
    /// the stack.
    UnclassifiedPassed = 3,
    /// A flow in the connection table whose backend can no longer take it
    /// (DOWN, removed, now another VIP's), balanced again onto its ring slot's
    /// owner. Not counted when the packet is then dropped before a backend is chosen.
    ConnReselected = 4,
    /// The connection table refused an insert; the packet was still forwarded.
    ConnInsertFailed = 5,
    /// An ICMP fragmentation-needed or packet-too-big error about a VIP flow,
    /// forwarded to the backend serving that flow: its replies are what was too
    /// big, and only its kernel can lower their size.
    IcmpTooBig = 6,
    /// A flow recorded in the connection table (it hashed to a ring slot in
    /// flux, or every flow is recorded).
    ConnRecorded = 7,
    /// A flow that would have been recorded was not: its CPU had recorded
    /// `flow_record_limit` flows this second already. It was still forwarded.
    ConnRecordLimited = 8,
    /// A packet of an unrecorded flow, not a SYN, on a ring slot in flux, sent
    /// to the slot's prior owner: a flow that began before the slot changed.
    ConnPriorOwner = 9,
    /// A tunnel VIP's packet that would not fit the egress MTU once
    /// encapsulated, answered with ICMP fragmentation-needed (IPv4, DF set)
    /// or packet-too-big (IPv6) carrying the MTU minus the outer header.
    TooBigSent = 10,
    /// Such a packet left unanswered: this CPU had sent its
    /// `icmp_too_big_limit` errors this second (it drops as `encap_too_big`).
    TooBigLimited = 11,
    /// A new NAT mapping (client flow → balancer address:port → backend).
    NatMapped = 12,
}

impl Event {
    pub const COUNT: usize = 13;
    pub const ALL: [Event; Self::COUNT] = [
        Self::Ipv4Options,
        Self::FragmentPassed,
        Self::Ipv6ExtHeaders,
        Self::UnclassifiedPassed,
        Self::ConnReselected,
        Self::ConnInsertFailed,
        Self::IcmpTooBig,
        Self::ConnRecorded,
        Self::ConnRecordLimited,
        Self::ConnPriorOwner,
        Self::TooBigSent,
        Self::TooBigLimited,
        Self::NatMapped,
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
            Self::IcmpTooBig => "icmp_too_big",
            Self::ConnRecorded => "conn_recorded",
            Self::ConnRecordLimited => "conn_record_limited",
            Self::ConnPriorOwner => "conn_prior_owner",
            Self::TooBigSent => "too_big_sent",
            Self::TooBigLimited => "too_big_limited",
            Self::NatMapped => "nat_mapped",
        }
    }
}

/// What the `decap` program (on backends of tunnel VIPs) counts, per CPU, in
/// `DECAP_COUNTERS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecapCounter {
    /// IPIP or IP6IP6 stripped: the inner packet went to the stack.
    Decapsulated = 0,
    /// Not IPIP or IP6IP6 (or an outer fragment, which only the stack can
    /// reassemble): passed untouched.
    Passed = 1,
    /// IPIP or IP6IP6 whose outer or inner header is cut short or
    /// inconsistent: dropped.
    Malformed = 2,
}

impl DecapCounter {
    pub const ALL: [DecapCounter; 3] = [Self::Decapsulated, Self::Passed, Self::Malformed];

    pub const fn slot(self) -> u32 {
        self as u32
    }

    pub const fn name(self) -> &'static str {
        match self {
            Self::Decapsulated => "decapsulated",
            Self::Passed => "passed",
            Self::Malformed => "malformed",
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
    while i < DecapCounter::ALL.len() {
        assert!(DecapCounter::ALL[i] as usize == i);
        i += 1;
    }
    let mut i = 0;
    while i < Verdict::ALL.len() {
        assert!(Verdict::ALL[i] as usize == i);
        i += 1;
    }
};
