//! The station's transport security as deployed: TLS with the node's client certificate
//! required (mutual TLS), and the network allow-list.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use mpay_tests::pki::{ca, leaf};
use mpay_tests::{Daemon, STATION_PATH, free_port};
use mpayd::simulator::requests::{self, Caller, read_answer};

struct Pki {
    ca_pem: String,
    server: (String, String),
    client: (String, String),
    /// The SHA-256 of the client certificate's DER, hex.
    client_sha256: String,
    /// Another client certificate of the same CA (another service the CA serves).
    sibling: (String, String),
    stranger: (String, String),
}

fn pem((cert, key, _): (String, String, Vec<u8>)) -> (String, String) {
    (cert, key)
}

fn pki() -> Pki {
    let (ca_pem, issuer) = ca("pagoPA test CA");
    let (_, other) = ca("someone else's CA");
    let client = leaf("nodo-dei-pagamenti", &issuer, false);
    let client_sha256 = {
        use sha2::Digest;
        sha2::Sha256::digest(&client.2)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    Pki {
        ca_pem,
        server: pem(leaf("localhost", &issuer, true)),
        client: pem(client),
        client_sha256,
        sibling: pem(leaf("altro-servizio", &issuer, false)),
        stranger: pem(leaf("nodo-dei-pagamenti", &other, false)),
    }
}

fn config(dir: &Path, admin: SocketAddr, station: SocketAddr, extra: &str) -> std::path::PathBuf {
    let example = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../daemon/mpayd.example.toml"
    ))
    .expect("example config");
    let text = example
        .replace("/var/lib/mpay", dir.join("data").to_str().expect("path"))
        .replace("127.0.0.1:9480", &admin.to_string())
        .replace("0.0.0.0:8443", &station.to_string())
        // Tests run side by side: any free port for the API.
        .replace("127.0.0.1:9483", "127.0.0.1:0")
        .replace("allow = [\"127.0.0.0/8\"]", extra);
    let path = dir.join("mpayd.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

fn client_config(pki: &Pki, identity: Option<&(String, String)>) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca_pem.as_bytes()).expect("ca"))
        .expect("root");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert.as_bytes()).expect("cert")],
                PrivateKeyDer::from_pem_slice(key.as_bytes()).expect("key"),
            )
            .expect("client auth"),
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

/// A verify over TLS; `Err` if the TLS session or the HTTP exchange fails.
fn verify_over_tls(
    station: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> Result<String, String> {
    let name = rustls_pki_types::ServerName::try_from("localhost").map_err(|e| e.to_string())?;
    let conn = rustls::ClientConnection::new(config, name).map_err(|e| e.to_string())?;
    let mut tcp = TcpStream::connect(station).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut tls = rustls::StreamOwned::new(conn, &mut tcp);
    let caller = Caller {
        id_pa: "00123456782".into(),
        broker: "01111111116".into(),
        station: "01111111116_01".into(),
    };
    let body = requests::verify(&caller, "00123456782", "301000000000000043");
    let request = format!(
        "POST {STATION_PATH} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\
         SOAPAction: paVerifyPaymentNotice\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tls.write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut response = Vec::new();
    match tls.read_to_end(&mut response) {
        Ok(_) => {}
        // Peers that close without close_notify still delivered the response.
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !response.is_empty() => {}
        Err(e) => return Err(e.to_string()),
    }
    Ok(String::from_utf8_lossy(&response).into_owned())
}

/// The station's PEM files in `dir`, its key kept to its owner, and the `[station]` lines that
/// use them with `more` before the table.
fn station_tls(dir: &Path, pki: &Pki, more: &str) -> String {
    for (file, content) in [
        ("station.crt", &pki.server.0),
        ("station.key", &pki.server.1),
        ("ca.pem", &pki.ca_pem),
    ] {
        std::fs::write(dir.join(file), content).expect("write pem");
    }
    // A private key readable by every user is refused: keep it to the owner.
    std::fs::set_permissions(
        dir.join("station.key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod");
    format!(
        "allow = []\n{more}\n[station.tls]\ncert = \"{0}/station.crt\"\nkey = \"{0}/station.key\"\nclient_ca = \"{0}/ca.pem\"\n",
        dir.display()
    )
}

#[test]
fn a_pinned_station_takes_only_the_node_certificate_it_names() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    let pin = format!("node_certificate_sha256 = [\"{}\"]", pki.client_sha256);
    let tls = station_tls(dir.path(), &pki, &pin);
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let station: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let path = config(dir.path(), admin, station, &tls);
    let daemon = Daemon::run(&path, admin, station, &dir.path().join("data")).ready();
    let ok = verify_over_tls(station, client_config(&pki, Some(&pki.client))).expect("pinned");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    // Signed by the same CA, but not the node's: refused before any request is read.
    let sibling = verify_over_tls(station, client_config(&pki, Some(&pki.sibling)));
    assert!(
        sibling.as_ref().map_or(true, |r| !r.contains("200 OK")),
        "{sibling:?}"
    );
    assert!(
        daemon
            .log_text()
            .contains("none of station.node_certificate_sha256"),
        "{}",
        daemon.log_text()
    );
    assert!(daemon.stop().success());
}

#[test]
fn mutual_tls_accepts_only_the_nodes_certificate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pki = pki();
    let tls = station_tls(dir.path(), &pki, "");
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let station: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let path = config(dir.path(), admin, station, &tls);
    let daemon = Daemon::run(&path, admin, station, &dir.path().join("data")).ready();

    let ok = verify_over_tls(station, client_config(&pki, Some(&pki.client))).expect("mTLS call");
    assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    let body = &ok[ok.find("<?xml").expect("xml body")..];
    mpay_tests::xsd::validate_body(body).expect("valid answer");
    // The example configuration has no positions: the node learns the notice is unknown.
    let answer = read_answer(body).expect("answer");
    assert_eq!(
        answer.fault_code.as_deref(),
        Some("PAA_PAGAMENTO_SCONOSCIUTO")
    );

    for (who, identity) in [
        ("no certificate", None),
        ("another CA", Some(&pki.stranger)),
    ] {
        let refused = verify_over_tls(station, client_config(&pki, identity));
        assert!(
            refused.as_ref().map_or(true, |r| !r.contains("200 OK")),
            "{who}: {refused:?}"
        );
    }
    assert!(daemon.stop().success());
}

#[test]
fn connections_from_outside_the_allow_list_are_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let station: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let path = config(dir.path(), admin, station, "allow = [\"10.0.0.0/8\"]");
    let daemon = Daemon::run(&path, admin, station, &dir.path().join("data")).ready();
    let refused = mpay_tests::http_post(station, STATION_PATH, &[("SOAPAction", "x")], b"<x/>");
    assert!(
        refused.is_err() || refused.as_ref().is_ok_and(|(s, _)| *s != 200),
        "{refused:?}"
    );
    assert!(daemon.log_text().contains("not in station.allow"));
}
