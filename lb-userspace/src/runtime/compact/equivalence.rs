//! Random sequences of operations, valid and not, against a small file. Like
//! the agent, each goes through `apply` and only those that applied are
//! recorded, both in a full list and in a compacted one; the compacted one
//! must replay to what the full one does, drop nothing, and stay bound by the
//! names it touches.

use std::collections::HashSet;

use rand::{
    distributions::{Distribution as _, WeightedIndex},
    rngs::StdRng,
    seq::SliceRandom as _,
    Rng as _, SeedableRng as _,
};
use serde_json::{json, Value as Json};

use super::{super::*, subject, Subject};

/// Little room and few names and addresses, so that conflicts and full maps
/// are frequent: the maps are full (4 VIPs, 4 backends) until something goes.
const FILE: &str = "[global]\ninterface = \"eth0\"\nmax_vips = 4\nmax_backends = 4\nring_size = 7\n\
     [[vip]]\nname = \"web\"\naddress = \"10.77.100.1\"\nport = 80\n\
     [[vip.backend]]\nname = \"b0\"\naddress = \"10.77.1.10\"\n\
     [[vip.backend]]\nname = \"b1\"\naddress = \"10.77.1.11\"\nweight = 3\n\
     [[vip]]\nname = \"db\"\naddress = \"10.77.100.2\"\nport = 443\n\
     [[vip.backend]]\nname = \"d0\"\naddress = \"10.77.1.20\"\n\
     [[vip]]\nname = \"dns\"\naddress = \"10.77.100.4\"\nport = 53\n\
     [[vip]]\naddress = \"10.77.100.3\"\nport = 80\n\
     [[vip.backend]]\nname = \"b0\"\naddress = \"10.77.1.12\"\n";

const VIP_NAMES: &[&str] = &["web", "db", "dns", "api", "10.77.100.3:80/tcp"];
const VIP_ADDRESSES: &[&str] = &["10.77.100.1", "10.77.100.2", "10.77.100.3", "10.77.100.4"];
const PORTS: &[u16] = &[80, 443];
const BACKEND_NAMES: &[&str] = &["b0", "b1", "b2", "d0", "10.77.1.12:80"];
const BACKEND_ADDRESSES: &[&str] = &["10.77.1.10", "10.77.1.11", "10.77.1.12", "10.77.1.20"];
const WEIGHTS: &[i64] = &[-1, 0, 1, 2, 7, 256, 257];
const ADMIN: &[Admin] = &[Admin::Ready, Admin::Drain, Admin::Maint];

const SEQUENCES: u64 = 120;
const STEPS: usize = 40;

fn pick<T: Copy>(rng: &mut StdRng, from: &[T]) -> T {
    *from.choose(rng).expect("not empty")
}

/// Mostly a VIP that is there, so that most operations apply.
fn vip_name(rng: &mut StdRng, config: &Config) -> String {
    match config.vips.choose(rng) {
        Some(vip) if rng.gen_bool(0.8) => vip.name.clone(),
        _ => pick(rng, VIP_NAMES).into(),
    }
}

fn backend_name(rng: &mut StdRng, config: &Config, vip: &str) -> String {
    let there = config.vips.iter().find(|v| v.name == vip).and_then(|v| v.backends.choose(rng));
    match there {
        Some(backend) if rng.gen_bool(0.8) => backend.name.clone(),
        _ => pick(rng, BACKEND_NAMES).into(),
    }
}

fn backend_json(rng: &mut StdRng) -> Json {
    let mut backend = json!({ "address": pick(rng, BACKEND_ADDRESSES) });
    if rng.gen_bool(0.6) {
        backend["name"] = pick(rng, BACKEND_NAMES).into();
    }
    if rng.gen_bool(0.2) {
        backend["port"] = pick(rng, &[80, 443, 8080]).into();
    }
    if rng.gen_bool(0.3) {
        backend["weight"] = pick(rng, WEIGHTS).into();
    }
    backend
}

/// How often each kind of operation comes, drawn for each sequence: some
/// add and remove a lot, some mostly set weights.
fn random_mix(rng: &mut StdRng) -> WeightedIndex<u32> {
    WeightedIndex::new((0..6).map(|_| rng.gen_range(1..=10))).expect("positive weights")
}

fn random_op(rng: &mut StdRng, mix: &WeightedIndex<u32>, config: &Config) -> Op {
    match mix.sample(rng) {
        0 => {
            let mut vip = json!({ "address": pick(rng, VIP_ADDRESSES), "port": pick(rng, PORTS) });
            if rng.gen_bool(0.5) {
                vip["name"] = pick(rng, VIP_NAMES).into();
            }
            let backends: Vec<Json> = (0..rng.gen_range(0..=2)).map(|_| backend_json(rng)).collect();
            if !backends.is_empty() {
                vip["backend"] = backends.into();
            }
            Op::AddVip { vip }
        }
        1 => Op::RemoveVip { vip: vip_name(rng, config) },
        2 => Op::AddBackend { vip: vip_name(rng, config), backend: backend_json(rng) },
        3 => {
            let vip = vip_name(rng, config);
            Op::RemoveBackend { backend: backend_name(rng, config, &vip), vip }
        }
        4 => {
            let vip = vip_name(rng, config);
            Op::SetWeight { backend: backend_name(rng, config, &vip), vip, weight: pick(rng, WEIGHTS) }
        }
        _ => {
            let vip = vip_name(rng, config);
            Op::SetAdmin { backend: backend_name(rng, config, &vip), vip, admin: pick(rng, ADMIN) }
        }
    }
}

/// At most one operation of each kind per VIP or backend name: a VIP's removal
/// and add, a backend's removal, add, weight and admin state.
fn assert_bound(list: &[Op], seed: u64, step: usize) {
    let mut seen: HashSet<(std::mem::Discriminant<Op>, Subject)> = HashSet::new();
    for op in list {
        assert!(
            seen.insert((std::mem::discriminant(op), subject(op))),
            "seed {seed}, step {step}: {op:?} twice in the compacted list {list:#?}"
        );
    }
}

#[test]
fn compacted_lists_replay_to_what_the_full_ones_do() {
    let file = Config::from_toml(FILE).unwrap();
    let (mut recorded, mut kept, mut compactions) = (0, 0, 0);
    let mut kinds = HashSet::new();
    for seed in 0..SEQUENCES {
        let mut rng = StdRng::seed_from_u64(seed);
        let mix = random_mix(&mut rng);
        let (mut config, mut admin) = (file.clone(), AdminStates::new());
        let (mut full, mut compacted) = (Vec::new(), Vec::new());
        for step in 1..=STEPS {
            let mut op = random_op(&mut rng, &mix, &config);
            let Ok((next, next_admin)) = apply(&config, &admin, &mut op) else { continue };
            (config, admin) = (next, next_admin);
            kinds.insert(std::mem::discriminant(&op));
            full.push(op.clone());
            let appended = [&compacted[..], &[op.clone()]].concat();
            record(&mut compacted, [op]);
            assert_bound(&compacted, seed, step);
            // A list equal to the full one's effect stays so when an operation
            // that applies is appended: replay where compaction did more.
            if compacted != appended {
                compactions += 1;
                let short = replay(&file, &compacted);
                let context = format!("seed {seed}, step {step}: full {full:#?}\ncompacted {compacted:#?}");
                assert_eq!(short.config, config, "{context}");
                assert_eq!(short.admin, admin, "{context}");
                assert!(short.dropped.is_empty(), "{context}\ndropped {:#?}", short.dropped);
                assert_eq!(short.ops, compacted, "{context}");
            }
        }
        let (whole, short) = (replay(&file, &full), replay(&file, &compacted));
        assert_eq!((&whole.config, &whole.admin), (&config, &admin), "seed {seed}: the full list");
        assert_eq!((&short.config, &short.admin), (&config, &admin), "seed {seed}: {compacted:#?}");
        (recorded, kept) = (recorded + full.len(), kept + compacted.len());
    }
    // The sequences must exercise what they are meant to: every kind applied, and compaction.
    assert_eq!(kinds.len(), 6, "kinds of operations that applied");
    assert!(
        kept * 2 < recorded && compactions > SEQUENCES,
        "{recorded} recorded, {kept} kept, {compactions}"
    );
}

#[test]
fn a_long_sequence_stays_as_short_as_what_it_touched() {
    let file = Config::from_toml(FILE).unwrap();
    let seed = 1_000;
    let mut rng = StdRng::seed_from_u64(seed);
    // Mostly weights and admin states, as in a long-running deployment.
    let mix = WeightedIndex::new([1, 1, 3, 3, 10, 10]).expect("positive weights");
    let (mut config, mut admin) = (file.clone(), AdminStates::new());
    let (mut full, mut compacted) = (Vec::new(), Vec::new());
    for step in 1..=2_000 {
        let mut op = random_op(&mut rng, &mix, &config);
        if let Ok((next, next_admin)) = apply(&config, &admin, &mut op) {
            (config, admin) = (next, next_admin);
            full.push(op.clone());
            record(&mut compacted, [op]);
            assert_bound(&compacted, seed, step);
        }
    }
    let vips: HashSet<&str> = full.iter().map(|op| vip_of(subject(op))).collect();
    let backends: HashSet<Subject> =
        full.iter().map(subject).filter(|s| matches!(s, Subject::Backend(..))).collect();
    let bound = 2 * vips.len() + 4 * backends.len();
    assert!(compacted.len() <= bound, "seed {seed}: {} kept, more than {bound}", compacted.len());
    eprintln!("LONG {} {} {bound}", full.len(), compacted.len());
    assert!(
        full.len() > 10 * compacted.len(),
        "seed {seed}: {} applied, {} kept",
        full.len(),
        compacted.len()
    );
    let (whole, short) = (replay(&file, &full), replay(&file, &compacted));
    assert_eq!((&whole.config, &whole.admin), (&config, &admin), "seed {seed}: the full list");
    assert_eq!((&short.config, &short.admin), (&config, &admin), "seed {seed}: {compacted:#?}");
    assert!(short.dropped.is_empty(), "seed {seed}: {:#?}", short.dropped);
}

fn vip_of(subject: Subject<'_>) -> &str {
    match subject {
        Subject::Vip(vip) | Subject::Backend(vip, _) => vip,
    }
}
