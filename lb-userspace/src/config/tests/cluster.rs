//! `[cluster]`: defaults, round trip, and each rule naming its field.

use super::*;

fn cluster(keys: &str) -> String {
    with(&format!(
        "[cluster]\nnode = \"lb1\"\netcd = [\"http://10.77.162.11:2379\"]\nlisten = \"10.77.162.11:7947\"\n\
         peers = [\"10.77.162.12:7947\"]\n{keys}"
    ))
}

#[test]
fn a_cluster_section_gets_every_default_and_round_trips() {
    let config = Config::from_toml(&cluster("")).unwrap();
    let c = config.cluster.as_ref().expect("[cluster]");
    assert_eq!(c.node, "lb1");
    assert_eq!(c.prefix, "/alwayson");
    assert_eq!(c.lease_ttl, Duration::from_secs(3));
    assert_eq!(c.quorum_grace, Duration::from_secs(10));
    assert_eq!(c.odd_one_out_after, Duration::from_secs(3));
    assert!(c.share_flows);
    assert_eq!(c.peers, vec!["10.77.162.12:7947".parse::<SocketAddr>().unwrap()]);
    assert_eq!(Config::from_toml(&config.to_toml()).unwrap(), config);
    assert_eq!(Config::from_toml(GLOBAL).unwrap().cluster, None, "no [cluster], no etcd");
}

#[test]
fn each_cluster_rule_names_its_field() {
    problem(
        &with("[cluster]\nnode = \"lb/1\"\netcd = [\"10.77.162.11:2379\"]\nlisten = \"10.77.162.11:7947\"\n"),
        "cluster.node",
        "\"lb/1\"",
        "letters, digits",
    );
    problem(
        &with("[cluster]\nnode = \"lb1\"\netcd = [\"https://10.77.162.11:2379\"]\nlisten = \"10.77.162.11:7947\"\n"),
        "cluster.etcd[0]",
        "\"https://10.77.162.11:2379\"",
        "TLS",
    );
    problem(
        &with("[cluster]\nnode = \"lb1\"\netcd = []\nlisten = \"10.77.162.11:7947\"\n"),
        "cluster.etcd",
        "[]",
        "at least one",
    );
    problem(&cluster("prefix = \"alwayson\""), "cluster.prefix", "\"alwayson\"", "must start with '/'");
    problem(&cluster("lease_ttl = \"1s\""), "cluster.lease_ttl", "\"1s\"", "out of range");
    problem(
        &with(
            "[cluster]\nnode = \"lb1\"\netcd = [\"10.77.162.11:2379\"]\nlisten = \"10.77.162.11:7947\"\n\
             peers = [\"10.77.162.11:7947\"]\n",
        ),
        "cluster.peers[0]",
        "10.77.162.11:7947",
        "listed twice",
    );
}
