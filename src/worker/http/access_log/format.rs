//! The access log's format of named fields (`log.access_log_format`): the fields, and the
//! template parsed once by the config (a value of `Config`, so it imports nothing of the
//! log's writer).

use hyper::header::HeaderName;

/// The default text format: Apache's combined log format, then the duration in
/// milliseconds and the worker's pid.
pub const DEFAULT_FORMAT: &str =
    "{remote_addr} - - [{time}] \"{request}\" {status} {bytes} \"{referer}\" \"{user_agent}\" {duration_ms} {pid}";

/// One named field of a format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Field {
    RemoteAddr,
    PeerAddr,
    Time,
    TimeIso,
    Request,
    Method,
    Uri,
    Path,
    Query,
    Protocol,
    Scheme,
    Status,
    Bytes,
    DurationMs,
    DurationUs,
    /// Seconds with six decimals (Gunicorn's `%(L)s`).
    DurationS,
    UserAgent,
    Referer,
    Host,
    Pid,
    Worker,
    /// `TLSv1.3` / `TLSv1.2`; `-` on a plain connection.
    TlsVersion,
    /// The negotiated cipher suite (`TLS13_AES_128_GCM_SHA256`); `-` on a plain connection.
    TlsCipher,
    /// `OK` when the whole response was written, else empty (nginx's
    /// `$request_completion`); a boolean in JSON.
    Completion,
    Header(HeaderName),
}

/// Every field name, for documentation and error messages.
pub const FIELD_NAMES: [&str; 25] = [
    "remote_addr",
    "peer_addr",
    "time",
    "time_iso8601",
    "request",
    "method",
    "uri",
    "path",
    "query",
    "protocol",
    "scheme",
    "status",
    "bytes",
    "duration_ms",
    "duration_us",
    "duration_s",
    "user_agent",
    "referer",
    "host",
    "pid",
    "worker",
    "tls_version",
    "tls_cipher",
    "completion",
    "header:NAME",
];

impl Field {
    fn parse(name: &str) -> Result<Field, String> {
        Ok(match name {
            "remote_addr" => Field::RemoteAddr,
            "peer_addr" => Field::PeerAddr,
            "time" => Field::Time,
            "time_iso8601" => Field::TimeIso,
            "request" => Field::Request,
            "method" => Field::Method,
            "uri" => Field::Uri,
            "path" => Field::Path,
            "query" => Field::Query,
            "protocol" => Field::Protocol,
            "scheme" => Field::Scheme,
            "status" => Field::Status,
            "bytes" => Field::Bytes,
            "duration_ms" => Field::DurationMs,
            "duration_us" => Field::DurationUs,
            "duration_s" => Field::DurationS,
            "user_agent" => Field::UserAgent,
            "referer" => Field::Referer,
            "host" => Field::Host,
            "pid" => Field::Pid,
            "worker" => Field::Worker,
            "tls_version" => Field::TlsVersion,
            "tls_cipher" => Field::TlsCipher,
            "completion" => Field::Completion,
            other => match other.strip_prefix("header:") {
                Some(header) => Field::Header(
                    HeaderName::from_bytes(header.as_bytes())
                        .map_err(|_| format!("{{{other}}}: {header:?} is not a header name"))?,
                ),
                None => {
                    return Err(format!(
                        "unknown field {{{other}}}; fields are {}",
                        FIELD_NAMES.join(", ")
                    ))
                }
            },
        })
    }

    /// The key of the field in a JSON line.
    pub(super) fn json_key(&self) -> String {
        match self {
            Field::RemoteAddr => "remote_addr",
            Field::PeerAddr => "peer_addr",
            Field::Time => "time",
            Field::TimeIso => "time_iso8601",
            Field::Request => "request",
            Field::Method => "method",
            Field::Uri => "uri",
            Field::Path => "path",
            Field::Query => "query",
            Field::Protocol => "protocol",
            Field::Scheme => "scheme",
            Field::Status => "status",
            Field::Bytes => "bytes",
            Field::DurationMs => "duration_ms",
            Field::DurationUs => "duration_us",
            Field::DurationS => "duration_s",
            Field::UserAgent => "user_agent",
            Field::Referer => "referer",
            Field::Host => "host",
            Field::Pid => "pid",
            Field::Worker => "worker",
            Field::TlsVersion => "tls_version",
            Field::TlsCipher => "tls_cipher",
            Field::Completion => "completion",
            Field::Header(name) => return format!("header:{name}"),
        }
        .to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Piece {
    Literal(String),
    Field(Field),
}

/// A parsed `access_log_format`: literal text and `{field}`s; `{{` and `}}` are braces.
/// Parsed once, by the config; the workers use it as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Format {
    pub(super) pieces: Vec<Piece>,
    /// The format as written, for `--print-config`.
    text: String,
}

impl Format {
    pub fn parse(text: &str) -> Result<Format, String> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    literal.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    literal.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(c) => name.push(c),
                            None => return Err(format!("unclosed {{ in {text:?}")),
                        }
                    }
                    if !literal.is_empty() {
                        pieces.push(Piece::Literal(std::mem::take(&mut literal)));
                    }
                    pieces.push(Piece::Field(Field::parse(name.trim())?));
                }
                '}' => return Err(format!("unmatched }} in {text:?} (write }}}} for a brace)")),
                c => literal.push(c),
            }
        }
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        if !pieces.iter().any(|p| matches!(p, Piece::Field(_))) {
            return Err(format!(
                "{text:?} names no field; fields are {}",
                FIELD_NAMES.join(", ")
            ));
        }
        Ok(Format {
            pieces,
            text: text.to_string(),
        })
    }

    /// The format as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub(super) fn fields(&self) -> impl Iterator<Item = &Field> {
        self.pieces.iter().filter_map(|p| match p {
            Piece::Field(f) => Some(f),
            Piece::Literal(_) => None,
        })
    }
}
