//! TLS on the Flight SQL port: with a certificate and key configured, a client
//! that trusts the certificate queries over TLS, and a plaintext client is refused;
//! the HTTP port speaks HTTPS with the same certificate.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use arrow_flight::sql::client::FlightSqlServiceClient;
use recon_integration_tests::{TestServer, query, rows};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

#[tokio::test]
async fn tls_when_a_certificate_is_configured() {
    let dir = tempfile::tempdir().unwrap();
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let cert_pem = certified.cert.pem();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, &cert_pem).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let server = TestServer::start(|c| {
        c.tls.cert = Some(cert.clone());
        c.tls.key = Some(key.clone());
    })
    .await;
    let port = server.url.rsplit(':').next().unwrap().to_owned();

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(&cert_pem))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = FlightSqlServiceClient::new(channel);
    assert_eq!(
        rows(&query(&mut client, "SELECT * FROM merchants").await.unwrap()),
        3
    );

    // A plaintext client gets nowhere.
    let plain = Channel::from_shared(server.url.clone())
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        let mut client = FlightSqlServiceClient::new(channel);
        assert!(query(&mut client, "SELECT 1").await.is_err());
    }

    // The HTTP port speaks TLS with the same certificate; plain HTTP gets no answer.
    let http_addr = server.http_url.trim_start_matches("http://").to_owned();
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(&http_addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = Vec::new();
    tls.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let url = server.http_url.clone();
    let plain = tokio::task::spawn_blocking(move || {
        recon_integration_tests::http_request(&url, "GET", "/healthz", None, None)
    })
    .await
    .unwrap();
    assert!(
        !matches!(plain, Ok((200, _))),
        "plain HTTP was answered: {plain:?}"
    );
    server.stop().await;
}
