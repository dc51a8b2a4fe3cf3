//! TLS for `tls://` binds: the `[tls]` files loaded and checked into a rustls
//! `ServerConfig` (by the master: at start, on HUP, and for `--check-config`), and the
//! handshake a worker runs on each accepted connection before hyper sees it.
//!
//! The master builds the `ServerConfig` once per generation, before it forks that
//! generation's workers, so they inherit it: the files are read with the master's
//! privileges (a root-only key file works with `user =`), a bad file is a failed reload
//! rather than a crash loop, and every worker of a generation shares one session-ticket
//! key (a client resumes its session on any worker). Workers of an older generation keep
//! the config they were forked with until they drain, so a HUP rotates certificates as a
//! rolling reload.
//!
//! The crypto provider is `ring`: it builds with a C compiler alone (aws-lc-rs needs
//! cmake, or prebuilt bindings, on top), and for what a server does per connection
//! (X25519 / P-256 key exchange, ECDSA or RSA signatures, AES-GCM and ChaCha20) the two
//! are close; see the README.

use crate::config::{ClientAuth, Config, TlsVersion};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

pub(crate) mod subject;

/// The longest session-ticket plaintext every worker accepts from the start: a TLS
/// session's state with room for a client certificate chain of a few KiB.
const TICKET_PRIMING: usize = 4096;

/// A loaded `[tls]`: the config the workers serve with, and what deserves a warning
/// (an expired certificate, a key file others can read).
pub struct Loaded {
    pub server: Arc<ServerConfig>,
    pub warnings: Vec<String>,
}

/// Loads and checks the `[tls]` files of `config`; `None` when it has no `[tls]`.
/// Errors name the config file, the key and the file it points at.
pub fn load(config: &Config) -> Result<Option<Loaded>, String> {
    let tls = &config.tls;
    let (Some(certfile), Some(keyfile)) = (&tls.certfile, &tls.keyfile) else {
        return Ok(None);
    };
    let at = |key: &str, file: &Path, problem: &str| -> String {
        let origin = config
            .config_file
            .as_ref()
            .map_or(String::new(), |p| format!("{}: ", p.display()));
        format!("{origin}key `{key}` ({}): {problem}", file.display())
    };
    let mut warnings = Vec::new();

    let cert_pem = read(certfile).map_err(|e| at("tls.certfile", certfile, &e))?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| at("tls.certfile", certfile, &format!("bad PEM: {e}")))?;
    let Some(leaf) = chain.first() else {
        return Err(at(
            "tls.certfile",
            certfile,
            "no CERTIFICATE block found (a PEM certificate chain, the server's first)",
        ));
    };
    let leaf_info = Certificate::parse(leaf)
        .map_err(|e| at("tls.certfile", certfile, &format!("bad certificate: {e}")))?;
    let now = unix_now();
    if leaf_info.not_after < now {
        warnings.push(at(
            "tls.certfile",
            certfile,
            &format!(
                "the certificate ({}) expired on {}",
                leaf_info.subject, leaf_info.not_after_text
            ),
        ));
    } else if leaf_info.not_before > now {
        warnings.push(at(
            "tls.certfile",
            certfile,
            &format!(
                "the certificate ({}) is not valid before {}",
                leaf_info.subject, leaf_info.not_before_text
            ),
        ));
    }

    let key_pem = read(keyfile).map_err(|e| at("tls.keyfile", keyfile, &e))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        at(
            "tls.keyfile",
            keyfile,
            &format!("no private key found (a PEM PKCS#8, PKCS#1 or SEC1 key): {e}"),
        )
    })?;
    if let Some(mode) = readable_by_others(keyfile) {
        warnings.push(at(
            "tls.keyfile",
            keyfile,
            &format!("the private key file has mode {mode:04o}: readable by others than its owner; `chmod 600` it"),
        ));
    }

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: &[&'static rustls::SupportedProtocolVersion] = match tls.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| at("tls.min_version", certfile, &e.to_string()))?;
    let builder = match (tls.client_auth, &tls.ca_certs) {
        (ClientAuth::None, _) | (_, None) => builder.with_no_client_auth(),
        (auth, Some(ca_certs)) => {
            let roots = client_roots(ca_certs).map_err(|e| at("tls.ca_certs", ca_certs, &e))?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = if auth == ClientAuth::Optional {
                verifier.allow_unauthenticated()
            } else {
                verifier
            };
            let verifier = verifier
                .build()
                .map_err(|e| at("tls.ca_certs", ca_certs, &e.to_string()))?;
            // A subject the app could not be given whole refuses the handshake.
            builder.with_client_cert_verifier(Arc::new(subject::BoundedSubject { inner: verifier }))
        }
    };
    let mut server = builder.with_single_cert(chain, key).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => at(
            "tls.keyfile",
            keyfile,
            &format!(
                "the private key does not match the certificate in {}",
                certfile.display()
            ),
        ),
        other => at("tls.keyfile", keyfile, &format!("unusable key: {other}")),
    })?;
    server.alpn_protocols = tls.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    // Made here, before the fork: every worker of this generation encrypts and accepts
    // the same tickets (until rustls rotates the key, every 6 hours, in each worker).
    server.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| at("tls.certfile", certfile, &format!("session tickets: {e}")))?;
    // rustls's ticketer refuses tickets longer than the longest it has made itself (a
    // defence against partitioning oracles); a worker that has issued none yet would
    // refuse its siblings' tickets. One ticket of `TICKET_PRIMING` bytes made here,
    // before the fork, sets that bound in every worker alike.
    let _ = server.ticketer.encrypt(&[0; TICKET_PRIMING]);
    Ok(Some(Loaded {
        server: Arc::new(server),
        warnings,
    }))
}

/// `[tls]` needs forkd's own workers: an exec worker is another program, handed plain
/// sockets, that would answer TLS clients in clear text.
pub fn check_exec(config: &Config) -> Result<(), String> {
    match config.bind.iter().find(|b| b.is_tls()) {
        Some(spec) => Err(format!(
            "key `bind`: \"{spec}\": TLS is served by forkd's own workers and is not available with exec workers (`exec.command`)"
        )),
        None => Ok(()),
    }
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read: {e}"))
}

/// The key file's mode when group or others may read it.
fn readable_by_others(path: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let mode = std::fs::metadata(path).ok()?.mode() & 0o7777;
    (mode & 0o044 != 0).then_some(mode)
}

fn client_roots(path: &Path) -> Result<RootCertStore, String> {
    let pem = read(path)?;
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| format!("bad PEM: {e}"))?;
        roots
            .add(cert)
            .map_err(|e| format!("bad CA certificate: {e}"))?;
    }
    if roots.is_empty() {
        return Err("no CERTIFICATE block found".to_string());
    }
    Ok(roots)
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What forkd reads from a certificate: its subject (for client certificates and
/// messages) and its validity.
pub struct Certificate {
    /// RFC 4514: `CN=client,O=Example` (see `subject`), not bounded in length.
    pub subject: String,
    pub not_before: i64,
    pub not_after: i64,
    not_before_text: String,
    not_after_text: String,
}

impl Certificate {
    pub fn parse(der: &[u8]) -> Result<Certificate, String> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
        let validity = cert.validity();
        Ok(Certificate {
            subject: subject::format(&subject::parts(cert.subject())),
            not_before: validity.not_before.timestamp(),
            not_after: validity.not_after.timestamp(),
            not_before_text: validity.not_before.to_string(),
            not_after_text: validity.not_after.to_string(),
        })
    }
}

/// What a TLS connection negotiated, for the access log and the app.
#[derive(Debug, Clone)]
pub struct TlsInfo {
    /// "TLSv1.3" or "TLSv1.2".
    pub version: &'static str,
    /// The IANA name of the cipher suite, as rustls spells it.
    pub cipher: &'static str,
    /// ALPN chose HTTP/2.
    pub h2: bool,
    /// ALPN chose `http/1.1`: served as HTTP/1 whatever the client sends.
    pub http1: bool,
    /// The client certificate's subject as RFC 4514 text (`subject::of_certificate`,
    /// at most `subject::MAX_LEN` bytes), when the client presented one.
    pub client_subject: Option<String>,
    /// The host name the client asked for (SNI), if it sent one.
    pub server_name: Option<Arc<str>>,
}

impl TlsInfo {
    pub fn of(conn: &rustls::ServerConnection) -> TlsInfo {
        let version = match conn.protocol_version() {
            Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
            Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
            _ => "TLS",
        };
        let cipher = conn
            .negotiated_cipher_suite()
            .and_then(|s| s.suite().as_str())
            .unwrap_or("unknown");
        let client_subject = conn
            .peer_certificates()
            .and_then(|certs| certs.first())
            .and_then(|leaf| subject::of_certificate(leaf).ok());
        TlsInfo {
            version,
            cipher,
            h2: conn.alpn_protocol() == Some(b"h2"),
            http1: conn.alpn_protocol() == Some(b"http/1.1"),
            client_subject,
            server_name: conn.server_name().map(Arc::from),
        }
    }
}
