//! Peer identity: QUIC connections mutually authenticated by the cluster's ed25519 keys.
//!
//! There is no certificate authority. Both ends of every connection speak TLS 1.3 with **raw
//! public keys** (RFC 7250): each side presents the DER `SubjectPublicKeyInfo` of its ed25519
//! key (RFC 8410) instead of a certificate, signs the handshake with that key, and the other side
//! accepts it only if the key is one the [`ClusterConfig`] names:
//!
//! - a replica's server ([`server_config`]) presents its replica key, *requires* a key from the
//!   dialer, and accepts only the keys of configured replicas and admitted clients;
//! - a dialer ([`client_config`]) presents its own key and accepts only the key of the one replica
//!   it meant to reach, so reaching the wrong process at an address fails at the handshake;
//! - once connected, [`peer_principal`] says who is at the other end.
//!
//! Anything else is refused during the handshake, before a single application byte is read. A
//! key that is not accepted gets the TLS `access_denied` alert (QUIC `CRYPTO_ERROR` 0x131); a
//! peer that does not offer raw public keys, ed25519 or [`ALPN`] is refused with the alert
//! rustls chooses for that.
//!
//! Only TLS 1.3, only the `ed25519` signature scheme, only the ALPN protocol [`ALPN`], and no
//! session resumption or 0-RTT: a resumed session would skip the key check, so a client removed
//! from the configuration could come back on an old ticket. Connections are long-lived, so a full
//! handshake per connection costs nothing that matters.
//!
//! The secret key never leaves [`KeyPair`]: rustls signs through [`KeyPair::sign_raw`], which is
//! plain ed25519 over the TLS 1.3 `CertificateVerify` content. Peer handshake signatures are
//! checked by rustls's *ring* provider against the configured key.
//!
//! The configs built here snapshot the membership. After a configuration change, build new ones
//! (and install the server's with [`quinn::Endpoint::set_server_config`]).

use bft_core::{ClusterConfig, ConfigError, Principal, ReplicaId};
use bft_crypto::{KeyPair, PublicKey};
use quinn::crypto::rustls::{NoInitialCipherSuite, QuicClientConfig, QuicServerConfig};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::{CertifiedKey, Signer, SigningKey};
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, SignatureAlgorithm, SignatureScheme,
};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

/// The ALPN protocol both sides require. A peer that offers no ALPN, or another one, is refused.
pub const ALPN: &[u8] = b"bft-rs/1";

/// How often an idle connection sends a keep-alive (both sides).
pub const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// How long a connection may go without hearing from the peer before it is considered dead.
pub const MAX_IDLE_TIMEOUT: Duration = Duration::from_millis(MAX_IDLE_TIMEOUT_MS as u64);

/// [`MAX_IDLE_TIMEOUT`] in milliseconds, as QUIC carries it.
const MAX_IDLE_TIMEOUT_MS: u32 = 10_000;

/// How many unidirectional streams the peer may have open towards us at once.
pub const MAX_CONCURRENT_UNI_STREAMS: u32 = 64;

/// How many bidirectional streams the peer may have open towards us at once.
pub const MAX_CONCURRENT_BIDI_STREAMS: u32 = 16;

/// Bytes the peer may send on one stream beyond what we have read (per-stream flow control).
pub const STREAM_RECEIVE_WINDOW: u32 = 2 << 20;

/// Bytes the peer may send on a connection beyond what we have read (connection flow control):
/// the most a peer can make us buffer per connection.
pub const RECEIVE_WINDOW: u32 = 8 << 20;

/// Bytes we keep unacknowledged in flight per connection.
pub const SEND_WINDOW: u64 = 8 << 20;

/// DER prefix of an ed25519 `SubjectPublicKeyInfo` (RFC 8410 section 4): SEQUENCE (42 bytes) {
/// SEQUENCE (5) { OID 1.3.101.112 }, BIT STRING (33 bytes, 0 unused bits) }; the 32 key bytes
/// follow.
const ED25519_SPKI_PREFIX: [u8; 12] = [
    0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
];

/// Length of an ed25519 `SubjectPublicKeyInfo`.
const ED25519_SPKI_LEN: usize = ED25519_SPKI_PREFIX.len() + 32;

/// Why a QUIC configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The cluster configuration is invalid.
    #[error("invalid cluster configuration: {0}")]
    InvalidConfig(#[from] ConfigError),
    /// A server must present a replica's key, and this key is not one of the configured replicas'.
    #[error("key {0} is not the key of any configured replica, so it cannot serve as one")]
    NotAReplica(PublicKey),
    /// The replica to dial is not in the configuration.
    #[error("replica {0} is not in the cluster configuration")]
    UnknownReplica(ReplicaId),
    /// rustls refused the TLS configuration.
    #[error("TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
    /// The crypto provider has no cipher suite QUIC can use for its initial packets.
    #[error("QUIC TLS configuration: {0}")]
    NoInitialCipherSuite(#[from] NoInitialCipherSuite),
}

/// The server configuration of a replica: presents `own` (which must be a configured replica's
/// key), requires the dialer to present a key, and accepts only the keys of `config`'s replicas
/// and admitted clients. Everyone else is refused at the handshake.
pub fn server_config(
    own: &KeyPair,
    config: &ClusterConfig,
) -> Result<quinn::ServerConfig, IdentityError> {
    config.validate()?;
    let own_key = own.public();
    if !config.replicas.contains(&own_key) {
        return Err(IdentityError::NotAReplica(own_key));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(MemberVerifier {
        members: config
            .replicas
            .iter()
            .chain(config.clients.values())
            .copied()
            .collect(),
        algorithms: provider.signature_verification_algorithms,
    });
    let resolver = Arc::new(rustls::server::AlwaysResolvesServerRawPublicKeys::new(
        certified_key(own),
    ));
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // No resumption (it would skip the key check) and no 0-RTT.
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    tls.send_tls13_tickets = 0;
    tls.max_early_data_size = 0;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(QuicServerConfig::try_from(tls)?));
    server.transport_config(transport_config());
    Ok(server)
}

/// The dialing configuration of a replica or client that wants to reach replica `expected`:
/// presents `own` and accepts only `expected`'s configured key, so a connection to an address
/// that answers with any other key (another replica's included) fails at the handshake.
///
/// `own` is not checked against `config` here: the server decides whom it admits, and refuses
/// a key it does not know at the handshake.
///
/// The server name passed to [`quinn::Endpoint::connect_with`] is not checked (the key is the
/// identity); [`server_name`] gives a conventional one.
pub fn client_config(
    own: &KeyPair,
    config: &ClusterConfig,
    expected: ReplicaId,
) -> Result<quinn::ClientConfig, IdentityError> {
    config.validate()?;
    let expected_key = *config
        .replica_key(expected)
        .ok_or(IdentityError::UnknownReplica(expected))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(ReplicaVerifier {
        expected,
        expected_key,
        algorithms: provider.signature_verification_algorithms,
    });
    let resolver = Arc::new(rustls::client::AlwaysResolvesClientRawPublicKeys::new(
        certified_key(own),
    ));
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(resolver);
    tls.alpn_protocols = vec![ALPN.to_vec()];
    // No resumption (it would skip the key check), no 0-RTT, and no need to name the server.
    tls.resumption = rustls::client::Resumption::disabled();
    tls.enable_early_data = false;
    tls.enable_sni = false;
    let mut client = quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls)?));
    client.transport_config(transport_config());
    Ok(client)
}

/// A conventional server name to dial replica `replica` with (for example `replica-2`). It is
/// never verified (the replica's key is its identity) and, with SNI off, never sent.
pub fn server_name(replica: ReplicaId) -> String {
    format!("replica-{}", replica.0)
}

/// Who is at the other end of an established `connection`: the principal whose configured key
/// the peer authenticated with. `None` if the peer presented no key or one `config` does not
/// name (impossible after a handshake with configs built from the same `config`, but a
/// configuration may have changed since).
pub fn peer_principal(connection: &quinn::Connection, config: &ClusterConfig) -> Option<Principal> {
    let identity = connection.peer_identity()?;
    let chain = identity.downcast_ref::<Vec<CertificateDer<'static>>>()?;
    let [end_entity] = chain.as_slice() else {
        return None;
    };
    principal_of(&key_from_spki(end_entity)?, config)
}

/// The principal `config` gives `key`, if any: a replica, or the account of the client ids
/// admitted with it (the lowest of them; see [`ClusterConfig::clients_with_key`]).
fn principal_of(key: &PublicKey, config: &ClusterConfig) -> Option<Principal> {
    if let Some(index) = config.replicas.iter().position(|k| k == key) {
        return Some(Principal::Replica(ReplicaId(u32::try_from(index).ok()?)));
    }
    config.clients_with_key(key).next().map(Principal::Client)
}

/// The transport parameters both sides use.
fn transport_config() -> Arc<quinn::TransportConfig> {
    let mut transport = quinn::TransportConfig::default();
    transport
        .keep_alive_interval(Some(KEEP_ALIVE_INTERVAL))
        .max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
            MAX_IDLE_TIMEOUT_MS,
        ))))
        .max_concurrent_uni_streams(MAX_CONCURRENT_UNI_STREAMS.into())
        .max_concurrent_bidi_streams(MAX_CONCURRENT_BIDI_STREAMS.into())
        .stream_receive_window(STREAM_RECEIVE_WINDOW.into())
        .receive_window(RECEIVE_WINDOW.into())
        .send_window(SEND_WINDOW);
    Arc::new(transport)
}

/// The DER `SubjectPublicKeyInfo` of an ed25519 public key (RFC 8410).
fn spki(key: &PublicKey) -> [u8; ED25519_SPKI_LEN] {
    let mut der = [0u8; ED25519_SPKI_LEN];
    der[..ED25519_SPKI_PREFIX.len()].copy_from_slice(&ED25519_SPKI_PREFIX);
    der[ED25519_SPKI_PREFIX.len()..].copy_from_slice(&key.to_bytes());
    der
}

/// The ed25519 key in a DER `SubjectPublicKeyInfo`, or `None` if the bytes are anything else.
fn key_from_spki(der: &[u8]) -> Option<PublicKey> {
    let key = der.strip_prefix(&ED25519_SPKI_PREFIX[..])?;
    Some(PublicKey(key.try_into().ok()?))
}

/// Our key as rustls presents it: the raw public key and a signer.
fn certified_key(own: &KeyPair) -> Arc<CertifiedKey> {
    let key = Ed25519SigningKey {
        key: Arc::new(own.clone()),
    };
    let raw_public_key = CertificateDer::from(spki(&own.public()).to_vec());
    Arc::new(CertifiedKey::new(vec![raw_public_key], Arc::new(key)))
}

/// A rustls signing key backed by a [`KeyPair`] (whose secret stays inside it).
#[derive(Debug, Clone)]
struct Ed25519SigningKey {
    key: Arc<KeyPair>,
}

impl SigningKey for Ed25519SigningKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        offered
            .contains(&SignatureScheme::ED25519)
            .then(|| Box::new(self.clone()) as Box<dyn Signer>)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        Some(SubjectPublicKeyInfoDer::from(
            spki(&self.key.public()).to_vec(),
        ))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ED25519
    }
}

impl Signer for Ed25519SigningKey {
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, rustls::Error> {
        Ok(self.key.sign_raw(message).to_bytes().to_vec())
    }

    fn scheme(&self) -> SignatureScheme {
        SignatureScheme::ED25519
    }
}

/// Accepts a presented raw public key only if it is an ed25519 key `accept` approves of; the
/// chain must be exactly that one key.
fn check_presented(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
    accept: impl FnOnce(&PublicKey) -> bool,
) -> Result<(), rustls::Error> {
    if !intermediates.is_empty() {
        return Err(CertificateError::BadEncoding.into());
    }
    let key = key_from_spki(end_entity).ok_or(CertificateError::BadEncoding)?;
    if accept(&key) {
        Ok(())
    } else {
        Err(CertificateError::ApplicationVerificationFailure.into())
    }
}

/// Checks a TLS 1.3 handshake signature by the raw public key `raw_key` (already accepted by
/// [`check_presented`]): ed25519 only, verified by the crypto provider.
fn verify_handshake_signature(
    message: &[u8],
    raw_key: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
    algorithms: &WebPkiSupportedAlgorithms,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    if dss.scheme != SignatureScheme::ED25519 {
        return Err(rustls::PeerMisbehaved::SignedHandshakeWithUnadvertisedSigScheme.into());
    }
    rustls::crypto::verify_tls13_signature_with_raw_key(
        message,
        &SubjectPublicKeyInfoDer::from(raw_key.as_ref()),
        dss,
        algorithms,
    )
}

/// The signature schemes we offer and accept.
fn schemes() -> Vec<SignatureScheme> {
    vec![SignatureScheme::ED25519]
}

/// A dialer's check of the server: its raw public key must be the expected replica's.
#[derive(Debug)]
struct ReplicaVerifier {
    expected: ReplicaId,
    expected_key: PublicKey,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for ReplicaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        check_presented(end_entity, intermediates, |key| {
            let accepted = *key == self.expected_key;
            if !accepted {
                tracing::debug!(
                    expected = %self.expected,
                    presented = %key,
                    "server presented the wrong key"
                );
            }
            accepted
        })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable: only TLS 1.3 is enabled. Refuse rather than trust.
        Err(rustls::PeerIncompatible::Tls13RequiredForQuic.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_handshake_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

/// A replica's check of a dialer: its raw public key must be a configured replica's or an
/// admitted client's.
#[derive(Debug)]
struct MemberVerifier {
    members: BTreeSet<PublicKey>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for MemberVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_presented(end_entity, intermediates, |key| {
            let accepted = self.members.contains(key);
            if !accepted {
                tracing::debug!(presented = %key, "dialer presented a key that is not a member's");
            }
            accepted
        })?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Unreachable: only TLS 1.3 is enabled. Refuse rather than trust.
        Err(rustls::PeerIncompatible::Tls13RequiredForQuic.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_handshake_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bft_core::ClientId;
    use bft_core::testkit::{client_key, config, replica_key};
    use quinn::{ConnectionError, Endpoint, TransportErrorCode};
    use std::net::SocketAddr;
    use tokio::time::timeout;

    /// A failure guard only: every wait below normally ends in milliseconds.
    const WAIT: Duration = Duration::from_secs(10);

    /// The QUIC error code of the TLS `access_denied` alert (0x100 + 49).
    fn access_denied() -> TransportErrorCode {
        TransportErrorCode::crypto(49)
    }

    fn loopback() -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 0))
    }

    fn server(own: &KeyPair, config: &ClusterConfig) -> Endpoint {
        Endpoint::server(server_config(own, config).unwrap(), loopback()).unwrap()
    }

    fn dialer() -> Endpoint {
        Endpoint::client(loopback()).unwrap()
    }

    async fn shut_down(endpoints: &[&Endpoint]) {
        for endpoint in endpoints {
            endpoint.close(0u32.into(), b"done");
        }
        for endpoint in endpoints {
            timeout(WAIT, endpoint.wait_idle()).await.unwrap();
        }
    }

    /// `own` dials `server` expecting replica `expected`; returns both sides' outcomes. The
    /// dialer's outcome is the error that ended the connection, if it did not establish or was
    /// closed by the server right after the dialer's side of the handshake completed.
    async fn dial(
        server: &Endpoint,
        dialer: &Endpoint,
        own: &KeyPair,
        config: &ClusterConfig,
        expected: ReplicaId,
    ) -> (
        Result<quinn::Connection, ConnectionError>,
        Result<quinn::Connection, ConnectionError>,
    ) {
        let connecting = dialer
            .connect_with(
                client_config(own, config, expected).unwrap(),
                server.local_addr().unwrap(),
                &server_name(expected),
            )
            .unwrap();
        let accepting = async {
            let incoming = server.accept().await.expect("server endpoint is open");
            incoming.await
        };
        timeout(WAIT, async { tokio::join!(connecting, accepting) })
            .await
            .expect("handshake timed out")
    }

    #[tokio::test]
    async fn replica_dials_replica_and_both_know_who_is_there() {
        let config = config(1, 2);
        let server = server(&replica_key(0), &config);
        let dialer = dialer();
        let (client_side, server_side) =
            dial(&server, &dialer, &replica_key(1), &config, ReplicaId(0)).await;
        let client_side = client_side.unwrap();
        let server_side = server_side.unwrap();
        assert_eq!(
            peer_principal(&server_side, &config),
            Some(Principal::Replica(ReplicaId(1)))
        );
        assert_eq!(
            peer_principal(&client_side, &config),
            Some(Principal::Replica(ReplicaId(0)))
        );
        assert_eq!(
            client_side
                .handshake_data()
                .and_then(|d| d.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
                .and_then(|d| d.protocol),
            Some(ALPN.to_vec())
        );

        let received = timeout(WAIT, async {
            let mut send = client_side.open_uni().await.unwrap();
            send.write_all(b"pre-prepare").await.unwrap();
            send.finish().unwrap();
            let mut recv = server_side.accept_uni().await.unwrap();
            recv.read_to_end(1024).await.unwrap()
        })
        .await
        .unwrap();
        assert_eq!(received, b"pre-prepare");

        shut_down(&[&dialer, &server]).await;
    }

    #[tokio::test]
    async fn admitted_client_is_seen_as_that_client() {
        let config = config(1, 3);
        let server = server(&replica_key(3), &config);
        let dialer = dialer();
        let (client_side, server_side) =
            dial(&server, &dialer, &client_key(2), &config, ReplicaId(3)).await;
        assert_eq!(
            peer_principal(&server_side.unwrap(), &config),
            Some(Principal::Client(ClientId(2)))
        );
        assert_eq!(
            peer_principal(&client_side.unwrap(), &config),
            Some(Principal::Replica(ReplicaId(3)))
        );
        shut_down(&[&dialer, &server]).await;
    }

    /// A key admitted under several client ids is seen as their account, the lowest of them,
    /// whatever order the ids were admitted in; a replica's key stays the replica's.
    #[test]
    fn a_shared_client_key_is_seen_as_its_account() {
        let mut config = config(1, 3);
        config.clients.insert(ClientId(9), client_key(2).public());
        config.clients.insert(ClientId(5), client_key(2).public());
        assert_eq!(
            principal_of(&client_key(2).public(), &config),
            Some(Principal::Client(ClientId(2)))
        );
        config.clients.remove(&ClientId(2));
        assert_eq!(
            principal_of(&client_key(2).public(), &config),
            Some(Principal::Client(ClientId(5)))
        );
        assert_eq!(
            principal_of(&client_key(3).public(), &config),
            Some(Principal::Client(ClientId(3)))
        );
        assert_eq!(
            principal_of(&replica_key(1).public(), &config),
            Some(Principal::Replica(ReplicaId(1)))
        );
    }

    #[tokio::test]
    async fn unknown_key_is_refused_at_the_handshake() {
        let config = config(1, 2);
        let stranger = KeyPair::from_seed([0x5a; 32]);
        assert_eq!(principal_of(&stranger.public(), &config), None);
        let server = server(&replica_key(0), &config);
        let dialer = dialer();
        let (client_side, server_side) =
            dial(&server, &dialer, &stranger, &config, ReplicaId(0)).await;

        // The server never establishes the connection: it fails its handshake locally.
        match server_side {
            Err(ConnectionError::TransportError(e)) => assert_eq!(e.code, access_denied()),
            other => panic!("server should refuse the stranger, got {other:?}"),
        }
        // The dialer's side of a TLS 1.3 handshake completes before the server has checked the
        // client's key, so the dialer may see the connection established and then closed.
        let client_error = match client_side {
            Ok(connection) => timeout(WAIT, connection.closed()).await.unwrap(),
            Err(e) => e,
        };
        match client_error {
            ConnectionError::ConnectionClosed(close) => {
                assert_eq!(close.error_code, access_denied())
            }
            other => panic!("dialer should see the server's refusal, got {other:?}"),
        }
        shut_down(&[&dialer, &server]).await;
    }

    #[tokio::test]
    async fn dialer_without_a_key_is_refused_at_the_handshake() {
        let config = config(1, 2);
        let server = server(&replica_key(0), &config);
        let dialer = dialer();
        // A dialer that checks the server properly but presents no key of its own. rustls refuses
        // it as soon as its ClientHello arrives: it does not offer a raw public key.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = Arc::new(ReplicaVerifier {
            expected: ReplicaId(0),
            expected_key: replica_key(0).public(),
            algorithms: provider.signature_verification_algorithms,
        });
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        tls.alpn_protocols = vec![ALPN.to_vec()];
        let anonymous =
            quinn::ClientConfig::new(Arc::new(QuicClientConfig::try_from(tls).unwrap()));
        let connecting = dialer
            .connect_with(anonymous, server.local_addr().unwrap(), "replica-0")
            .unwrap();
        let accepting = async {
            server
                .accept()
                .await
                .expect("server endpoint is open")
                .await
        };
        let (client_side, server_side) =
            timeout(WAIT, async { tokio::join!(connecting, accepting) })
                .await
                .unwrap();
        assert!(
            matches!(server_side, Err(ConnectionError::TransportError(_))),
            "server should refuse a dialer without a key, got {server_side:?}"
        );
        let client_error = match client_side {
            Ok(connection) => timeout(WAIT, connection.closed()).await.unwrap(),
            Err(e) => e,
        };
        assert!(
            matches!(client_error, ConnectionError::ConnectionClosed(_)),
            "dialer should see the server's refusal, got {client_error:?}"
        );
        shut_down(&[&dialer, &server]).await;
    }

    #[tokio::test]
    async fn wrong_replica_at_the_address_is_refused_by_the_dialer() {
        let config = config(1, 2);
        // Replica 2 answers at the address where the dialer expects replica 0.
        let server = server(&replica_key(2), &config);
        let dialer = dialer();
        let (client_side, server_side) =
            dial(&server, &dialer, &replica_key(1), &config, ReplicaId(0)).await;
        match client_side {
            Err(ConnectionError::TransportError(e)) => assert_eq!(e.code, access_denied()),
            other => panic!("dialer should refuse the wrong server key, got {other:?}"),
        }
        match server_side {
            Err(ConnectionError::ConnectionClosed(close)) => {
                assert_eq!(close.error_code, access_denied())
            }
            other => panic!("server should see the dialer's refusal, got {other:?}"),
        }
        shut_down(&[&dialer, &server]).await;
    }

    #[test]
    fn configs_refuse_what_they_cannot_serve() {
        let config = config(1, 2);
        assert!(matches!(
            server_config(&client_key(1), &config),
            Err(IdentityError::NotAReplica(key)) if key == client_key(1).public()
        ));
        assert!(matches!(
            client_config(&replica_key(0), &config, ReplicaId(4)),
            Err(IdentityError::UnknownReplica(ReplicaId(4)))
        ));
        let mut invalid = config.clone();
        invalid.replicas.pop();
        assert!(matches!(
            server_config(&replica_key(0), &invalid),
            Err(IdentityError::InvalidConfig(_))
        ));
    }

    #[test]
    fn spki_encoding_matches_rfc_8410_and_rustls() {
        // RFC 8410 section 10.1: the example ed25519 public key and its SubjectPublicKeyInfo.
        let key = PublicKey([
            0x19, 0xbf, 0x44, 0x09, 0x69, 0x84, 0xcd, 0xfe, 0x85, 0x41, 0xba, 0xc1, 0x67, 0xdc,
            0x3b, 0x96, 0xc8, 0x50, 0x86, 0xaa, 0x30, 0xb6, 0xb6, 0xcb, 0x0c, 0x5c, 0x38, 0xad,
            0x70, 0x31, 0x66, 0xe1,
        ]);
        let expected = [
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00, 0x19, 0xbf,
            0x44, 0x09, 0x69, 0x84, 0xcd, 0xfe, 0x85, 0x41, 0xba, 0xc1, 0x67, 0xdc, 0x3b, 0x96,
            0xc8, 0x50, 0x86, 0xaa, 0x30, 0xb6, 0xb6, 0xcb, 0x0c, 0x5c, 0x38, 0xad, 0x70, 0x31,
            0x66, 0xe1,
        ];
        assert_eq!(spki(&key), expected);
        let by_rustls =
            rustls::sign::public_key_to_spki(&rustls::pki_types::alg_id::ED25519, key.to_bytes());
        assert_eq!(by_rustls.as_ref(), &expected[..]);
        assert_eq!(key_from_spki(&expected), Some(key));

        // Anything that is not exactly an ed25519 SPKI is refused.
        assert_eq!(key_from_spki(&expected[..43]), None);
        assert_eq!(key_from_spki(&[expected.as_slice(), &[0]].concat()), None);
        let mut other_algorithm = expected;
        other_algorithm[8] = 0x71; // 1.3.101.113 is ed448
        assert_eq!(key_from_spki(&other_algorithm), None);
        assert_eq!(key_from_spki(&[]), None);
    }

    #[test]
    fn signer_signs_plain_ed25519_that_both_verifiers_accept() {
        let pair = replica_key(1);
        let signing_key = Ed25519SigningKey {
            key: Arc::new(pair.clone()),
        };
        assert_eq!(signing_key.algorithm(), SignatureAlgorithm::ED25519);
        assert_eq!(
            signing_key.public_key().unwrap().as_ref(),
            &spki(&pair.public())[..]
        );
        assert!(
            signing_key
                .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
                .is_none()
        );
        let signer = signing_key
            .choose_scheme(&[
                SignatureScheme::ECDSA_NISTP256_SHA256,
                SignatureScheme::ED25519,
            ])
            .unwrap();
        assert_eq!(signer.scheme(), SignatureScheme::ED25519);

        let message = b"TLS 1.3, server CertificateVerify\0 and a transcript hash";
        let signature: [u8; 64] = signer.sign(message).unwrap().try_into().unwrap();
        let signature = bft_crypto::Signature(signature);
        assert_eq!(signature, pair.sign_raw(message));
        bft_crypto::verify_raw(&pair.public(), message, &signature).unwrap();

        // The provider's ed25519 verifier, which checks handshake signatures, agrees.
        let algorithms = rustls::crypto::ring::default_provider().signature_verification_algorithms;
        let (_, ed25519) = algorithms
            .mapping
            .iter()
            .find(|(scheme, _)| *scheme == SignatureScheme::ED25519)
            .unwrap();
        let public = pair.public().to_bytes();
        ed25519[0]
            .verify_signature(&public, message, &signature.to_bytes())
            .unwrap();
        assert!(
            ed25519[0]
                .verify_signature(&public, b"another message", &signature.to_bytes())
                .is_err()
        );
    }
}
