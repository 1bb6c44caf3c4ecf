//! TLS on the Flight SQL port: with a certificate and key configured, a client
//! that trusts the certificate queries over TLS, and a plaintext client is refused.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is a failed test

use arrow_flight::sql::client::FlightSqlServiceClient;
use recon_integration_tests::{TestServer, query, rows};
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
    server.stop().await;
}
