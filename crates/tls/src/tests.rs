use std::os::unix::fs::PermissionsExt;

use super::*;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn cert_of(dir: &Path) -> CertificateDer<'static> {
    load_cert(&dir.join(NODE_CERT)).unwrap()
}

#[test]
fn a_node_certificate_names_its_node_and_cluster_and_nothing_else() {
    let root = tempfile::tempdir().unwrap();
    let ca = root.path().join("ca");
    create_ca(&ca, 0xC1).unwrap();
    let (one, two) = (root.path().join("1"), root.path().join("2"));
    issue_node(&ca, 0xC1, NodeId(1), &one).unwrap();
    issue_node(&ca, 0xC1, NodeId(2), &two).unwrap();
    let tls = PeerTls::load(&one, 0xC1, NodeId(1)).unwrap();
    let cert = [cert_of(&two)];
    tls.check_peer(Some(&cert), NodeId(2)).unwrap();
    let claim = tls.check_peer(Some(&cert), NodeId(3)).unwrap_err();
    assert!(
        matches!(claim, TlsError::PeerMismatch { claimed: 3, .. }),
        "{claim}"
    );
    assert!(matches!(
        tls.check_peer(None, NodeId(2)),
        Err(TlsError::NoPeerCertificate)
    ));
    // The same CA, another cluster id: node 2 of cluster 0xC2 is not node 2 of ours.
    let other = root.path().join("other");
    issue_node(&ca, 0xC2, NodeId(2), &other).unwrap();
    let foreign = [cert_of(&other)];
    assert!(tls.check_peer(Some(&foreign), NodeId(2)).is_err());
}

#[test]
fn a_node_refuses_a_certificate_that_is_not_its_own() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tls");
    create_ca(&dir, 7).unwrap();
    issue_node(&dir, 7, NodeId(1), &dir).unwrap();
    let e = PeerTls::load(&dir, 7, NodeId(2)).unwrap_err();
    assert!(e.to_string().contains("node-2.c7.bulwark"), "{e}");
    let e = PeerTls::load(&dir, 8, NodeId(1)).unwrap_err();
    assert!(
        matches!(e, TlsError::WrongOwner { cluster_id: 8, .. }),
        "{e}"
    );
    PeerTls::load(&dir, 7, NodeId(1)).unwrap();
}

#[test]
fn keys_are_private_and_a_ca_is_never_replaced() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tls");
    create_ca(&dir, 1).unwrap();
    issue_node(&dir, 1, NodeId(1), &dir).unwrap();
    assert_eq!(mode(&dir), 0o700);
    for file in [CA_CERT, CA_KEY, NODE_CERT, NODE_KEY] {
        assert_eq!(mode(&dir.join(file)), 0o600, "{file}");
    }
    let before = std::fs::read(dir.join(CA_KEY)).unwrap();
    assert!(matches!(create_ca(&dir, 1), Err(TlsError::CaExists { .. })));
    assert_eq!(std::fs::read(dir.join(CA_KEY)).unwrap(), before);
    // Rotation: a new certificate for the same node replaces the old, and still loads.
    let old = std::fs::read(dir.join(NODE_CERT)).unwrap();
    issue_node(&dir, 1, NodeId(1), &dir).unwrap();
    assert_ne!(std::fs::read(dir.join(NODE_CERT)).unwrap(), old);
    PeerTls::load(&dir, 1, NodeId(1)).unwrap();
}

#[test]
fn unreadable_files_are_named() {
    let root = tempfile::tempdir().unwrap();
    let e = PeerTls::load(root.path(), 1, NodeId(1)).unwrap_err();
    assert!(e.to_string().contains(CA_CERT), "{e}");
    std::fs::write(root.path().join(CA_CERT), "not pem").unwrap();
    let e = PeerTls::load(root.path(), 1, NodeId(1)).unwrap_err();
    assert!(
        matches!(
            e,
            TlsError::Pem {
                what: "certificate",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn an_api_certificate_names_the_addresses_it_was_issued_for() {
    let root = tempfile::tempdir().unwrap();
    let ca = root.path().join("ca");
    create_ca(&ca, 0xC1).unwrap();
    let out = root.path().join("node");
    assert!(matches!(
        issue_api(&ca, 0xC1, &[], &out),
        Err(TlsError::NoApiNames)
    ));
    let names = ["10.1.2.3".to_string(), "db.example".to_string()];
    issue_api(&ca, 0xC1, &names, &out).unwrap();
    assert!(has_api_cert(&out) && !has_node_cert(&out));
    assert_eq!(mode(&out.join(API_KEY)), 0o600);
    api_server_config(&out).unwrap();
    api_client_config(&out.join(CA_CERT)).unwrap();
    let cert = load_cert(&out.join(API_CERT)).unwrap();
    let cert = webpki::EndEntityCert::try_from(&cert).unwrap();
    for good in ["10.1.2.3", "db.example"] {
        let name = ServerName::try_from(good).unwrap();
        cert.verify_is_valid_for_subject_name(&name).unwrap();
    }
    for bad in ["10.1.2.4", "other.example", "localhost"] {
        let name = ServerName::try_from(bad).unwrap();
        assert!(
            cert.verify_is_valid_for_subject_name(&name).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn the_node_a_certificate_names_is_read_from_it_only_for_our_cluster() {
    let root = tempfile::tempdir().unwrap();
    let ca = root.path().join("ca");
    create_ca(&ca, 0xC1).unwrap();
    let (one, two) = (root.path().join("1"), root.path().join("2"));
    issue_node(&ca, 0xC1, NodeId(1), &one).unwrap();
    issue_node(&ca, 0xC1, NodeId(27), &two).unwrap();
    let tls = PeerTls::load(&one, 0xC1, NodeId(1)).unwrap();
    assert_eq!(tls.peer_node(Some(&[cert_of(&two)])).unwrap(), NodeId(27));
    assert!(matches!(
        tls.peer_node(None),
        Err(TlsError::NoPeerCertificate)
    ));
    // Node 27 of cluster 0xC2 (same CA) is no node of ours.
    let other = root.path().join("other");
    issue_node(&ca, 0xC2, NodeId(27), &other).unwrap();
    let foreign = tls.peer_node(Some(&[cert_of(&other)])).unwrap_err();
    assert!(
        matches!(foreign, TlsError::NoNodeName { cluster_id: 0xC1 }),
        "{foreign}"
    );
}

#[test]
fn the_peer_port_offers_raft_and_h2_and_each_dialer_asks_for_one() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tls");
    create_ca(&dir, 3).unwrap();
    issue_node(&dir, 3, NodeId(1), &dir).unwrap();
    let tls = PeerTls::load(&dir, 3, NodeId(1)).unwrap();
    assert_eq!(
        tls.server.alpn_protocols,
        vec![ALPN_RAFT.to_vec(), ALPN_H2.to_vec()]
    );
    assert_eq!(tls.client.alpn_protocols, vec![ALPN_RAFT.to_vec()]);
    assert_eq!(tls.http_client.alpn_protocols, vec![ALPN_H2.to_vec()]);
}

#[test]
fn a_ca_says_which_cluster_it_is_and_signs_for_no_other() {
    let tmp = tempfile::tempdir().unwrap();
    let ca = tmp.path().join("ca");
    // A restored cluster's id is random and wide: it must read back whole.
    let id = 0x3f76_4433_7ac2_810a;
    create_ca(&ca, id).unwrap();
    assert_eq!(ca_cluster_id(&ca).unwrap(), id);
    let refused = check_ca_cluster(&ca, 1).unwrap_err();
    assert!(
        matches!(refused, TlsError::OtherCluster { found, asked: 1, .. } if found == id),
        "{refused}"
    );
    check_ca_cluster(&ca, id).unwrap();
}
