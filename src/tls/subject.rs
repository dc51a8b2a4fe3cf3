//! A certificate's subject as one unambiguous string: RFC 4514, as nginx's
//! `$ssl_client_s_dn` (OpenSSL's RFC 2253 mode) writes it.
//!
//! - The RDNs in reverse order of the certificate's sequence (the most specific first:
//!   `CN=alice,O=Example,C=DE`), separated by `,`; the attributes of a multi-valued RDN
//!   by `+`.
//! - Types by name (RFC 4514's table, plus the names OpenSSL gives a few more), else as a
//!   dotted OID.
//! - Values: a string type (UTF8String, PrintableString, IA5String, NumericString,
//!   VisibleString, T61String as Latin-1, BMPString, UniversalString) as its text with
//!   `,` `+` `"` `\` `<` `>` `;`, a leading `#` or space and a trailing space escaped by a
//!   backslash; control characters (C0, DEL, C1), line and paragraph separators, bidi
//!   controls and bytes that are not UTF-8 as `\XX` per byte (uppercase hex of the UTF-8
//!   or raw octets). Anything else (another type, an OID type, a string that does not
//!   decode) as `#` and the hex of its BER encoding.
//!
//! So the string never holds a control character, and splitting it back (at unescaped
//! `,`, `+`, the first `=`) gives the certificate's parts: `CN=alice\, O=Admins` is one
//! attribute, `CN=alice,O=Admins` two.
//!
//! The length is bounded by [`MAX_LEN`]: a client certificate whose subject is longer is
//! refused in the handshake ([`BoundedSubject`]), so an app never gets a truncated or
//! missing subject for a certificate that was accepted.

use std::fmt::Write;
use std::sync::Arc;
use x509_parser::asn1_rs::{Tag, ToDer};
use x509_parser::x509::{AttributeTypeAndValue, X509Name};

/// The longest subject string passed to the app, in bytes. Real subjects are a few
/// hundred bytes (RFC 5280's upper bounds are 64 characters for most attributes); 4 KiB
/// leaves room for long ones while keeping what every request carries small.
pub const MAX_LEN: usize = 4096;

/// An attribute's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrType {
    /// A short name (`CN`, `O`...).
    Name(&'static str),
    /// A dotted OID (`1.2.3.4`), for types without a name: its value is always `#hex`.
    Oid(String),
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrValue {
    /// A string's text, as UTF-8 (bytes that are not UTF-8 are written as `\XX`).
    Text(Vec<u8>),
    /// The BER encoding of a value that is not a string (or has an OID type).
    Ber(Vec<u8>),
}

/// One attribute of an RDN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attr {
    pub ty: AttrType,
    pub value: AttrValue,
}

/// Types by name: RFC 4514's table, then names OpenSSL (so nginx) gives.
const NAMES: &[(&str, &str)] = &[
    ("2.5.4.3", "CN"),
    ("2.5.4.7", "L"),
    ("2.5.4.8", "ST"),
    ("2.5.4.10", "O"),
    ("2.5.4.11", "OU"),
    ("2.5.4.6", "C"),
    ("2.5.4.9", "STREET"),
    ("0.9.2342.19200300.100.1.25", "DC"),
    ("0.9.2342.19200300.100.1.1", "UID"),
    ("1.2.840.113549.1.9.1", "emailAddress"),
    ("2.5.4.5", "serialNumber"),
    ("2.5.4.4", "SN"),
    ("2.5.4.42", "GN"),
    ("2.5.4.12", "title"),
    ("2.5.4.43", "initials"),
    ("2.5.4.44", "generationQualifier"),
    ("2.5.4.46", "dnQualifier"),
    ("2.5.4.65", "pseudonym"),
    ("2.5.4.17", "postalCode"),
    ("2.5.4.15", "businessCategory"),
];

/// The RFC 4514 string of a name whose RDNs are `rdns`, in the certificate's order.
pub fn format(rdns: &[Vec<Attr>]) -> String {
    let mut out = String::new();
    for (index, rdn) in rdns.iter().rev().enumerate() {
        if index > 0 {
            out.push(',');
        }
        for (index, attr) in rdn.iter().enumerate() {
            if index > 0 {
                out.push('+');
            }
            match &attr.ty {
                AttrType::Name(name) => out.push_str(name),
                AttrType::Oid(oid) => out.push_str(oid),
            }
            out.push('=');
            match &attr.value {
                AttrValue::Text(text) => escape(text, &mut out),
                AttrValue::Ber(ber) => {
                    out.push('#');
                    for byte in ber {
                        let _ = write!(out, "{byte:02X}");
                    }
                }
            }
        }
    }
    out
}

/// Writes `value` escaped as RFC 4514 §2.4 says, and every character that is not safe
/// to show (see the module doc) as `\XX` per byte.
fn escape(value: &[u8], out: &mut String) {
    let hex = |bytes: &[u8], out: &mut String| {
        for byte in bytes {
            let _ = write!(out, "\\{byte:02X}");
        }
    };
    let mut at = 0;
    for chunk in value.utf8_chunks() {
        for c in chunk.valid().chars() {
            let first = at == 0;
            at += c.len_utf8();
            let last = at == value.len();
            match c {
                ',' | '+' | '"' | '\\' | '<' | '>' | ';' => {
                    out.push('\\');
                    out.push(c);
                }
                ' ' if first || last => out.push_str("\\ "),
                '#' if first => out.push_str("\\#"),
                c if unsafe_to_show(c) => hex(c.encode_utf8(&mut [0; 4]).as_bytes(), out),
                c => out.push(c),
            }
        }
        let invalid = chunk.invalid();
        at += invalid.len();
        hex(invalid, out);
    }
}

/// Characters written as hex: controls (C0, DEL, C1), which a log line or a header
/// must not carry, and those that change how the text around them reads (line and
/// paragraph separators, bidi embeddings, overrides and isolates).
fn unsafe_to_show(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
        )
        || ('\u{202A}'..='\u{202E}').contains(&c)
        || ('\u{2066}'..='\u{2069}').contains(&c)
}

/// The attributes of an X.509 name, in the certificate's order.
pub fn parts(name: &X509Name<'_>) -> Vec<Vec<Attr>> {
    name.iter_rdn()
        .map(|rdn| rdn.iter().map(attr).collect())
        .collect()
}

/// One attribute: a named type with a string value as text, anything else as BER.
fn attr(attr: &AttributeTypeAndValue<'_>) -> Attr {
    let oid = attr.attr_type().to_id_string();
    let any = attr.attr_value();
    let name = NAMES.iter().find(|(id, _)| *id == oid).map(|(_, n)| *n);
    let text = name.and_then(|_| text_of(any.tag(), any.data));
    match (name, text) {
        (Some(name), Some(text)) => Attr {
            ty: AttrType::Name(name),
            value: AttrValue::Text(text),
        },
        (name, _) => Attr {
            ty: name.map_or(AttrType::Oid(oid), AttrType::Name),
            value: AttrValue::Ber(any.to_der_vec().unwrap_or_default()),
        },
    }
}

/// A string type's text as UTF-8 (its bytes as they are for the 8-bit types, checked
/// when written); None for another type or a BMP/Universal string that does not decode.
fn text_of(tag: Tag, data: &[u8]) -> Option<Vec<u8>> {
    match tag {
        Tag::Utf8String
        | Tag::PrintableString
        | Tag::Ia5String
        | Tag::NumericString
        | Tag::VisibleString => Some(data.to_vec()),
        // T.61 as Latin-1, as OpenSSL reads it.
        Tag::TeletexString => Some(
            data.iter()
                .map(|&b| char::from(b))
                .collect::<String>()
                .into(),
        ),
        Tag::BmpString => {
            if !data.len().is_multiple_of(2) {
                return None;
            }
            let units = data
                .chunks_exact(2)
                .map(|p| u16::from_be_bytes([p[0], p[1]]));
            char::decode_utf16(units)
                .collect::<Result<String, _>>()
                .ok()
                .map(String::into_bytes)
        }
        Tag::UniversalString => {
            if !data.len().is_multiple_of(4) {
                return None;
            }
            data.chunks_exact(4)
                .map(|q| char::from_u32(u32::from_be_bytes([q[0], q[1], q[2], q[3]])))
                .collect::<Option<String>>()
                .map(String::into_bytes)
        }
        _ => None,
    }
}

/// The RFC 4514 subject of a DER certificate; Err when it does not parse or its subject
/// is longer than [`MAX_LEN`].
pub fn of_certificate(der: &[u8]) -> Result<String, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let subject = format(&parts(cert.subject()));
    if subject.len() > MAX_LEN {
        return Err(format!(
            "the client certificate's subject is {} bytes as RFC 4514 text, above forkd's limit of {MAX_LEN}",
            subject.len()
        ));
    }
    Ok(subject)
}

/// A client-certificate verifier that refuses, after `inner` accepted it, a certificate
/// whose subject cannot be passed to the app whole ([`of_certificate`]).
#[derive(Debug)]
pub struct BoundedSubject {
    pub inner: Arc<dyn rustls::server::danger::ClientCertVerifier>,
}

impl rustls::server::danger::ClientCertVerifier for BoundedSubject {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[rustls::DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        intermediates: &[rustls::pki_types::CertificateDer<'_>],
        now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::server::danger::ClientCertVerified, rustls::Error> {
        let verified = self
            .inner
            .verify_client_cert(end_entity, intermediates, now)?;
        of_certificate(end_entity).map_err(|e| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
                Arc::new(std::io::Error::other(e)),
            )))
        })?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.inner.supported_verify_schemes()
    }

    fn requires_raw_public_keys(&self) -> bool {
        self.inner.requires_raw_public_keys()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use x509_parser::prelude::FromDer;

    fn text(ty: &'static str, value: &str) -> Attr {
        Attr {
            ty: AttrType::Name(ty),
            value: AttrValue::Text(value.as_bytes().to_vec()),
        }
    }

    /// One RDN per attribute, in the certificate's order.
    fn single(attrs: Vec<Attr>) -> Vec<Vec<Attr>> {
        attrs.into_iter().map(|a| vec![a]).collect()
    }

    #[test]
    fn order_separators_and_types_are_rfc_4514s() {
        let rdns = single(vec![
            text("C", "DE"),
            text("O", "Example"),
            text("CN", "alice"),
        ]);
        assert_eq!(format(&rdns), "CN=alice,O=Example,C=DE");
        let multi = vec![vec![text("OU", "a"), text("CN", "b")], vec![text("O", "c")]];
        assert_eq!(format(&multi), "O=c,OU=a+CN=b");
        let oid = vec![vec![Attr {
            ty: AttrType::Oid("1.2.3.4".into()),
            value: AttrValue::Ber(vec![0x02, 0x01, 0x05]),
        }]];
        assert_eq!(format(&oid), "1.2.3.4=#020105");
        assert_eq!(format(&[]), "");
        assert_eq!(format(&single(vec![text("CN", "")])), "CN=");
    }

    #[test]
    fn a_value_cannot_pass_for_more_attributes() {
        // The attack: one CN that reads as {CN=alice, O=Admins} unescaped.
        let forged = format(&single(vec![text("CN", "alice,O=Admins")]));
        let real = format(&single(vec![text("O", "Admins"), text("CN", "alice")]));
        assert_eq!(forged, "CN=alice\\,O=Admins");
        assert_eq!(real, "CN=alice,O=Admins");
        assert_ne!(forged, real);
        assert_eq!(
            format(&single(vec![text("CN", "a+b\"c\\d<e>f;g=h")])),
            "CN=a\\+b\\\"c\\\\d\\<e\\>f\\;g=h"
        );
        assert_eq!(format(&single(vec![text("CN", " #a ")])), "CN=\\ #a\\ ");
        assert_eq!(format(&single(vec![text("CN", "#x#")])), "CN=\\#x#");
        assert_eq!(format(&single(vec![text("CN", " ")])), "CN=\\ ");
    }

    #[test]
    fn controls_and_bytes_that_are_not_utf8_are_hex() {
        let value = |bytes: &[u8]| {
            format(&[vec![Attr {
                ty: AttrType::Name("CN"),
                value: AttrValue::Text(bytes.to_vec()),
            }]])
        };
        assert_eq!(value(b"a\nb\x1b[31m\0\x7f"), "CN=a\\0Ab\\1B[31m\\00\\7F");
        assert_eq!(value(b"a\xFF\xC3"), "CN=a\\FF\\C3");
        assert_eq!(value("é\u{85}".as_bytes()), "CN=é\\C2\\85");
        assert_eq!(
            value("x\u{202E}y\u{2028}".as_bytes()),
            "CN=x\\E2\\80\\AEy\\E2\\80\\A8"
        );
        assert_eq!(value("日本".as_bytes()), "CN=日本");
    }

    #[test]
    fn string_types_decode_and_others_are_hex() {
        assert_eq!(text_of(Tag::PrintableString, b"ab"), Some(b"ab".to_vec()));
        assert_eq!(
            text_of(Tag::TeletexString, &[0x61, 0xE9]),
            Some("aé".into())
        );
        assert_eq!(
            text_of(Tag::BmpString, &[0, 0x61, 0, 0xE9]),
            Some("aé".into())
        );
        assert_eq!(text_of(Tag::BmpString, &[0, 0x61, 0]), None, "odd length");
        assert_eq!(
            text_of(Tag::BmpString, &[0xD8, 0x00]),
            None,
            "lone surrogate"
        );
        assert_eq!(
            text_of(Tag::UniversalString, &[0, 0, 0, 0x61]),
            Some("a".into())
        );
        assert_eq!(text_of(Tag::UniversalString, &[0, 0x11, 0, 0]), None);
        assert_eq!(text_of(Tag::Integer, &[5]), None);
    }

    /// DER: `tag`, a definite length, `content`.
    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        match content.len() {
            n if n < 0x80 => out.push(n as u8),
            n if n < 0x100 => out.extend([0x81, n as u8]),
            n => out.extend([0x82, (n >> 8) as u8, n as u8]),
        }
        out.extend_from_slice(content);
        out
    }

    /// A DER Name of one attribute per RDN: (OID content bytes, value tag, value bytes).
    fn name(attrs: &[(&[u8], u8, &[u8])]) -> Vec<u8> {
        let rdns: Vec<u8> = attrs
            .iter()
            .flat_map(|(oid, tag, value)| {
                let atv = [der(0x06, oid), der(*tag, value)].concat();
                der(0x31, &der(0x30, &atv))
            })
            .collect();
        der(0x30, &rdns)
    }

    const CN: &[u8] = &[0x55, 0x04, 0x03];
    const O: &[u8] = &[0x55, 0x04, 0x0A];

    fn of_der(bytes: &[u8]) -> String {
        let (rest, parsed) = X509Name::from_der(bytes).expect("a Name");
        assert!(rest.is_empty());
        format(&parts(&parsed))
    }

    #[test]
    fn names_from_der_with_odd_values() {
        // UTF8String with a byte that is not UTF-8, a NUL and a newline.
        assert_eq!(
            of_der(&name(&[(O, 0x0C, b"Admins"), (CN, 0x0C, b"al\xFFi\0ce\n")])),
            "CN=al\\FFi\\00ce\\0A,O=Admins"
        );
        // A CN that is an INTEGER: the BER, in hex.
        assert_eq!(of_der(&name(&[(CN, 0x02, &[0x05])])), "CN=#020105");
        // An odd-length BMPString: the BER.
        assert_eq!(
            of_der(&name(&[(CN, 0x1E, &[0, 0x61, 0])])),
            "CN=#1E03006100"
        );
        // A type without a name: its OID, the value's BER.
        assert_eq!(
            of_der(&name(&[(&[0x2A, 0x03, 0x04], 0x0C, b"x")])),
            "1.2.3.4=#0C0178"
        );
        // emailAddress (IA5String).
        assert_eq!(
            of_der(&name(&[(
                &[0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x09, 0x01],
                0x16,
                b"a@b.c"
            )])),
            "emailAddress=a@b.c"
        );
    }

    /// A self-signed certificate whose subject is `dn`.
    fn certificate(dn: rcgen::DistinguishedName) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = dn;
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn certificates_subjects_are_bounded() {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "Example");
        dn.push(rcgen::DnType::CommonName, "alice, O=Admins");
        dn.push(
            rcgen::DnType::OrganizationalUnitName,
            rcgen::DnValue::BmpString("Ünit".try_into().unwrap()),
        );
        assert_eq!(
            of_certificate(&certificate(dn)).unwrap(),
            "OU=Ünit,CN=alice\\, O=Admins,O=Example"
        );
        let long = |n: usize| {
            let mut dn = rcgen::DistinguishedName::new();
            dn.push(rcgen::DnType::CommonName, "x".repeat(n));
            of_certificate(&certificate(dn))
        };
        assert_eq!(long(MAX_LEN - 3).unwrap().len(), MAX_LEN);
        let err = long(MAX_LEN - 2).unwrap_err();
        assert!(err.contains("4097 bytes") && err.contains("4096"), "{err}");
        assert!(long(20 * 1024).is_err());
        assert!(of_certificate(b"not a certificate").is_err());
    }

    // ---- property: the string parses back to the same parts ---------------------------

    /// splitmix64: enough to spread random cases; not used for anything secret.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// Bytes biased to what matters: specials, spaces, `#`, `=`, controls, multi-byte
    /// characters (bidi, C1, separators) and bytes that are not UTF-8.
    fn random_value(rng: &mut Rng) -> Vec<u8> {
        const PIECES: &[&str] = &[
            ",", "+", "\"", "\\", "<", ">", ";", "=", " ", "#", "a", "Z", "0", "\n", "\r", "\0",
            "\u{1b}", "\u{7f}", "\u{85}", "é", "日", "\u{202E}", "\u{2028}", "\\20", "\\,", "#00",
        ];
        let mut value = Vec::new();
        for _ in 0..rng.below(12) {
            match rng.below(8) {
                0 => value.push(rng.next() as u8),
                1 => value.push(0x80 | (rng.next() as u8 & 0x3F)),
                _ => value.extend_from_slice(PIECES[rng.below(PIECES.len())].as_bytes()),
            }
        }
        value
    }

    fn random_parts(rng: &mut Rng) -> Vec<Vec<Attr>> {
        (0..rng.below(5))
            .map(|_| {
                (0..1 + rng.below(3))
                    .map(|_| {
                        let ty = if rng.below(4) == 0 {
                            AttrType::Oid(format!("1.{}.{}", rng.below(40), rng.below(1000)))
                        } else {
                            AttrType::Name(NAMES[rng.below(NAMES.len())].1)
                        };
                        let value = if rng.below(4) == 0 {
                            let n = 1 + rng.below(6);
                            AttrValue::Ber((0..n).map(|_| rng.next() as u8).collect())
                        } else {
                            AttrValue::Text(random_value(rng))
                        };
                        Attr { ty, value }
                    })
                    .collect()
            })
            .collect()
    }

    /// A strict RFC 4514 reader (test only): the parts in the certificate's order.
    /// Panics on anything RFC 4514 does not allow unescaped.
    fn parse(text: &str) -> Vec<Vec<Attr>> {
        let bytes = text.as_bytes();
        let mut rdns: Vec<Vec<Attr>> = Vec::new();
        if bytes.is_empty() {
            return rdns;
        }
        let mut rdn = Vec::new();
        let mut at = 0;
        loop {
            let eq = at + bytes[at..].iter().position(|&b| b == b'=').expect("a `=`");
            let ty = &text[at..eq];
            let ty = match NAMES.iter().find(|(_, n)| *n == ty) {
                Some((_, name)) => AttrType::Name(name),
                None => {
                    assert!(
                        ty.split('.').all(|n| n.parse::<u64>().is_ok()),
                        "type {ty:?}"
                    );
                    AttrType::Oid(ty.to_string())
                }
            };
            at = eq + 1;
            let value = if bytes.get(at) == Some(&b'#') {
                at += 1;
                let mut ber = Vec::new();
                while at < bytes.len() && !matches!(bytes[at], b',' | b'+') {
                    ber.push(u8::from_str_radix(&text[at..at + 2], 16).expect("hex"));
                    at += 2;
                }
                assert!(!ber.is_empty());
                AttrValue::Ber(ber)
            } else {
                let start = at;
                let mut value = Vec::new();
                while at < bytes.len() && !matches!(bytes[at], b',' | b'+') {
                    let b = bytes[at];
                    if b == b'\\' {
                        let next = bytes[at + 1];
                        if next.is_ascii_hexdigit() {
                            value.push(u8::from_str_radix(&text[at + 1..at + 3], 16).unwrap());
                            at += 3;
                        } else {
                            assert!(b",+\"\\<>; #=".contains(&next), "\\{next}");
                            value.push(next);
                            at += 2;
                        }
                    } else {
                        assert!(!b"\"\\<>;".contains(&b), "unescaped {:?}", b as char);
                        assert!(!(at == start && (b == b' ' || b == b'#')), "leading");
                        value.push(b);
                        at += 1;
                    }
                }
                assert!(
                    !(at > start && bytes[at - 1] == b' ' && bytes[at - 2] != b'\\'),
                    "trailing space"
                );
                AttrValue::Text(value)
            };
            rdn.push(Attr { ty, value });
            match bytes.get(at) {
                Some(b'+') => at += 1,
                Some(b',') => {
                    rdns.push(std::mem::take(&mut rdn));
                    at += 1;
                }
                None => break,
                Some(other) => panic!("after a value: {other}"),
            }
        }
        rdns.push(rdn);
        rdns.reverse();
        rdns
    }

    #[test]
    fn random_names_read_back_the_same_and_show_no_control() {
        let seed = std::env::var("FORKD_FUZZ_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0x5EED_4514);
        let mut rng = Rng(seed);
        for case in 0..20_000 {
            let parts = random_parts(&mut rng);
            let text = format(&parts);
            assert!(
                !text.chars().any(unsafe_to_show),
                "case {case} (seed {seed}): {text:?}"
            );
            assert_eq!(parse(&text), parts, "case {case} (seed {seed}): {text:?}");
        }
    }
}
