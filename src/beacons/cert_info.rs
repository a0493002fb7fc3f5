//! `cert_info`: X.509 certificates expiring within `notify_days` (Salt's `cert_info` beacon).
//!
//! Options (Salt's): `files` (required: a list of paths, or of `<path>: {notify_days: N}`),
//! `notify_days` (default 45; negative = always report). One event per evaluation listing the
//! certificates within their threshold: `{"certificates": [...]}` with Salt's keys per
//! certificate: `cert_path`, `issuer`, `issuer_dict`, `subject`, `subject_dict`, `notAfter`,
//! `notAfter_raw`, `notBefore`, `notBefore_raw`, `serial_number` (a number, or a decimal string
//! beyond 64 bits, which msgpack cannot carry as an integer), `signature_algorithm`, `version`
//! (0-based, as OpenSSL), `extensions` (`ext_name`, `ext_data` in OpenSSL's printable form) and
//! `has_expired`; beacond adds `days_left`.
//!
//! Certificates are read from PEM (the first `CERTIFICATE` block, as Salt) or DER with a small
//! DER reader of our own: only the fields above are needed, and an X.509 crate would bring a
//! large tree (parsers, big-number and time crates) into a binary that ships everywhere.
//! Unreadable files are logged and skipped, as Salt does.

use super::{Beacon, BeaconError, BuildContext, Data};
use crate::config::{BeaconConfig, ConfigError};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

const DEFAULT_NOTIFY_DAYS: i64 = 45;

pub struct CertInfo {
    files: Vec<(PathBuf, Option<i64>)>,
    notify_days: i64,
}

/// The options this beacon takes (checked by `beacons::build`).
pub const OPTIONS: &[&str] = &["files", "notify_days"];

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let files_node = cfg.require("files", "a list of certificate paths")?;
    let Some(list) = files_node.as_seq() else {
        return Err(cfg.error(
            files_node,
            format!("files must be a list of paths, found {}", files_node.kind()),
        ));
    };
    let int = |n: &crate::config::yaml::Node, what: &str| -> Result<i64, ConfigError> {
        n.as_f64()
            .filter(|f| f.fract() == 0.0)
            .map(|f| f as i64)
            .ok_or_else(|| {
                cfg.error(
                    n,
                    format!("{what} must be a whole number of days, found {}", n.kind()),
                )
            })
    };
    let notify_days = match cfg.opt("notify_days") {
        Some(n) => int(n, "notify_days")?,
        None => DEFAULT_NOTIFY_DAYS,
    };
    let mut files = Vec::new();
    for item in list {
        if let Some(p) = item.as_str() {
            files.push((PathBuf::from(p), None));
        } else if let Some([(p, opts)]) = item.as_map() {
            let days = match opts
                .as_map()
                .and_then(|m| m.iter().find(|(k, _)| k == "notify_days"))
            {
                Some((_, n)) => Some(int(n, &format!("files.{p}.notify_days"))?),
                None if opts.as_map().is_some()
                    || matches!(opts.value, crate::config::yaml::Yaml::Null) =>
                {
                    None
                }
                None => {
                    return Err(cfg.error(
                        opts,
                        format!(
                            "files.{p} must be a map such as {{notify_days: 15}}, found {}",
                            opts.kind()
                        ),
                    ))
                }
            };
            files.push((PathBuf::from(p), days));
        } else {
            return Err(cfg.error(
                item,
                format!(
                    "each files item must be a path or `<path>: {{notify_days: N}}`, found {}",
                    item.kind()
                ),
            ));
        }
    }
    Ok(Box::new(CertInfo { files, notify_days }))
}

impl Beacon for CertInfo {
    fn evaluate(&mut self) -> Result<Vec<Data>, BeaconError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let mut certs = Vec::new();
        for (path, days) in &self.files {
            let notify = days.unwrap_or(self.notify_days);
            let cert = match std::fs::read(path)
                .map_err(|e| e.to_string())
                .and_then(|b| Cert::from_file(&b))
            {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("Unable to load certificate {} ({e})", path.display());
                    continue;
                }
            };
            // Python's timedelta.days: floor division.
            let days_left = (cert.not_after - now).div_euclid(86_400);
            if notify < 0 || days_left <= notify {
                certs.push(Value::Object(cert.to_json(path, now, days_left)));
            }
        }
        if certs.is_empty() {
            return Ok(Vec::new());
        }
        let mut d = Data::new();
        d.insert("certificates".into(), Value::Array(certs));
        Ok(vec![d])
    }
}

/// What the event reports for a certificate file's bytes (`now` in Unix seconds). Also the
/// fuzzing entry point (fuzz/fuzz_targets/der_certificate.rs).
pub fn report(
    bytes: &[u8],
    path: &std::path::Path,
    now: i64,
) -> Result<Map<String, Value>, String> {
    let cert = Cert::from_file(bytes)?;
    let days_left = (cert.not_after - now).div_euclid(86_400);
    Ok(cert.to_json(path, now, days_left))
}

/// The parts of a certificate the beacon reports.
#[derive(Debug)]
pub struct Cert {
    pub version: i64,
    pub serial: Vec<u8>,
    pub sig_alg: String,
    pub issuer: Vec<(String, String)>,
    pub subject: Vec<(String, String)>,
    pub not_before: i64,
    pub not_after: i64,
    pub extensions: Vec<(String, String)>,
}

/// One DER element: tag byte and contents.
#[derive(Clone, Copy)]
struct Tlv<'a> {
    tag: u8,
    body: &'a [u8],
}

/// Reads consecutive DER elements from a byte slice.
struct Der<'a>(&'a [u8]);

impl<'a> Der<'a> {
    fn next(&mut self) -> Result<Tlv<'a>, String> {
        let b = self.0;
        if b.len() < 2 {
            return Err("truncated DER".into());
        }
        let tag = b[0];
        let (len, hdr) = match b[1] {
            l if l < 0x80 => (l as usize, 2),
            0x81..=0x84 => {
                let n = (b[1] & 0x7f) as usize;
                if b.len() < 2 + n {
                    return Err("truncated DER length".into());
                }
                let len = b[2..2 + n]
                    .iter()
                    .fold(0usize, |a, &x| (a << 8) | x as usize);
                (len, 2 + n)
            }
            _ => return Err("unsupported DER length".into()),
        };
        let end = hdr
            .checked_add(len)
            .filter(|e| *e <= b.len())
            .ok_or("DER length past the end")?;
        self.0 = &b[end..];
        Ok(Tlv {
            tag,
            body: &b[hdr..end],
        })
    }

    fn expect(&mut self, tag: u8, what: &str) -> Result<Tlv<'a>, String> {
        let t = self.next()?;
        if t.tag != tag {
            return Err(format!(
                "expected {what} (tag {tag:#x}), found tag {:#x}",
                t.tag
            ));
        }
        Ok(t)
    }

    fn peek_tag(&self) -> Option<u8> {
        self.0.first().copied()
    }
}

const SEQ: u8 = 0x30;
/// Longest serial number accepted, in bytes (RFC 5280: 20; some CAs got it wrong).
const MAX_SERIAL: usize = 64;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const INT: u8 = 0x02;

fn oid_string(b: &[u8]) -> String {
    let mut parts: Vec<u64> = Vec::new();
    let mut v: u64 = 0;
    for &x in b {
        v = (v << 7) | u64::from(x & 0x7f);
        if x & 0x80 == 0 {
            if parts.is_empty() {
                let first = (v / 40).min(2);
                parts.push(first);
                parts.push(v - first * 40);
            } else {
                parts.push(v);
            }
            v = 0;
        }
    }
    parts
        .iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(".")
}

/// OpenSSL's short names for the attribute, algorithm and extension OIDs certificates carry.
fn short_name(oid: &str) -> Option<&'static str> {
    Some(match oid {
        "2.5.4.3" => "CN",
        "2.5.4.4" => "SN",
        "2.5.4.5" => "serialNumber",
        "2.5.4.6" => "C",
        "2.5.4.7" => "L",
        "2.5.4.8" => "ST",
        "2.5.4.9" => "street",
        "2.5.4.10" => "O",
        "2.5.4.11" => "OU",
        "2.5.4.12" => "title",
        "2.5.4.15" => "businessCategory",
        "2.5.4.17" => "postalCode",
        "2.5.4.42" => "GN",
        "2.5.4.43" => "initials",
        "2.5.4.44" => "generationQualifier",
        "2.5.4.46" => "dnQualifier",
        "2.5.4.65" => "pseudonym",
        "1.2.840.113549.1.9.1" => "emailAddress",
        "0.9.2342.19200300.100.1.1" => "UID",
        "0.9.2342.19200300.100.1.25" => "DC",
        "1.3.6.1.4.1.311.60.2.1.3" => "jurisdictionC",
        "1.2.840.113549.1.1.4" => "md5WithRSAEncryption",
        "1.2.840.113549.1.1.5" => "sha1WithRSAEncryption",
        "1.2.840.113549.1.1.10" => "rsassaPss",
        "1.2.840.113549.1.1.11" => "sha256WithRSAEncryption",
        "1.2.840.113549.1.1.12" => "sha384WithRSAEncryption",
        "1.2.840.113549.1.1.13" => "sha512WithRSAEncryption",
        "1.2.840.113549.1.1.14" => "sha224WithRSAEncryption",
        "1.2.840.10045.4.1" => "ecdsa-with-SHA1",
        "1.2.840.10045.4.3.1" => "ecdsa-with-SHA224",
        "1.2.840.10045.4.3.2" => "ecdsa-with-SHA256",
        "1.2.840.10045.4.3.3" => "ecdsa-with-SHA384",
        "1.2.840.10045.4.3.4" => "ecdsa-with-SHA512",
        "1.3.101.112" => "ED25519",
        "1.3.101.113" => "ED448",
        "2.5.29.14" => "subjectKeyIdentifier",
        "2.5.29.15" => "keyUsage",
        "2.5.29.17" => "subjectAltName",
        "2.5.29.18" => "issuerAltName",
        "2.5.29.19" => "basicConstraints",
        "2.5.29.30" => "nameConstraints",
        "2.5.29.31" => "crlDistributionPoints",
        "2.5.29.32" => "certificatePolicies",
        "2.5.29.35" => "authorityKeyIdentifier",
        "2.5.29.37" => "extendedKeyUsage",
        "1.3.6.1.5.5.7.1.1" => "authorityInfoAccess",
        "1.3.6.1.4.1.11129.2.4.2" => "ct_precert_scts",
        _ => return None,
    })
}

fn name_of(oid: &[u8]) -> String {
    let dotted = oid_string(oid);
    short_name(&dotted).map_or(dotted, str::to_owned)
}

fn string_value(t: Tlv<'_>) -> String {
    match t.tag {
        // BMPString: UTF-16BE.
        0x1e => {
            let units: Vec<u16> = t
                .body
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => String::from_utf8_lossy(t.body).into_owned(),
    }
}

fn parse_name(body: &[u8]) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut rdns = Der(body);
    while rdns.peek_tag().is_some() {
        let set = rdns.expect(SET, "RDN set")?;
        let mut atvs = Der(set.body);
        while atvs.peek_tag().is_some() {
            let atv = atvs.expect(SEQ, "attribute")?;
            let mut a = Der(atv.body);
            let oid = a.expect(OID, "attribute type")?;
            let v = a.next()?;
            out.push((name_of(oid.body), string_value(v)));
        }
    }
    Ok(out)
}

/// UTCTime (YYMMDDHHMMSSZ) or GeneralizedTime (YYYYMMDDHHMMSSZ) → Unix seconds.
fn parse_time(t: Tlv<'_>) -> Result<i64, String> {
    let s = std::str::from_utf8(t.body).map_err(|_| "bad time")?;
    let s = s
        .strip_suffix('Z')
        .ok_or_else(|| format!("unsupported time {s:?}"))?;
    // Digits only: the fields below are cut by byte offset (a crafted multibyte or signed
    // field must be an error, not a panic or a "+1" that parses).
    if !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("bad time {s:?}"));
    }
    let (year, rest) = match t.tag {
        0x17 if s.len() == 12 => {
            let yy: i64 = s[..2].parse().map_err(|_| "bad year")?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &s[2..])
        }
        0x18 if s.len() == 14 => (s[..4].parse().map_err(|_| "bad year")?, &s[4..]),
        _ => return Err(format!("unsupported time {s:?}")),
    };
    let f = |i: usize| -> Result<i64, String> {
        rest[i..i + 2]
            .parse::<i64>()
            .map_err(|_| format!("bad time {s:?}"))
    };
    let (mo, d, h, mi, se) = (f(0)?, f(2)?, f(4)?, f(6)?, f(8)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return Err(format!("bad time {s:?}"));
    }
    Ok(crate::calendar::days_from_civil(year, mo, d) * 86_400 + h * 3600 + mi * 60 + se)
}

/// `YYYYMMDDHHMMSSZ` (OpenSSL's get_notAfter form) and `%Y-%m-%d %H:%M:%SZ`.
fn format_time(t: i64) -> (String, String) {
    let (y, m, d) = crate::calendar::civil_from_days(t.div_euclid(86_400));
    let s = t.rem_euclid(86_400);
    let (h, mi, se) = (s / 3600, s % 3600 / 60, s % 60);
    (
        format!("{y:04}{m:02}{d:02}{h:02}{mi:02}{se:02}Z"),
        format!("{y:04}-{m:02}-{d:02} {h:02}:{mi:02}:{se:02}Z"),
    )
}

fn hex_colon(b: &[u8]) -> String {
    b.iter()
        .map(|x| format!("{x:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// An extension's value as OpenSSL (and Salt's formatter) prints the common ones; hex otherwise.
fn ext_text(name: &str, value: &[u8]) -> String {
    let mut d = Der(value);
    let mut pretty = || -> Result<String, String> {
        Ok(match name {
            "basicConstraints" => {
                let seq = d.expect(SEQ, "basicConstraints")?;
                let mut s = Der(seq.body);
                let mut ca = false;
                let mut pathlen = None;
                while s.peek_tag().is_some() {
                    let t = s.next()?;
                    match t.tag {
                        0x01 => ca = t.body.first().is_some_and(|b| *b != 0),
                        INT => {
                            pathlen =
                                Some(t.body.iter().fold(0u64, |a, &x| (a << 8) | u64::from(x)))
                        }
                        _ => {}
                    }
                }
                let mut out = if ca { "CA:TRUE" } else { "CA:FALSE" }.to_owned();
                if let Some(p) = pathlen {
                    out.push_str(&format!(", pathlen:{p}"));
                }
                out
            }
            "keyUsage" => {
                let bits = d.expect(0x03, "keyUsage")?;
                const NAMES: [&str; 9] = [
                    "Digital Signature",
                    "Non Repudiation",
                    "Key Encipherment",
                    "Data Encipherment",
                    "Key Agreement",
                    "Certificate Sign",
                    "CRL Sign",
                    "Encipher Only",
                    "Decipher Only",
                ];
                let data = bits.body.get(1..).unwrap_or_default();
                NAMES
                    .iter()
                    .enumerate()
                    .filter(|(i, _)| data.get(i / 8).is_some_and(|b| b & (0x80 >> (i % 8)) != 0))
                    .map(|(_, n)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
            "extendedKeyUsage" => {
                let seq = d.expect(SEQ, "extendedKeyUsage")?;
                let mut s = Der(seq.body);
                let mut out = Vec::new();
                while s.peek_tag().is_some() {
                    let o = oid_string(s.expect(OID, "key purpose")?.body);
                    out.push(match o.as_str() {
                        "1.3.6.1.5.5.7.3.1" => "TLS Web Server Authentication".to_owned(),
                        "1.3.6.1.5.5.7.3.2" => "TLS Web Client Authentication".to_owned(),
                        "1.3.6.1.5.5.7.3.3" => "Code Signing".to_owned(),
                        "1.3.6.1.5.5.7.3.4" => "E-mail Protection".to_owned(),
                        "1.3.6.1.5.5.7.3.8" => "Time Stamping".to_owned(),
                        "1.3.6.1.5.5.7.3.9" => "OCSP Signing".to_owned(),
                        _ => o,
                    });
                }
                out.join(", ")
            }
            "subjectKeyIdentifier" => hex_colon(d.expect(0x04, "key identifier")?.body),
            "authorityKeyIdentifier" => {
                let seq = d.expect(SEQ, "authorityKeyIdentifier")?;
                let mut s = Der(seq.body);
                let mut out = Vec::new();
                while s.peek_tag().is_some() {
                    let t = s.next()?;
                    if t.tag == 0x80 {
                        out.push(format!("keyid:{}", hex_colon(t.body)));
                    }
                }
                out.join(", ")
            }
            "subjectAltName" | "issuerAltName" => {
                let seq = d.expect(SEQ, "GeneralNames")?;
                let mut s = Der(seq.body);
                let mut out = Vec::new();
                while s.peek_tag().is_some() {
                    let t = s.next()?;
                    let text = String::from_utf8_lossy(t.body);
                    out.push(match t.tag {
                        0x81 => format!("email:{text}"),
                        0x82 => format!("DNS:{text}"),
                        0x86 => format!("URI:{text}"),
                        0x87 => match t.body.len() {
                            4 => format!(
                                "IP Address:{}",
                                std::net::Ipv4Addr::new(t.body[0], t.body[1], t.body[2], t.body[3])
                            ),
                            16 => {
                                let mut a = [0u8; 16];
                                a.copy_from_slice(t.body);
                                format!("IP Address:{}", std::net::Ipv6Addr::from(a))
                            }
                            _ => "IP Address:<invalid>".to_owned(),
                        },
                        _ => format!("othername:{}", hex_colon(t.body)),
                    });
                }
                out.join(", ")
            }
            _ => return Err(String::new()),
        })
    };
    pretty().unwrap_or_else(|_| hex_colon(value))
}

/// A big-endian unsigned integer as decimal.
fn decimal(be: &[u8]) -> String {
    let mut digits: Vec<u8> = be.iter().copied().skip_while(|b| *b == 0).collect();
    if digits.is_empty() {
        return "0".into();
    }
    let mut out = Vec::new();
    while !digits.is_empty() {
        let mut rem: u32 = 0;
        let mut next = Vec::with_capacity(digits.len());
        for &b in &digits {
            let cur = (rem << 8) | u32::from(b);
            let q = cur / 10;
            rem = cur % 10;
            if !(next.is_empty() && q == 0) {
                next.push(q as u8);
            }
        }
        out.push(b'0' + rem as u8);
        digits = next;
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

fn base64_decode(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in text.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' | b'\r' | b'\n' | b' ' | b'\t' => continue,
            _ => return Err("invalid base64 in PEM".into()),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    Ok(out)
}

impl Cert {
    /// The first PEM `CERTIFICATE` block of a file, or the file as DER.
    pub fn from_file(bytes: &[u8]) -> Result<Cert, String> {
        const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
        const END: &str = "-----END CERTIFICATE-----";
        let text = String::from_utf8_lossy(bytes);
        if let Some(start) = text.find(BEGIN) {
            let body = &text[start + BEGIN.len()..];
            let end = body.find(END).ok_or("PEM block without END line")?;
            return Cert::from_der(&base64_decode(&body[..end])?);
        }
        if bytes.first() == Some(&SEQ) {
            return Cert::from_der(bytes);
        }
        Err("no PEM certificate found".into())
    }

    pub fn from_der(der: &[u8]) -> Result<Cert, String> {
        let cert = Der(der).expect(SEQ, "Certificate")?;
        let mut c = Der(cert.body);
        let tbs = c.expect(SEQ, "TBSCertificate")?;
        let alg = c.expect(SEQ, "signatureAlgorithm")?;
        let sig_alg = name_of(Der(alg.body).expect(OID, "algorithm")?.body);
        let mut t = Der(tbs.body);
        let mut version = 0;
        if t.peek_tag() == Some(0xa0) {
            let v = t.next()?;
            let n = Der(v.body).expect(INT, "version")?;
            version = n.body.iter().fold(0i64, |a, &x| (a << 8) | i64::from(x));
        }
        let serial = t.expect(INT, "serialNumber")?.body.to_vec();
        // RFC 5280 allows 20 octets. Its decimal form costs the square of the length: a crafted
        // 60 KB serial (that openssl reads) kept the beacon busy for minutes.
        if serial.len() > MAX_SERIAL {
            return Err(format!(
                "serial number of {} bytes (at most {MAX_SERIAL} accepted)",
                serial.len()
            ));
        }
        t.expect(SEQ, "signature")?;
        let issuer = parse_name(t.expect(SEQ, "issuer")?.body)?;
        let validity = t.expect(SEQ, "validity")?;
        let mut v = Der(validity.body);
        let not_before = parse_time(v.next()?)?;
        let not_after = parse_time(v.next()?)?;
        let subject = parse_name(t.expect(SEQ, "subject")?.body)?;
        t.expect(SEQ, "subjectPublicKeyInfo")?;
        let mut extensions = Vec::new();
        while t.peek_tag().is_some() {
            let x = t.next()?;
            if x.tag != 0xa3 {
                continue;
            }
            let exts = Der(x.body).expect(SEQ, "extensions")?;
            let mut e = Der(exts.body);
            while e.peek_tag().is_some() {
                let ext = e.expect(SEQ, "extension")?;
                let mut f = Der(ext.body);
                let name = name_of(f.expect(OID, "extnID")?.body);
                let mut val = f.next()?;
                if val.tag == 0x01 {
                    val = f.next()?; // critical flag
                }
                extensions.push((name.clone(), ext_text(&name, val.body)));
            }
        }
        Ok(Cert {
            version,
            serial,
            sig_alg,
            issuer,
            subject,
            not_before,
            not_after,
            extensions,
        })
    }

    fn to_json(&self, path: &std::path::Path, now: i64, days_left: i64) -> Map<String, Value> {
        let joined = |n: &[(String, String)]| {
            n.iter()
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect::<Vec<_>>()
                .join(",")
        };
        let dict = |n: &[(String, String)]| {
            Value::Object(
                n.iter()
                    .map(|(k, v)| (k.clone(), Value::from(v.as_str())))
                    .collect(),
            )
        };
        let (na_raw, na) = format_time(self.not_after);
        let (nb_raw, nb) = format_time(self.not_before);
        let dec = decimal(&self.serial);
        let serial = dec.parse::<u64>().map_or(Value::from(dec), Value::from);
        let exts: Vec<Value> = self
            .extensions
            .iter()
            .map(|(n, d)| {
                let mut m = Map::new();
                m.insert("ext_name".into(), Value::from(n.as_str()));
                m.insert("ext_data".into(), Value::from(d.as_str()));
                Value::Object(m)
            })
            .collect();
        let mut m = Map::new();
        m.insert("cert_path".into(), Value::from(path.display().to_string()));
        m.insert("issuer".into(), Value::from(joined(&self.issuer)));
        m.insert("issuer_dict".into(), dict(&self.issuer));
        m.insert("notAfter_raw".into(), Value::from(na_raw));
        m.insert("notAfter".into(), Value::from(na));
        m.insert("notBefore_raw".into(), Value::from(nb_raw));
        m.insert("notBefore".into(), Value::from(nb));
        m.insert("serial_number".into(), serial);
        m.insert(
            "signature_algorithm".into(),
            Value::from(self.sig_alg.as_str()),
        );
        m.insert("subject".into(), Value::from(joined(&self.subject)));
        m.insert("subject_dict".into(), dict(&self.subject));
        m.insert("version".into(), Value::from(self.version));
        m.insert("extensions".into(), Value::Array(exts));
        m.insert("has_expired".into(), Value::from(self.not_after < now));
        m.insert("days_left".into(), Value::from(days_left));
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip() {
        let t = crate::calendar::days_from_civil(2038, 1, 19) * 86_400 + 3 * 3600 + 14 * 60 + 7;
        assert_eq!(t, 2_147_483_647);
        assert_eq!(format_time(t).0, "20380119031407Z");
        assert_eq!(format_time(0).1, "1970-01-01 00:00:00Z");
    }

    #[test]
    fn crafted_times_are_errors_not_panics() {
        let t = |tag: u8, body: &str| {
            parse_time(Tlv {
                tag,
                body: body.as_bytes(),
            })
        };
        assert_eq!(t(0x17, "380119031407Z"), Ok(2_147_483_647));
        // 12 (14) bytes but not 12 (14) characters: a byte offset would cut an 'é'.
        assert!(t(0x17, "1ééééé0Z").is_err());
        assert!(t(0x18, "200éééé111Z").is_err());
        assert!(t(0x17, "3801190314éZ").is_err());
        assert!(t(0x17, "+80119031407Z").is_err());
        assert!(t(0x17, "381319031407Z").is_err());
        assert!(t(0x17, "38011903140Z").is_err());
    }

    #[test]
    fn big_serials_in_decimal() {
        assert_eq!(decimal(&[0x01, 0x00]), "256");
        assert_eq!(decimal(&[0xff; 9]), "4722366482869645213695");
        assert_eq!(decimal(&[0]), "0");
    }

    fn corpus(name: &str) -> Vec<u8> {
        let p = format!(
            "{}/fuzz/corpus/der_certificate/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    #[test]
    fn seed_certificates_are_reported() {
        let path = std::path::Path::new("/x.pem");
        let m = report(&corpus("isrg-root-x1.pem"), path, 0).expect("ISRG Root X1");
        assert_eq!(m["subject_dict"]["CN"], "ISRG Root X1");
        assert_eq!(m["notAfter"], "2035-06-04 11:04:38Z");
        let m = report(&corpus("openssl-generalizedtime-2081.der"), path, 0).expect("DER");
        assert_eq!(m["subject"], "CN=\"generalized-time.example\"");
        assert!(m["notAfter_raw"]
            .as_str()
            .is_some_and(|t| t.starts_with("2081")));
    }

    /// Made while writing the fuzz target: a 60 KB serial number (openssl reads the
    /// certificate) took minutes to print in decimal. Now an error, at once.
    #[test]
    fn fuzz_reproducer_huge_serial_is_an_error() {
        let t = std::time::Instant::now();
        let e = report(
            &corpus("repro-serial-60000-bytes.der"),
            std::path::Path::new("/x"),
            0,
        );
        assert!(e.is_err_and(|e| e.contains("serial number of 60001 bytes")));
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }
}
