//! TLS to etcd with a rustls configuration built here, and the ureq connector that uses it.
//!
//! Why not ureq's own TLS: its rustls glue hands the client certificate to rustls's
//! `with_client_auth_cert`, which parses it as a webpki end-entity certificate. That parse
//! refuses X.509 v1 certificates, which etcd (Go) accepts and etcdctl presents, and ureq
//! panics on any pair rustls refuses. So the client identity here is a
//! [`CertifiedKey`] given to rustls through a [`ResolvesClientCert`], which presents the
//! chain as it is, after our own check that the key is the certificate's. The connector
//! wraps ureq's TCP transport in a rustls connection with this configuration; plain `http`
//! endpoints pass through it untouched.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ClientConnection, RootCertStore, SignatureScheme, StreamOwned};
use ureq::unversioned::transport::time::{Duration as UreqDuration, Instant as UreqInstant};
use ureq::unversioned::transport::{
    Buffers, ConnectionDetails, Connector, Either, LazyBuffers, NextTimeout, Transport,
    TransportAdapter,
};

use super::{EtcdConfig, EtcdConfigError};

// ---------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------

fn read_file(path: &Path) -> Result<Vec<u8>, EtcdConfigError> {
    std::fs::read(path).map_err(|source| EtcdConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every certificate in a PEM file; sections that do not decode are skipped, and a file
/// with none left is an error naming it.
fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, EtcdConfigError> {
    let bytes = read_file(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
        .filter_map(|c| c.ok())
        .collect();
    if certs.is_empty() {
        return Err(EtcdConfigError::BadPem {
            path: path.to_path_buf(),
            what: "certificate",
        });
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1 PEM) in a file.
fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, EtcdConfigError> {
    let bytes = read_file(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|_| EtcdConfigError::BadPem {
        path: path.to_path_buf(),
        what: "private key",
    })
}

// ---------------------------------------------------------------------------------------
// The client identity
// ---------------------------------------------------------------------------------------

/// One DER element, split: its tag, the whole element (header included), its contents,
/// and what follows it. Only what certificates use: one-byte tags and definite lengths of
/// up to four bytes; anything else is `None`.
struct Element<'a> {
    tag: u8,
    whole: &'a [u8],
    contents: &'a [u8],
    rest: &'a [u8],
}

fn der_element(input: &[u8]) -> Option<Element<'_>> {
    let (&tag, after_tag) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, after_len) = after_tag.split_first()?;
    let (len, body) = if first < 0x80 {
        (usize::from(first), after_len)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || after_len.len() < n {
            return None;
        }
        let (bytes, body) = after_len.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |len, b| (len << 8) | usize::from(*b));
        (len, body)
    };
    if body.len() < len {
        return None;
    }
    let header = input.len() - body.len();
    Some(Element {
        tag,
        whole: &input[..header + len],
        contents: &body[..len],
        rest: &body[len..],
    })
}

/// The next element, if it has this tag.
fn expect(input: &[u8], tag: u8) -> Option<Element<'_>> {
    der_element(input).filter(|e| e.tag == tag)
}

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
/// `[0] EXPLICIT Version`: absent in a v1 certificate.
const VERSION: u8 = 0xa0;

/// The SubjectPublicKeyInfo of a certificate, as DER, read the same way whatever its
/// version: `Certificate ::= SEQUENCE { tbsCertificate SEQUENCE { [0] version OPTIONAL,
/// serialNumber, signature, issuer, validity, subject, subjectPublicKeyInfo, ... }, ... }`
/// (RFC 5280 4.1). webpki's parse would refuse a v1 certificate here.
fn subject_public_key_info(cert: &[u8]) -> Option<&[u8]> {
    let tbs = expect(expect(cert, SEQUENCE)?.contents, SEQUENCE)?.contents;
    let mut rest = tbs;
    if let Some(version) = expect(rest, VERSION) {
        rest = version.rest;
    }
    // serialNumber, signature, issuer, validity, subject.
    for tag in [INTEGER, SEQUENCE, SEQUENCE, SEQUENCE, SEQUENCE] {
        rest = expect(rest, tag)?.rest;
    }
    Some(expect(rest, SEQUENCE)?.whole)
}

/// The certificate chain and its signing key, checked to belong together: a key that does
/// not load or is not the certificate's is an error naming the file here, at client creation,
/// rather than a handshake etcd refuses.
fn client_identity(
    provider: &rustls::crypto::CryptoProvider,
    cert_path: &Path,
    key_path: &Path,
) -> Result<CertifiedKey, EtcdConfigError> {
    let chain = read_certs(cert_path)?;
    let key = read_key(key_path)?;
    let bad_key = |why: String| EtcdConfigError::BadClientIdentity {
        path: key_path.to_path_buf(),
        why,
    };
    let signing = provider.key_provider.load_private_key(key).map_err(|e| {
        bad_key(format!(
            "the private key cannot be loaded ({e}): give an unencrypted PEM key"
        ))
    })?;
    let cert_spki = chain
        .first()
        .and_then(|c| subject_public_key_info(c.as_ref()))
        .ok_or_else(|| EtcdConfigError::BadClientIdentity {
            path: cert_path.to_path_buf(),
            why: "the first certificate is not a readable X.509 certificate".into(),
        })?;
    let Some(key_spki) = signing.public_key() else {
        return Err(bad_key(format!(
            "cannot tell whether this key is the one of {}",
            cert_path.display()
        )));
    };
    if key_spki.as_ref() != cert_spki {
        return Err(bad_key(format!(
            "the key is not the one of {}",
            cert_path.display()
        )));
    }
    Ok(CertifiedKey::new(chain, signing))
}

/// Always offers the one configured identity: with a single certificate there is nothing to
/// choose between, and etcd, not we, decides whether it is acceptable (its CA hints are not
/// used to withhold it). rustls picks the signature scheme from the key afterwards.
#[derive(Debug)]
struct ClientIdentity(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The rustls configuration for `config`'s files: etcd's CA (without one, the public roots
/// ureq used to trust) and the client identity, if any. Every file is read and checked now,
/// whatever the endpoints' scheme, so a bad one is found before any request.
pub(super) fn client_config(config: &EtcdConfig) -> Result<Arc<ClientConfig>, EtcdConfigError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    match &config.ca_cert_file {
        Some(ca) => {
            let (added, _ignored) = roots.add_parsable_certificates(read_certs(ca)?);
            if added == 0 {
                return Err(EtcdConfigError::BadPem {
                    path: ca.clone(),
                    what: "CA certificate",
                });
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let identity = match (&config.cert_file, &config.key_file) {
        (Some(cert), Some(key)) => Some(client_identity(&provider, cert, key)?),
        _ => None,
    };
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .map_err(EtcdConfigError::Tls)?
        .with_root_certificates(roots);
    Ok(Arc::new(match identity {
        Some(identity) => {
            builder.with_client_cert_resolver(Arc::new(ClientIdentity(Arc::new(identity))))
        }
        None => builder.with_no_client_auth(),
    }))
}

// ---------------------------------------------------------------------------------------
// The connector
// ---------------------------------------------------------------------------------------

/// Wraps the transport before it (TCP) in TLS with our configuration for `https` URLs.
pub(super) struct TlsConnector {
    config: Arc<ClientConfig>,
}

impl TlsConnector {
    pub(super) fn new(config: Arc<ClientConfig>) -> TlsConnector {
        TlsConnector { config }
    }
}

impl fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConnector").finish_non_exhaustive()
    }
}

/// A failed handshake as ureq reports TLS failures: rustls's own error when there is one
/// (so a certificate etcd's CA did not sign can be told from a dropped connection), else
/// the I/O error (ureq unwraps its own timeouts from it).
fn handshake_error(e: io::Error) -> ureq::Error {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => ureq::Error::Rustls(tls.clone()),
        None => ureq::Error::from(e),
    }
}

/// What is left of the connect budget: it was set when the TCP connect started, and the
/// handshake is part of connecting.
fn remaining(details: &ConnectionDetails) -> NextTimeout {
    let mut timeout = details.timeout;
    if let (UreqDuration::Exact(budget), UreqInstant::Exact(start), UreqInstant::Exact(now)) =
        (timeout.after, details.now, (details.current_time)())
    {
        timeout.after =
            UreqDuration::Exact(budget.saturating_sub(now.saturating_duration_since(start)));
    }
    timeout
}

impl<In: Transport> Connector<In> for TlsConnector {
    type Out = Either<In, TlsTransport>;

    fn connect(
        &self,
        details: &ConnectionDetails,
        chained: Option<In>,
    ) -> Result<Option<Self::Out>, ureq::Error> {
        let Some(transport) = chained else {
            return Ok(None);
        };
        if !details.needs_tls() || transport.is_tls() {
            return Ok(Some(Either::A(transport)));
        }
        // `[::1]` in a URL is the address `::1`.
        let host = details
            .uri
            .host()
            .unwrap_or_default()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let name = ServerName::try_from(host)
            .map_err(|_| ureq::Error::Tls("the etcd endpoint's host is not a valid TLS name"))?
            .to_owned();
        let mut conn = ClientConnection::new(Arc::clone(&self.config), name)?;
        let mut sock = TransportAdapter::new(transport.boxed(), details.current_time.clone());
        sock.set_timeout(remaining(details));
        conn.complete_io(&mut sock).map_err(handshake_error)?;
        Ok(Some(Either::B(TlsTransport {
            buffers: LazyBuffers::new(
                details.config.input_buffer_size(),
                details.config.output_buffer_size(),
            ),
            stream: StreamOwned::new(conn, sock),
        })))
    }
}

/// HTTP/1.1 over one rustls connection.
pub(super) struct TlsTransport {
    buffers: LazyBuffers,
    stream: StreamOwned<ClientConnection, TransportAdapter>,
}

impl fmt::Debug for TlsTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTransport")
            .field("inner", &self.stream.sock.inner())
            .finish()
    }
}

impl Transport for TlsTransport {
    fn buffers(&mut self) -> &mut dyn Buffers {
        &mut self.buffers
    }

    fn transmit_output(&mut self, amount: usize, timeout: NextTimeout) -> Result<(), ureq::Error> {
        // The timeout goes to the TCP transport below, which applies the per-write limit.
        self.stream.sock.set_timeout(timeout);
        self.stream.write_all(&self.buffers.output()[..amount])?;
        Ok(())
    }

    fn await_input(&mut self, timeout: NextTimeout) -> Result<bool, ureq::Error> {
        self.stream.sock.set_timeout(timeout);
        let amount = self.stream.read(self.buffers.input_append_buf())?;
        self.buffers.input_appended(amount);
        Ok(amount > 0)
    }

    fn is_open(&mut self) -> bool {
        self.stream.sock.get_mut().is_open()
    }

    fn is_tls(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A certificate's skeleton: just the elements [`subject_public_key_info`] walks.
    fn cert(version: bool, spki: &[u8]) -> Vec<u8> {
        fn element(tag: u8, contents: &[u8]) -> Vec<u8> {
            let mut out = vec![tag];
            if contents.len() < 0x80 {
                out.push(contents.len() as u8);
            } else {
                out.extend([0x82, (contents.len() >> 8) as u8, contents.len() as u8]);
            }
            out.extend(contents);
            out
        }
        let mut tbs = Vec::new();
        if version {
            tbs.extend(element(VERSION, &element(INTEGER, &[2])));
        }
        tbs.extend(element(INTEGER, &[1]));
        for _ in 0..4 {
            tbs.extend(element(SEQUENCE, &[]));
        }
        tbs.extend(element(SEQUENCE, spki));
        tbs.extend(element(0xa3, &[0; 200]));
        let mut body = element(SEQUENCE, &tbs);
        body.extend(element(SEQUENCE, &[]));
        body.extend(element(0x03, &[0; 3]));
        element(SEQUENCE, &body)
    }

    #[test]
    fn the_public_key_is_found_with_or_without_a_version() {
        for version in [false, true] {
            let der = cert(version, &[0x05, 0x00]);
            assert_eq!(
                subject_public_key_info(&der),
                Some(&[SEQUENCE, 2, 0x05, 0x00][..]),
                "version field present: {version}"
            );
        }
    }

    #[test]
    fn truncated_or_odd_der_is_refused_not_a_panic() {
        let der = cert(true, &[0x05, 0x00]);
        for cut in 0..der.len() {
            assert_eq!(subject_public_key_info(&der[..cut]), None, "cut at {cut}");
        }
        assert_eq!(subject_public_key_info(&[0x30, 0x80, 0, 0]), None);
        assert_eq!(subject_public_key_info(&[0x1f, 0x01, 0]), None);
        assert_eq!(subject_public_key_info(b"not der at all"), None);
    }
}
