//! HTTPS listeners (`tls://` binds with `[tls]`): certificates made in the test with
//! rcgen, served to curl and to a Rust client (tokio-rustls + hyper, HTTP/1.1 and
//! HTTP/2 chosen by ALPN), client certificates, the handshake timeout, clear text on a
//! TLS port, the config checks, and certificate rotation on HUP under keep-alive HTTPS
//! load with zero failed requests.

// Test code: a failed unwrap is a failed test (Cargo.toml denies them in forkd itself).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::harness;

use harness::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType,
    SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

// ---- certificates ---------------------------------------------------------------------

/// A test CA and the files made with it in one temp dir.
pub(crate) struct Pki {
    dir: PathBuf,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

/// A certificate and its key, PEM, as written to files.
pub(crate) struct Issued {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
    key: KeyPair,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = temp_dir(&format!("tls-{name}"));
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, "forkd test CA");
        let ca_key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    /// A new CA whose certificate for localhost (serial 1) is installed as the server's.
    pub(crate) fn serving_localhost(name: &str) -> Pki {
        let pki = Pki::new(name);
        pki.install(&pki.issue("localhost", 1, false, false));
        pki
    }

    fn issue(&self, cn: &str, serial: u8, client: bool, expired: bool) -> Issued {
        let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        params
            .subject_alt_names
            .push(SanType::IpAddress([127, 0, 0, 1].into()));
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "forkd tests");
        params.serial_number = Some(SerialNumber::from_slice(&[0x10, serial]));
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        if expired {
            params.not_before = rcgen::date_time_ymd(2001, 1, 1);
            params.not_after = rcgen::date_time_ymd(2002, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
            key,
        }
    }

    /// Writes the server's cert.pem and key.pem (mode 0600), replacing them by rename
    /// as a deploy would.
    fn install(&self, issued: &Issued) {
        self.write("cert.pem", &issued.cert_pem, 0o644);
        self.write("key.pem", &issued.key_pem, 0o600);
    }

    fn write(&self, name: &str, text: &str, mode: u32) -> PathBuf {
        let path = self.dir.join(name);
        let temp = self.dir.join(format!(".{name}.new"));
        std::fs::write(&temp, text).unwrap();
        std::fs::set_permissions(&temp, std::fs::Permissions::from_mode(mode)).unwrap();
        std::fs::rename(&temp, &path).unwrap();
        path
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }

    /// forkd's environment for `[tls]` with this dir's files.
    pub(crate) fn env(&self) -> Vec<(String, String)> {
        vec![
            ("FORKD_TLS_CERTFILE".into(), self.path("cert.pem")),
            ("FORKD_TLS_KEYFILE".into(), self.path("key.pem")),
        ]
    }

    /// A client config trusting the test CA, offering `alpn`, with an optional
    /// client certificate.
    pub(crate) fn client(
        &self,
        alpn: &[&[u8]],
        cert: Option<&Issued>,
    ) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match cert {
            Some(c) => builder
                .with_client_auth_cert(
                    vec![c.der.clone()],
                    PrivateKeyDer::try_from(c.key.serialize_der()).unwrap(),
                )
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(pki: &Pki, args: &[&str], extra_env: &[(&str, &str)]) -> Server {
    Forkd::new()
        .args(args)
        .envs(pki.env())
        .envs(extra_env.iter().copied())
        .start()
}

// ---- a blocking HTTPS client (for the load threads) -------------------------------------

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn connect(addr: &str, config: &Arc<rustls::ClientConfig>) -> Result<Tls, String> {
    let tcp = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(10)));
    let name = ServerName::try_from("localhost").unwrap();
    let conn = rustls::ClientConnection::new(config.clone(), name)
        .map_err(|e| format!("tls client: {e}"))?;
    let mut stream = rustls::StreamOwned::new(conn, tcp);
    while stream.conn.is_handshaking() {
        stream
            .conn
            .complete_io(&mut stream.sock)
            .map_err(|e| format!("handshake: {e}"))?;
    }
    Ok(stream)
}

/// The serial number of the certificate the server presented.
fn server_serial(stream: &Tls) -> Vec<u8> {
    let leaf = &stream.conn.peer_certificates().expect("server certificate")[0];
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).expect("parse certificate");
    cert.tbs_certificate.raw_serial().to_vec()
}

/// One HTTPS GET on a fresh connection: (status, body, server certificate serial).
pub(crate) fn https_get(
    addr: &str,
    config: &Arc<rustls::ClientConfig>,
    path: &str,
) -> Result<(u16, String, Vec<u8>), String> {
    let mut stream = connect(addr, config)?;
    let serial = server_serial(&stream);
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .map_err(|e| format!("write: {e}"))?;
    let (status, _, body) = read_response_with_body(&mut BufReader::new(&mut stream))?;
    Ok((status, String::from_utf8_lossy(&body).into_owned(), serial))
}

/// `connections` threads sending keep-alive HTTPS requests until `stop`, reconnecting
/// (a new handshake) only when the server says `Connection: close`; any other end of a
/// connection, and any non-2xx, is a failure.
fn tls_load(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    connections: usize,
    stop: Arc<AtomicBool>,
) -> (Arc<Tally>, Vec<std::thread::JoinHandle<()>>) {
    let addr = addr.to_string();
    load_over(
        connections,
        stop,
        b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        true,
        move || connect(&addr, &config),
    )
}

// ---- an async client: hyper over tokio-rustls -------------------------------------------

/// GET `path` with hyper over TLS, HTTP/2 when ALPN chose it: (ALPN, version, body).
async fn hyper_get(
    addr: &str,
    config: Arc<rustls::ClientConfig>,
    path: &str,
) -> (Option<Vec<u8>>, hyper::Version, String) {
    use http_body_util::BodyExt;
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(config);
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let alpn = tls.get_ref().1.alpn_protocol().map(|p| p.to_vec());
    let io = hyper_util::rt::TokioIo::new(tls);
    let request = hyper::Request::get(path)
        .header("host", "localhost")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = if alpn.as_deref() == Some(b"h2") {
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
                .await
                .unwrap();
        tokio::spawn(conn);
        let mut request = request;
        *request.uri_mut() = format!("https://localhost{path}").parse().unwrap();
        sender.send_request(request).await.unwrap()
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        sender.send_request(request).await.unwrap()
    };
    let version = response.version();
    assert_eq!(response.status(), 200);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (alpn, version, String::from_utf8_lossy(&body).into_owned())
}

// ---- tests ------------------------------------------------------------------------------

#[test]
fn https_with_alpn_h2_and_http11_and_the_access_log_fields() {
    let pki = Pki::serving_localhost("alpn");
    let access = pki.path("access.log");
    let server = start(
        &pki,
        &["-b", "tls://127.0.0.1:0", "-w", "1", "echo"],
        &[
            ("FORKD_LOG_ACCESS_LOG", &access),
            (
                "FORKD_LOG_ACCESS_LOG_FORMAT",
                "{scheme} {protocol} {tls_version} {tls_cipher} {status}",
            ),
        ],
    );
    assert!(
        !server.log_contains("WARN"),
        "no warning expected:\n{}",
        server.log()
    );
    let rt = runtime();
    let (alpn, version, body) = rt.block_on(hyper_get(
        &server.addr,
        pki.client(&[b"h2", b"http/1.1"], None),
        "/h2",
    ));
    assert_eq!(alpn.as_deref(), Some(&b"h2"[..]));
    assert_eq!(version, hyper::Version::HTTP_2);
    assert!(body.contains("\"scheme\":\"https\""), "{body}");
    assert!(body.contains("\"version\":\"HTTP/2.0\""), "{body}");
    assert!(body.contains("\"tls_server_name\":\"localhost\""), "{body}");
    let (alpn, version, body) = rt.block_on(hyper_get(
        &server.addr,
        pki.client(&[b"http/1.1"], None),
        "/h1",
    ));
    assert_eq!(alpn.as_deref(), Some(&b"http/1.1"[..]));
    assert_eq!(version, hyper::Version::HTTP_11);
    assert!(body.contains("\"version\":\"HTTP/1.1\""), "{body}");
    // No ALPN at all: HTTP/1.1, as with any client that does not offer it.
    let (alpn, version, _) = rt.block_on(hyper_get(&server.addr, pki.client(&[], None), "/"));
    assert_eq!((alpn, version), (None, hyper::Version::HTTP_11));

    let logged = poll_until(Duration::from_secs(5), || {
        std::fs::read_to_string(&access).is_ok_and(|t| t.lines().count() >= 3)
    });
    let lines = std::fs::read_to_string(&access).unwrap_or_default();
    assert!(logged, "access log:\n{lines}");
    assert!(
        lines.contains("https HTTP/2.0 TLSv1.3 TLS13_"),
        "access log:\n{lines}"
    );
    assert!(
        lines.contains("https HTTP/1.1 TLSv1.3 TLS13_"),
        "access log:\n{lines}"
    );
}

#[test]
fn curl_gets_https_over_http11_and_h2() {
    if !std::process::Command::new("sh")
        .args(["-c", "command -v curl"])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        harness::cannot_run_here("curl is not installed (scripts/test-deps.sh installs it)");
        return;
    }
    let pki = Pki::serving_localhost("curl");
    let server = start(&pki, &["-b", "tls://127.0.0.1:0", "-w", "1", "echo"], &[]);
    let port = server.addr.rsplit(':').next().unwrap().to_string();
    for (flag, expected) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let output = std::process::Command::new("curl")
            .args([
                "-sS",
                flag,
                "--max-time",
                "10",
                "--cacert",
                &pki.path("ca.pem"),
                "--resolve",
                &format!("localhost:{port}:127.0.0.1"),
                "-w",
                "\n%{http_code} %{http_version}",
                &format!("https://localhost:{port}/curl"),
            ])
            .output()
            .expect("run curl");
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            text.ends_with(&format!("200 {expected}")),
            "curl {flag}: {text}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(text.contains("\"scheme\":\"https\""), "{text}");
    }
}

#[test]
fn client_certificates_required_refuse_without_and_pass_the_subject_with() {
    let pki = Pki::serving_localhost("mtls");
    let server = start(
        &pki,
        &["-b", "tls://127.0.0.1:0", "-w", "1", "echo"],
        &[
            ("FORKD_TLS_CA_CERTS", &pki.path("ca.pem")),
            ("FORKD_TLS_CLIENT_AUTH", "required"),
        ],
    );
    // No certificate: TLS 1.3 clients finish their side first, so the refusal shows on
    // the handshake or on the first read; never a response.
    let refused = https_get(&server.addr, &pki.client(&[], None), "/");
    assert!(
        refused.is_err(),
        "served without a client certificate: {refused:?}"
    );
    // A certificate from another CA: refused too.
    let other = Pki::new("mtls-other");
    let stranger = other.issue("stranger", 9, true, false);
    let refused = https_get(&server.addr, &pki.client(&[], Some(&stranger)), "/");
    assert!(
        refused.is_err(),
        "served a foreign certificate: {refused:?}"
    );
    // A good one: 200, and the app sees its subject.
    let client = pki.issue("test client", 2, true, false);
    let (status, body, _) =
        https_get(&server.addr, &pki.client(&[], Some(&client)), "/").expect("with a certificate");
    assert_eq!(status, 200, "{body}");
    // RFC 4514: the last RDN first (this certificate has CN, then O).
    assert!(
        body.contains("\"client_cert_subject\":\"O=forkd tests,CN=test client\""),
        "{body}"
    );
}

#[test]
fn client_certificate_subjects_reach_the_app_escaped_and_bounded() {
    let pki = Pki::serving_localhost("mtls-subject");
    let server = start(
        &pki,
        &["-b", "tls://127.0.0.1:0", "-w", "1", "echo"],
        &[
            ("FORKD_TLS_CA_CERTS", &pki.path("ca.pem")),
            ("FORKD_TLS_CLIENT_AUTH", "required"),
        ],
    );
    let subject_of = |cn: &str| -> Result<String, String> {
        let client = pki.issue(cn, 3, true, false);
        let (status, body, _) = https_get(&server.addr, &pki.client(&[], Some(&client)), "/")?;
        assert_eq!(status, 200, "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).expect("echo's JSON");
        Ok(json["client_cert_subject"]
            .as_str()
            .expect("a subject")
            .to_string())
    };
    // A CN that, unescaped, reads as CN=alice with O=Admins, and carries a newline, an
    // escape sequence and a NUL: one attribute, escaped, no control character.
    let subject = subject_of("alice, O=Admins\n\u{1b}[31m\0").expect("served");
    assert_eq!(
        subject,
        "O=forkd tests,CN=alice\\, O=Admins\\0A\\1B[31m\\00"
    );
    assert!(!subject.chars().any(char::is_control), "{subject:?}");
    // A 20 KB subject is not passed through: the handshake is refused.
    let refused = subject_of(&"x".repeat(20 * 1024));
    assert!(refused.is_err(), "served a 20 KB subject: {refused:?}");
    // The worker is fine: the next client is served.
    assert_eq!(subject_of("bob").expect("served"), "O=forkd tests,CN=bob");
}

#[test]
fn a_silent_handshake_is_closed_at_handshake_timeout_and_counted() {
    let pki = Pki::serving_localhost("timeout");
    let server = start(
        &pki,
        &["-b", "tls://127.0.0.1:0", "-w", "1", "hello"],
        &[
            ("FORKD_TLS_HANDSHAKE_TIMEOUT", "1"),
            ("FORKD_METRICS_BIND", "127.0.0.1:0"),
        ],
    );
    let mut silent = TcpStream::connect(&server.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let began = Instant::now();
    let mut buf = [0u8; 64];
    let read = silent.read(&mut buf);
    let waited = began.elapsed();
    assert!(
        matches!(read, Ok(0) | Err(_)),
        "expected the connection closed, got {read:?}"
    );
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(8),
        "closed after {waited:?}"
    );
    // Meanwhile and after, HTTPS works.
    let (status, _, _) = https_get(&server.addr, &pki.client(&[], None), "/").unwrap();
    assert_eq!(status, 200);
    server.expect_log("serving /metrics on ", Duration::from_secs(5));
    let metrics = server
        .log()
        .split("serving /metrics on ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| c.is_whitespace() || c == '"').next())
        .unwrap()
        .to_string();
    let counted = poll_until(Duration::from_secs(5), || {
        get(&metrics, "/metrics").is_ok_and(|(_, _, body)| {
            let text = String::from_utf8_lossy(&body);
            text.contains("forkd_tls_handshakes_total{result=\"timeout\"} 1")
                && text.contains("forkd_tls_handshakes_total{result=\"ok\"} 1")
                && text.contains("forkd_tls_handshake_duration_seconds_count 2")
        })
    });
    let body = get(&metrics, "/metrics")
        .map(|(_, _, b)| b)
        .unwrap_or_default();
    assert!(counted, "metrics:\n{}", String::from_utf8_lossy(&body));
}

#[test]
fn clear_text_http_on_a_tls_port_is_closed_and_the_worker_lives_on() {
    let pki = Pki::serving_localhost("plain");
    let server = start(&pki, &["-b", "tls://127.0.0.1:0", "-w", "1", "hello"], &[]);
    let workers = workers_of(server.pid());
    assert_eq!(workers.len(), 1);
    let mut plain = TcpStream::connect(&server.addr).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = Vec::new();
    let _ = plain.read_to_end(&mut answer);
    assert!(
        !answer.starts_with(b"HTTP/"),
        "clear text answered: {:?}",
        String::from_utf8_lossy(&answer)
    );
    // Ten more, to be sure nothing accumulates.
    for _ in 0..10 {
        let mut s = TcpStream::connect(&server.addr).unwrap();
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let _ = s.read_to_end(&mut Vec::new());
    }
    let (status, body, _) = https_get(&server.addr, &pki.client(&[], None), "/").unwrap();
    assert_eq!((status, body.as_str()), (200, "Hello, world!"));
    assert_eq!(workers_of(server.pid()), workers, "the worker changed");
}

/// The config errors and warnings `--check-config` gives for `[tls]`.
#[test]
fn check_config_loads_and_checks_the_tls_files() {
    let pki = Pki::new("check");
    let good = pki.issue("localhost", 1, false, false);
    pki.install(&good);
    let config = |name: &str, text: &str| -> PathBuf {
        let path = pki.dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let run = |path: &Path| {
        Forkd::new()
            .config(path)
            .arg("--check-config")
            .run_to_exit(Duration::from_secs(20))
    };
    let tls_table = |cert: &str, key: &str| {
        format!("app = \"hello\"\nbind = [\"tls://127.0.0.1:0\"]\n\n[tls]\ncertfile = {cert:?}\nkeyfile = {key:?}\n")
    };
    let (cert, key) = (pki.path("cert.pem"), pki.path("key.pem"));

    let ok = config("ok.toml", &tls_table(&cert, &key));
    let (code, stderr) = run(&ok);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");

    // --print-config shows the table.
    let (code, printed) = {
        let out = Forkd::new()
            .config(&ok)
            .arg("--print-config")
            .output(Duration::from_secs(10));
        (out.code, out.stdout)
    };
    assert_eq!(code, Some(0));
    for line in [
        "bind = [\"tls://127.0.0.1:0\"]",
        "[tls]",
        &format!("certfile = {cert:?}"),
        "client_auth = \"none\"",
        "alpn = [\"h2\", \"http/1.1\"]",
        "min_version = \"1.2\"",
        "handshake_timeout = \"10s\"",
    ] {
        assert!(printed.contains(line), "{line:?} not in:\n{printed}");
    }

    // A tls:// bind without [tls].
    let bare = config(
        "bare.toml",
        "app = \"hello\"\nbind = [\"tls://127.0.0.1:0\"]\n",
    );
    let (code, stderr) = run(&bare);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("bare.toml line 2: key `bind`") && stderr.contains("[tls]"),
        "{stderr}"
    );
    // [tls] without keyfile.
    let half = config(
        "half.toml",
        &format!("app = \"hello\"\n[tls]\ncertfile = {cert:?}\n"),
    );
    let (code, stderr) = run(&half);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("key `tls.keyfile`"), "{stderr}");
    // A missing file.
    let missing = pki.path("nope.pem");
    let path = config("missing.toml", &tls_table(&missing, &key));
    let (code, stderr) = run(&path);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("key `tls.certfile`") && stderr.contains(&missing),
        "{stderr}"
    );
    // A key that is not the certificate's.
    let other = pki.write(
        "other-key.pem",
        &KeyPair::generate().unwrap().serialize_pem(),
        0o600,
    );
    let other = other.to_str().unwrap();
    let path = config("mismatch.toml", &tls_table(&cert, other));
    let (code, stderr) = run(&path);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("key `tls.keyfile`")
            && stderr.contains(other)
            && stderr.contains("does not match the certificate"),
        "{stderr}"
    );
    // Not a key at all.
    let junk = pki.write("junk.pem", "not a key\n", 0o600);
    let path = config("junk.toml", &tls_table(&cert, junk.to_str().unwrap()));
    let (code, stderr) = run(&path);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("no private key found"), "{stderr}");
    // An expired certificate and a key readable by others: warnings, exit 0.
    let expired = pki.issue("localhost", 3, false, true);
    let old_cert = pki.write("old.pem", &expired.cert_pem, 0o644);
    let open_key = pki.write("open-key.pem", &expired.key_pem, 0o644);
    let path = config(
        "warn.toml",
        &tls_table(old_cert.to_str().unwrap(), open_key.to_str().unwrap()),
    );
    let (code, stderr) = run(&path);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("expired on") && stderr.contains("2002"),
        "{stderr}"
    );
    assert!(stderr.contains("mode 0644"), "{stderr}");
    // client_auth without ca_certs.
    let path = config(
        "auth.toml",
        &(tls_table(&cert, &key) + "client_auth = \"required\"\n"),
    );
    let (code, stderr) = run(&path);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("key `tls.client_auth`"), "{stderr}");
    // An unknown ALPN protocol.
    let path = config(
        "alpn.toml",
        &(tls_table(&cert, &key) + "alpn = [\"spdy/3\"]\n"),
    );
    let (code, stderr) = run(&path);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("key `tls.alpn`"), "{stderr}");
}

#[test]
fn hup_rotates_the_certificate_under_https_keepalive_load_dropping_nothing() {
    let pki = Pki::serving_localhost("rotate");
    let server = start(&pki, &["-b", "tls://127.0.0.1:0", "-w", "2", "hello"], &[]);
    let client = pki.client(&[b"http/1.1"], None);
    let (_, _, serial) = https_get(&server.addr, &client, "/").unwrap();
    assert_eq!(serial, [0x10, 1]);

    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = tls_load(&server.addr, client.clone(), 64, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    for round in 2..=4u8 {
        let old = workers_of(server.pid());
        pki.install(&pki.issue("localhost", round, false, false));
        server.signal(nix::sys::signal::Signal::SIGHUP);
        server.expect_log(&format!("generation={round}"), Duration::from_secs(10));
        // Every old worker gone (they serve the old certificate until they drain).
        let settled = poll_until(Duration::from_secs(20), || {
            let now = workers_of(server.pid());
            now.len() == 2 && !now.iter().any(|pid| old.contains(pid))
        });
        assert!(
            settled,
            "round {round}: old workers did not leave:\n{}",
            server.log()
        );
        // New connections get the new certificate.
        let (status, _, serial) = https_get(&server.addr, &client, "/").unwrap();
        assert_eq!((status, serial), (200, vec![0x10, round]));
        std::thread::sleep(Duration::from_millis(200));
    }
    finish(stop, handles);
    assert_no_failures(&tally, &server, "3 certificate rotations over HTTPS");
}

#[test]
fn hup_with_a_broken_key_keeps_the_old_workers_and_says_which_file() {
    let pki = Pki::serving_localhost("badkey");
    let server = start(&pki, &["-b", "tls://127.0.0.1:0", "-w", "2", "hello"], &[]);
    let client = pki.client(&[], None);
    let workers = {
        let mut w = workers_of(server.pid());
        w.sort();
        w
    };
    // A new certificate with a key that is not its own.
    let fresh = pki.issue("localhost", 2, false, false);
    pki.write("cert.pem", &fresh.cert_pem, 0o644);
    pki.write(
        "key.pem",
        &KeyPair::generate().unwrap().serialize_pem(),
        0o600,
    );
    server.signal(nix::sys::signal::Signal::SIGHUP);
    server.expect_log("HUP: reload failed", Duration::from_secs(10));
    let log = server.log();
    let line = log
        .lines()
        .find(|l| l.contains("HUP: reload failed"))
        .unwrap();
    assert!(
        line.contains("tls.keyfile") && line.contains(&pki.path("key.pem")),
        "{line}"
    );
    // Garbage in the key file: the same.
    pki.write("key.pem", "-----BEGIN PRIVATE KEY-----\nbroken\n", 0o600);
    server.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(poll_until(Duration::from_secs(10), || server
        .log()
        .matches("HUP: reload failed")
        .count()
        >= 2));
    std::thread::sleep(Duration::from_millis(300));
    let mut now = workers_of(server.pid());
    now.sort();
    assert_eq!(now, workers, "workers were replaced:\n{}", server.log());
    let (status, _, serial) = https_get(&server.addr, &client, "/").unwrap();
    assert_eq!((status, serial), (200, vec![0x10, 1]));
    assert!(!server.log_contains("generation=2"), "{}", server.log());
}

#[test]
fn ipv6_tls_bind_serves_https() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        harness::cannot_run_here("no IPv6 loopback here");
        return;
    }
    let pki = Pki::serving_localhost("v6");
    let server = start(&pki, &["-b", "tls://[::1]:0", "-w", "1", "hello"], &[]);
    assert!(server.addr.starts_with("[::1]:"), "{}", server.addr);
    let (status, body, _) = https_get(&server.addr, &pki.client(&[], None), "/").unwrap();
    assert_eq!((status, body.as_str()), (200, "Hello, world!"));
}

#[test]
fn sessions_resume_on_any_worker_with_the_ticket_key_shared_by_the_master() {
    let pki = Pki::serving_localhost("resume");
    let server = start(&pki, &["-b", "tls://127.0.0.1:0", "-w", "2", "echo"], &[]);
    // One client config: its session cache holds the tickets the server sent.
    let client = pki.client(&[], None);
    let mut pids = std::collections::HashSet::new();
    let mut kinds = Vec::new();
    // Connections stay open, so that accept balancing spreads them over both workers.
    let mut open = Vec::new();
    for _ in 0..20 {
        let mut stream = connect(&server.addr, &client).unwrap();
        kinds.push(stream.conn.handshake_kind());
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .unwrap();
        let (status, _, body) = read_response_with_body(&mut BufReader::new(&mut stream)).unwrap();
        assert_eq!(status, 200);
        let body = String::from_utf8_lossy(&body).into_owned();
        let pid = body
            .split("\"pid\":")
            .nth(1)
            .unwrap()
            .split([',', '}'])
            .next();
        pids.insert(pid.unwrap().to_string());
        open.push(stream);
    }
    assert_eq!(pids.len(), 2, "both workers served: {pids:?}");
    assert_eq!(kinds[0], Some(rustls::HandshakeKind::Full));
    assert!(
        kinds[1..]
            .iter()
            .all(|k| *k == Some(rustls::HandshakeKind::Resumed)),
        "every later handshake resumes, whichever worker takes it: {kinds:?}"
    );
    // TLS 1.2 resumes too (stateless tickets).
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let tls12 = Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS12])
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    );
    let kinds: Vec<_> = (0..6)
        .map(|_| {
            let stream = connect(&server.addr, &tls12).unwrap();
            (stream.conn.protocol_version(), stream.conn.handshake_kind())
        })
        .collect();
    assert!(
        kinds[1..].iter().all(|k| *k
            == (
                Some(rustls::ProtocolVersion::TLSv1_2),
                Some(rustls::HandshakeKind::Resumed)
            )),
        "{kinds:?}"
    );
}

#[test]
fn a_draining_worker_sends_goaway_on_h2_over_tls_and_finishes_the_stream() {
    let pki = Pki::serving_localhost("goaway");
    // A long keep-alive: an h2 connection that ends soon after the HUP was told to.
    let server = start(
        &pki,
        &[
            "-b",
            "tls://127.0.0.1:0",
            "-w",
            "1",
            "--keepalive",
            "60",
            "echo",
        ],
        &[],
    );
    let rt = runtime();
    rt.block_on(async {
        use http_body_util::BodyExt;
        let tcp = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        let tls = tokio_rustls::TlsConnector::from(pki.client(&[b"h2"], None))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tls),
        )
        .await
        .unwrap();
        let conn = tokio::spawn(conn);
        let request = |path: &str| {
            hyper::Request::get(format!("https://localhost{path}"))
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap()
        };
        let first = sender.send_request(request("/first")).await.unwrap();
        assert_eq!(first.status(), 200);
        // A slow request in flight when the drain begins.
        let slow = tokio::spawn(sender.send_request(request("/slow?sleep_ms=1500")));
        tokio::time::sleep(Duration::from_millis(300)).await;
        server.signal(nix::sys::signal::Signal::SIGHUP);
        let response = tokio::time::timeout(Duration::from_secs(10), slow)
            .await
            .expect("the in-flight stream finished")
            .unwrap()
            .expect("the in-flight stream was answered");
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert!(String::from_utf8_lossy(&body).contains("/slow"));
        // GOAWAY: the connection ends well before the 60 s keep-alive.
        let ended = tokio::time::timeout(Duration::from_secs(8), conn).await;
        assert!(
            ended.is_ok(),
            "the h2 connection was not closed by the drain"
        );
    });
}

#[test]
fn a_socket_passed_by_systemd_is_served_as_https_with_tls_fd_name() {
    let pki = Pki::serving_localhost("activate");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    // systemd-socket-activate passes no environment unless told (-E).
    let mut command = std::process::Command::new("systemd-socket-activate");
    command.args(["-l", &addr, "--fdname=https"]);
    for (key, value) in pki.env() {
        command.arg(format!("-E{key}={value}"));
    }
    command
        .arg("--")
        .arg(forkd())
        .args(["-b", "tls+fd://https", "-w", "1", "hello"]);
    let server = Server::spawn(&mut command);
    let client = pki.client(&[], None);
    let mut last = Err(String::new());
    poll_until(Duration::from_secs(10), || {
        last = https_get(&addr, &client, "/");
        last.is_ok()
    });
    let (status, body, _) = last.unwrap_or_else(|e| panic!("{e}\n{}", server.log()));
    assert_eq!((status, body.as_str()), (200, "Hello, world!"));
    assert!(
        server.log_contains(&format!("listening on {addr}")),
        "{}",
        server.log()
    );
}

#[test]
fn usr2_hands_the_tls_listener_over_with_no_failed_https_request() {
    let pki = Pki::serving_localhost("usr2");
    let pidfile = pki.path("forkd.pid");
    let server = start(
        &pki,
        &[
            "-b",
            "tls://127.0.0.1:0",
            "-w",
            "2",
            "-p",
            &pidfile,
            "hello",
        ],
        &[],
    );
    let old = server.pid();
    let client = pki.client(&[b"http/1.1"], None);
    let stop = Arc::new(AtomicBool::new(false));
    let (tally, handles) = tls_load(&server.addr, client.clone(), 32, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    server.signal(nix::sys::signal::Signal::SIGUSR2);
    let new = new_master(Path::new(&pidfile), old, Duration::from_secs(15));
    let _guard = PidGuard(new);
    let mut server = server;
    let old_gone = server.wait_exit(Duration::from_secs(15)).is_some();
    std::thread::sleep(Duration::from_millis(300));
    finish(stop, handles);
    assert!(new > 0, "no new master:\n{}", server.log());
    assert!(old_gone, "the old master did not leave:\n{}", server.log());
    let (status, _, _) = https_get(&server.addr, &client, "/").unwrap();
    assert_eq!(status, 200);
    assert_no_failures(&tally, &server, "USR2 over HTTPS");
}

#[test]
fn optional_client_certificates_and_min_version_13() {
    let pki = Pki::serving_localhost("optional");
    let server = start(
        &pki,
        &["-b", "tls://127.0.0.1:0", "-w", "1", "echo"],
        &[
            ("FORKD_TLS_CA_CERTS", &pki.path("ca.pem")),
            ("FORKD_TLS_CLIENT_AUTH", "optional"),
            ("FORKD_TLS_MIN_VERSION", "1.3"),
        ],
    );
    // Optional: no certificate is served, without a subject; a good one shows it.
    let (status, body, _) = https_get(&server.addr, &pki.client(&[], None), "/").unwrap();
    assert_eq!(status, 200);
    assert!(!body.contains("client_cert_subject"), "{body}");
    let client = pki.issue("opt client", 2, true, false);
    let (status, body, _) = https_get(&server.addr, &pki.client(&[], Some(&client)), "/").unwrap();
    assert_eq!(status, 200);
    assert!(body.contains("CN=opt client"), "{body}");
    // min_version = "1.3": a TLS 1.2-only client gets no handshake.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca.der().clone()).unwrap();
    let tls12 = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );
    assert!(connect(&server.addr, &tls12).is_err());
}

/// ALPN chose `http/1.1`, then the client sends the HTTP/2 preface:
/// ALPN decided, so the answer is HTTP/1.1's 400, not HTTP/2. With ALPN `h2`, or without
/// ALPN, the same bytes are HTTP/2.
#[test]
fn the_h2_preface_after_alpn_http11_is_not_served_as_http2() {
    let pki = Pki::serving_localhost("alpn-preface");
    let server = start(&pki, &["-b", "tls://127.0.0.1:0", "-w", "1", "echo"], &[]);
    let preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    let answer = |alpn: &[&[u8]]| {
        let mut stream = connect(&server.addr, &pki.client(alpn, None)).unwrap();
        stream.write_all(preface).unwrap();
        stream.flush().unwrap();
        let mut answer = vec![0u8; 12];
        stream.read_exact(&mut answer).unwrap();
        answer
    };
    let http11 = answer(&[b"http/1.1"]);
    assert_eq!(
        String::from_utf8_lossy(&http11),
        "HTTP/1.1 400",
        "ALPN http/1.1"
    );
    // HTTP/2's answer starts with the server's SETTINGS frame.
    for alpn in [&[&b"h2"[..]][..], &[]] {
        let h2 = answer(alpn);
        assert_eq!(h2[3], 0x4, "ALPN {alpn:?}: {h2:?}");
    }
}
