//! Compaction, one rule at a time: each case applies its operations as the
//! agent does (recording only what applied), checks the compacted list, and
//! that it replays to what the full list does.

use serde_json::json;

use super::super::*;

/// `web` (b0, b1) and `db` (d0); room for 4 backends in all, 7 per VIP.
const FILE: &str = "[global]\ninterface = \"eth0\"\nmax_vips = 4\nmax_backends = 4\nring_size = 7\n\
     [[vip]]\nname = \"web\"\naddress = \"10.77.100.1\"\nport = 80\n\
     [[vip.backend]]\nname = \"b0\"\naddress = \"10.77.1.10\"\n\
     [[vip.backend]]\nname = \"b1\"\naddress = \"10.77.1.11\"\n\
     [[vip]]\nname = \"db\"\naddress = \"10.77.100.2\"\nport = 5432\n\
     [[vip.backend]]\nname = \"d0\"\naddress = \"10.77.1.20\"\n";

fn file() -> Config {
    Config::from_toml(FILE).unwrap()
}

/// Applies `ops` in order (each must apply), checks that the compacted list
/// replays to the same config and admin states as the full one, drops
/// nothing, and is its own compaction; returns it.
fn compacted(ops: Vec<Op>) -> Vec<Op> {
    let (mut config, mut admin, mut full) = (file(), AdminStates::new(), Vec::new());
    for mut op in ops {
        (config, admin) = apply(&config, &admin, &mut op).unwrap_or_else(|e| panic!("{op:?}: {e}"));
        full.push(op);
    }
    let mut compacted = Vec::new();
    record(&mut compacted, full.clone());
    let (whole, short) = (replay(&file(), &full), replay(&file(), &compacted));
    assert_eq!((&whole.config, &whole.admin), (&config, &admin), "the full list replays to what was applied");
    assert_eq!((&short.config, &short.admin), (&config, &admin), "compacted: {compacted:#?}");
    assert!(short.dropped.is_empty(), "{:?}", short.dropped);
    assert_eq!(short.ops, compacted, "a compacted list compacts to itself");
    compacted
}

fn weight(vip: &str, backend: &str, weight: i64) -> Op {
    Op::SetWeight { vip: vip.into(), backend: backend.into(), weight }
}

fn admin(vip: &str, backend: &str, admin: Admin) -> Op {
    Op::SetAdmin { vip: vip.into(), backend: backend.into(), admin }
}

fn add_backend(vip: &str, backend: serde_json::Value) -> Op {
    Op::AddBackend { vip: vip.into(), backend }
}

fn remove_backend(vip: &str, backend: &str) -> Op {
    Op::RemoveBackend { vip: vip.into(), backend: backend.into() }
}

fn add_vip(vip: serde_json::Value) -> Op {
    Op::AddVip { vip }
}

fn remove_vip(vip: &str) -> Op {
    Op::RemoveVip { vip: vip.into() }
}

#[test]
fn ten_thousand_weights_on_one_backend_leave_the_last() {
    // Recorded as the agent does (each applied, on b0 of the file); replaying
    // ten thousand of them takes too long in a debug build, and the last one
    // decides anyway.
    let mut list = Vec::new();
    for i in 0..10_000 {
        record(&mut list, [weight("web", "b0", i % 257)]);
        assert_eq!(list.len(), 1);
    }
    assert_eq!(list, [weight("web", "b0", 9_999 % 257)]);
    let effective = replay(&file(), &list);
    assert_eq!(effective.config.vips[0].backends[0].weight, 9_999 % 257);
    assert!(effective.dropped.is_empty());
}

#[test]
fn weights_and_admin_states_keep_the_last_per_backend() {
    let ops = vec![
        weight("web", "b0", 3),
        admin("web", "b0", Admin::Drain),
        weight("web", "b1", 4),
        weight("web", "b0", 5),
        admin("web", "b0", Admin::Maint),
        admin("db", "d0", Admin::Drain),
    ];
    assert_eq!(compacted(ops.clone()), [ops[2].clone(), ops[3].clone(), ops[4].clone(), ops[5].clone()]);
}

#[test]
fn ready_without_an_earlier_admin_state_is_nothing() {
    assert_eq!(compacted(vec![admin("web", "b0", Admin::Ready)]), []);
    let ops =
        vec![admin("web", "b0", Admin::Drain), weight("web", "b0", 2), admin("web", "b0", Admin::Ready)];
    assert_eq!(compacted(ops), [weight("web", "b0", 2)]);
    // Drain, then maint, then ready: all three go.
    let ops = vec![
        admin("web", "b1", Admin::Drain),
        admin("web", "b1", Admin::Maint),
        admin("web", "b1", Admin::Ready),
    ];
    assert_eq!(compacted(ops), []);
}

#[test]
fn an_added_backend_removed_again_vanishes_with_what_was_done_to_it() {
    let ops = vec![
        add_backend("web", json!({"name": "b2", "address": "10.77.1.12"})),
        weight("web", "b2", 7),
        weight("web", "b0", 2),
        admin("web", "b2", Admin::Drain),
        remove_backend("web", "b2"),
    ];
    assert_eq!(compacted(ops), [weight("web", "b0", 2)]);
}

#[test]
fn a_removed_file_backend_stays_removed_without_what_was_done_to_it() {
    let ops = vec![
        weight("web", "b0", 2),
        weight("web", "b1", 3),
        admin("web", "b0", Admin::Maint),
        remove_backend("web", "b0"),
    ];
    assert_eq!(compacted(ops), [remove_backend("web", "b0"), weight("web", "b1", 3)]);
}

#[test]
fn a_removed_vip_drops_everything_on_it() {
    let ops = vec![
        weight("db", "d0", 9),
        weight("web", "b0", 2),
        add_backend("web", json!({"name": "b2", "address": "10.77.1.12"})),
        remove_backend("web", "b1"),
        admin("db", "d0", Admin::Drain),
        remove_vip("web"),
    ];
    assert_eq!(compacted(ops), [weight("db", "d0", 9), remove_vip("web"), admin("db", "d0", Admin::Drain)]);
}

#[test]
fn a_vip_removal_goes_where_its_first_dropped_operation_was() {
    // Removing b1 makes room for d2 (max_backends = 4). Dropping that removal
    // and leaving the VIP's at the end would refuse d2 on replay.
    let ops = vec![
        add_backend("db", json!({"name": "d1", "address": "10.77.1.21"})),
        remove_backend("web", "b1"),
        add_backend("db", json!({"name": "d2", "address": "10.77.1.22"})),
        remove_vip("web"),
    ];
    assert_eq!(compacted(ops.clone()), [ops[0].clone(), remove_vip("web"), ops[2].clone()]);
}

#[test]
fn an_added_vip_removed_again_vanishes_with_what_was_done_to_it() {
    let ops = vec![
        add_vip(json!({"name": "api", "address": "10.77.100.3", "port": 443,
            "backend": [{"name": "a0", "address": "10.77.1.30"}]})),
        weight("web", "b0", 2),
        weight("api", "a0", 5),
        remove_backend("api", "a0"),
        add_backend("api", json!({"name": "a1", "address": "10.77.1.31"})),
        admin("api", "a1", Admin::Maint),
        remove_vip("api"),
    ];
    assert_eq!(compacted(ops), [weight("web", "b0", 2)]);
}

#[test]
fn a_backend_that_came_with_an_added_vip_stays_removed() {
    let ops = vec![
        add_vip(json!({"name": "api", "address": "10.77.100.3", "port": 443,
            "backend": [{"name": "a0", "address": "10.77.1.30"}]})),
        weight("api", "a0", 5),
        remove_backend("api", "a0"),
    ];
    assert_eq!(compacted(ops.clone()), [ops[0].clone(), ops[2].clone()]);
}

#[test]
fn remove_then_add_of_one_name_keeps_both_in_order() {
    let b0 = add_backend("web", json!({"name": "b0", "address": "10.77.1.10", "weight": 3}));
    let web = add_vip(json!({"name": "web", "address": "10.77.100.1", "port": 80}));
    let ops = vec![
        weight("web", "b0", 2),
        remove_backend("web", "b0"),
        b0.clone(),
        weight("web", "b0", 4),
        weight("db", "d0", 2),
    ];
    let kept = vec![remove_backend("web", "b0"), b0.clone(), weight("web", "b0", 4), weight("db", "d0", 2)];
    assert_eq!(compacted(ops.clone()), kept);
    // Removed once more: the add goes with what followed it, the first removal stays.
    let again = [ops.clone(), vec![admin("web", "b0", Admin::Drain), remove_backend("web", "b0")]].concat();
    assert_eq!(compacted(again), [remove_backend("web", "b0"), weight("db", "d0", 2)]);
    // The same for a VIP, re-added after the backend's changes: it comes last now.
    let vip = [ops, vec![remove_vip("web"), web.clone(), weight("db", "d0", 5)]].concat();
    assert_eq!(compacted(vip.clone()), [remove_vip("web"), web.clone(), weight("db", "d0", 5)]);
    let gone = [vip, vec![remove_vip("web")]].concat();
    assert_eq!(compacted(gone), [remove_vip("web"), weight("db", "d0", 5)]);
}

#[test]
fn adds_without_names_are_matched_by_their_default_names() {
    let mut vip = add_vip(json!({"address": "10.77.100.3", "port": 443}));
    let mut backend = add_backend("web", json!({"address": "10.77.1.12"}));
    let (config, admin) = apply(&file(), &AdminStates::new(), &mut vip).unwrap();
    apply(&config, &admin, &mut backend).unwrap();
    assert_eq!(vip, add_vip(json!({"name": "10.77.100.3:443/tcp", "address": "10.77.100.3", "port": 443})));
    assert_eq!(backend, add_backend("web", json!({"name": "10.77.1.12:80", "address": "10.77.1.12"})));
    let ops = vec![
        add_vip(json!({"address": "10.77.100.3", "port": 443})),
        add_backend("web", json!({"address": "10.77.1.12"})),
        weight("web", "10.77.1.12:80", 2),
        remove_backend("web", "10.77.1.12:80"),
        remove_vip("10.77.100.3:443/tcp"),
    ];
    assert_eq!(compacted(ops), []);
}

#[test]
fn a_refused_add_is_left_as_it_was() {
    let mut twice = add_backend("web", json!({"address": "10.77.1.10"}));
    assert!(apply(&file(), &AdminStates::new(), &mut twice).is_err());
    assert_eq!(twice, add_backend("web", json!({"address": "10.77.1.10"})));
}

#[test]
fn replay_compacts_what_it_keeps() {
    let ops = vec![
        weight("web", "b0", 2),
        weight("web", "zz", 2),
        weight("web", "b0", 3),
        add_backend("web", json!({"address": "10.77.1.12"})),
    ];
    let effective = replay(&file(), &ops);
    let named = add_backend("web", json!({"name": "10.77.1.12:80", "address": "10.77.1.12"}));
    assert_eq!(effective.ops, [weight("web", "b0", 3), named]);
    assert_eq!(effective.dropped.len(), 1);
}

#[test]
fn an_older_saved_list_is_named_and_compacted_when_replayed() {
    // As an agent without compaction saved it: every request, adds unnamed.
    let weights: Vec<String> = (0..50)
        .map(|w| format!(r#"{{"op": "set_weight", "vip": "web", "backend": "b0", "weight": {w}}}"#))
        .collect();
    let json = format!(
        r#"{{"ops": [{}, {{"op": "add_backend", "vip": "web", "backend": {{"address": "10.77.1.12"}}}},
            {{"op": "set_admin", "vip": "web", "backend": "10.77.1.12:80", "admin": "drain"}},
            {{"op": "set_admin", "vip": "web", "backend": "10.77.1.12:80", "admin": "ready"}}]}}"#,
        weights.join(", ")
    );
    let dir = std::env::temp_dir().join(format!("alwayson-compact-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("old.runtime.json");
    std::fs::write(&path, json).unwrap();
    let loaded = load(&path);
    std::fs::remove_dir_all(&dir).unwrap();
    let loaded = loaded.unwrap();
    assert_eq!(loaded.len(), 53);
    let effective = replay(&file(), &loaded);
    let named = add_backend("web", json!({"name": "10.77.1.12:80", "address": "10.77.1.12"}));
    assert_eq!(effective.ops, [weight("web", "b0", 49), named]);
    assert_eq!((effective.config.vips[0].backends[0].weight, effective.admin), (49, AdminStates::new()));
}
