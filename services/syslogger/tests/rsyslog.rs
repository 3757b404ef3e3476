//! A real client: rsyslog (Debian `rsyslog`, `rsyslog-relp`, `rsyslog-gnutls`) run as an
//! unprivileged foreground instance with its own config and work directory, forwarding
//! with `omfwd` (LF and octet-counted, plain and TLS) and `omrelp` to syslogger; the
//! messages logged into it arrive in Kafka exactly. Without `rsyslogd` the tests print one
//! `skipped` line (and fail under `REQUIRE_SERVICES=1`).

mod common;

use std::time::Duration;

use common::{Rsyslog, WAIT, args, have_rsyslog, init_logs, read, rsyslog, start};
use test_services::kafka::KafkaCluster;
use test_services::unique_name;
use tokio::io::AsyncWriteExt;

/// Messages as an application logs them into rsyslog: plain, with UTF-8, with an escaped
/// control character (`#011` after rsyslog's escaping), long.
fn messages(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 4 {
            0 => format!("plain message {i}"),
            1 => format!("ünïcödé message {i} — ok"),
            2 => format!("tab\there {i}"),
            _ => format!("long {i} {}", "L".repeat(3000)),
        })
        .collect()
}

async fn log_into(r: &Rsyslog, msgs: &[String]) {
    let mut s = tokio::net::TcpStream::connect(r.input).await.unwrap();
    for m in msgs {
        s.write_all(format!("<14>Oct 11 22:14:15 web1 myapp[42]: {m}\n").as_bytes())
            .await
            .unwrap();
    }
    s.shutdown().await.unwrap();
}

/// The `message` of each JSON payload, in order.
fn bodies(got: &[common::Got]) -> Vec<String> {
    got.iter()
        .map(|g| {
            let v: serde_json::Value = serde_json::from_slice(&g.payload).unwrap();
            assert_eq!(v["host"], "web1");
            assert_eq!(v["appname"], "myapp");
            v["message"].as_str().unwrap().to_string()
        })
        .collect()
}

/// rsyslog escapes control characters on input (`#011` for a tab).
fn as_rsyslog_stores(m: &str) -> String {
    m.replace('\t', "#011")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_forwards_with_omfwd_lf_octet_counted_and_omrelp() {
    if !have_rsyslog("rsyslog_forwards_with_omfwd_lf_octet_counted_and_omrelp") {
        return;
    }
    init_logs();
    let cluster = KafkaCluster::start(1);
    let brokers = cluster.bootstrap_servers().to_string();
    let mut topics = Vec::new();
    let mut services = Vec::new();
    for what in ["lf", "octet", "relp"] {
        let topic = unique_name(&format!("rsyslog-{what}-"));
        cluster.create_topic(&topic, 1);
        let mut a = args(&brokers, &topic);
        a.format = syslogger::Format::Json;
        topics.push(topic);
        services.push(start(a).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let actions = format!(
        r#"action(type="omfwd" target="127.0.0.1" port="{lf}" protocol="tcp")
action(type="omfwd" target="127.0.0.1" port="{octet}" protocol="tcp" TCP_Framing="octet-counted" template="RSYSLOG_SyslogProtocol23Format")
action(type="omrelp" target="127.0.0.1" port="{relp}")"#,
        lf = services[0].tcp().port(),
        octet = services[1].tcp().port(),
        relp = services[2].relp().port(),
    );
    let r = rsyslog(dir.path(), "", &actions).await;
    let msgs = messages(200);
    log_into(&r, &msgs).await;
    let want: Vec<String> = msgs.iter().map(|m| as_rsyslog_stores(m)).collect();
    for (topic, what) in topics
        .iter()
        .zip(["omfwd LF", "omfwd octet-counted", "omrelp"])
    {
        let got = read(&brokers, topic, 1, msgs.len(), WAIT).await;
        assert_eq!(
            bodies(&got),
            want,
            "{what}: every message, exactly, in order"
        );
    }
    drop(r);
    for s in services {
        assert!(s.stop().await.succeeded());
    }
}

/// Certificates made for the test: a CA, the server's (for 127.0.0.1) and a client's.
struct Pki {
    ca: String,
    server_cert: String,
    server_key: String,
    client_cert: String,
    client_key: String,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "syslogger test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.clone()).unwrap();
        p.distinguished_name
            .push(rcgen::DnType::CommonName, names[0].clone());
        let cert = p.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    let (server_cert, server_key) = leaf(vec!["127.0.0.1".into(), "localhost".into()]);
    let (client_cert, client_key) = leaf(vec!["client.test".into()]);
    Pki {
        ca: ca_cert.pem(),
        server_cert,
        server_key,
        client_cert,
        client_key,
    }
}

/// TLS (RFC 5425) with rsyslog's own GnuTLS driver, the server's certificate checked by
/// rsyslog and rsyslog's client certificate checked by syslogger (`--tls-client-ca`), over
/// omfwd and omrelp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsyslog_forwards_over_tls_with_client_certificates() {
    if !have_rsyslog("rsyslog_forwards_over_tls_with_client_certificates") {
        return;
    }
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let ca = file("ca.pem", &pki.ca);
    let server_cert = file("server.pem", &pki.server_cert);
    let server_key = file("server.key", &pki.server_key);
    let client_cert = file("client.pem", &pki.client_cert);
    let client_key = file("client.key", &pki.client_key);
    let cluster = KafkaCluster::start(1);
    let brokers = cluster.bootstrap_servers().to_string();
    let topic = unique_name("rsyslog-tls-");
    let relp_topic = unique_name("rsyslog-relptls-");
    cluster.create_topic(&topic, 1);
    cluster.create_topic(&relp_topic, 1);
    let tls = |topic: &str| {
        let mut a = args(&brokers, topic);
        a.format = syslogger::Format::Json;
        a.tls_cert = Some(server_cert.clone());
        a.tls_key = Some(server_key.clone());
        a.tls_client_ca = Some(ca.clone());
        a
    };
    let svc = start(tls(&topic)).await;
    let relp_svc = start(tls(&relp_topic)).await;
    let globals = format!(
        r#"DefaultNetstreamDriver="gtls" DefaultNetstreamDriverCAFile="{ca}" DefaultNetstreamDriverCertFile="{cert}" DefaultNetstreamDriverKeyFile="{key}""#,
        ca = ca.display(),
        cert = client_cert.display(),
        key = client_key.display(),
    );
    let actions = format!(
        r#"action(type="omfwd" target="127.0.0.1" port="{tcp}" protocol="tcp" StreamDriver="gtls" StreamDriverMode="1" StreamDriverAuthMode="x509/certvalid")
action(type="omrelp" target="127.0.0.1" port="{relp}" tls="on" tls.caCert="{ca}" tls.myCert="{cert}" tls.myPrivKey="{key}" tls.authMode="certvalid")"#,
        tcp = svc.tcp().port(),
        relp = relp_svc.relp().port(),
        ca = ca.display(),
        cert = client_cert.display(),
        key = client_key.display(),
    );
    let r = rsyslog(dir.path(), &globals, &actions).await;
    let msgs = messages(40);
    log_into(&r, &msgs).await;
    let want: Vec<String> = msgs.iter().map(|m| as_rsyslog_stores(m)).collect();
    let got = read(&brokers, &topic, 1, msgs.len(), WAIT).await;
    assert_eq!(bodies(&got), want, "omfwd over TLS");
    let got = read(&brokers, &relp_topic, 1, msgs.len(), WAIT).await;
    assert_eq!(bodies(&got), want, "omrelp over TLS");
    drop(r);
    assert!(svc.stop().await.succeeded());
    assert!(relp_svc.stop().await.succeeded());
}

/// Without rsyslog: a TLS client with the CA's certificate is served; one without a client
/// certificate is refused when `--tls-client-ca` is set (and nothing it sent arrives).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_clients_without_a_certificate_are_refused() {
    use std::sync::Arc;
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let pki = pki();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let cluster = KafkaCluster::start(1);
    let brokers = cluster.bootstrap_servers().to_string();
    let topic = unique_name("tls-");
    cluster.create_topic(&topic, 1);
    let mut a = args(&brokers, &topic);
    a.tls_cert = Some(file("server.pem", &pki.server_cert));
    a.tls_key = Some(file("server.key", &pki.server_key));
    a.tls_client_ca = Some(file("ca.pem", &pki.ca));
    let svc = start(a).await;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca.as_bytes()).unwrap())
        .unwrap();
    let builder = || {
        rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots.clone())
    };
    let with_cert = builder()
        .with_client_auth_cert(
            vec![CertificateDer::from_pem_slice(pki.client_cert.as_bytes()).unwrap()],
            PrivateKeyDer::from_pem_slice(pki.client_key.as_bytes()).unwrap(),
        )
        .unwrap();
    let without = builder().with_no_client_auth();
    let send = |config: rustls::ClientConfig, text: &'static str| {
        let addr = svc.tcp();
        async move {
            let tcp = tokio::net::TcpStream::connect(addr).await?;
            let name = ServerName::try_from("127.0.0.1").unwrap();
            let mut tls = TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await?;
            tls.write_all(text.as_bytes()).await?;
            tls.shutdown().await?;
            // The server's verdict on the certificate arrives after the handshake (TLS 1.3).
            let mut rest = Vec::new();
            tokio::io::AsyncReadExt::read_to_end(&mut tls, &mut rest).await?;
            Ok::<_, std::io::Error>(())
        }
    };
    let refused = send(without, "<13>Oct 11 22:14:15 h app: refused\n").await;
    assert!(refused.is_err(), "no client certificate: refused");
    send(with_cert, "<13>Oct 11 22:14:15 h app: accepted\n")
        .await
        .unwrap();
    let got = read(&brokers, &topic, 1, 2, Duration::from_secs(3)).await;
    let texts: Vec<String> = got.iter().map(common::Got::text).collect();
    assert_eq!(texts, ["<13>Oct 11 22:14:15 h app: accepted"]);
    assert!(svc.stop().await.succeeded());
}
