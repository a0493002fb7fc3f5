//! `cert_info`: X.509 certificates expiring within `notify_days` (Salt's `cert_info` beacon).
//!
//! Options: [`Config`] (`beacond --describe cert_info`). One event per evaluation listing the
//! certificates within their threshold: `{"certificates": [...]}` with Salt's keys per
//! certificate: `cert_path`, `issuer`, `issuer_dict`, `subject`, `subject_dict`, `notAfter`,
//! `notAfter_raw`, `notBefore`, `notBefore_raw`, `serial_number` (a number, or a decimal string
//! beyond 64 bits, which msgpack cannot carry as an integer), `signature_algorithm`, `version`
//! (0-based, as OpenSSL), `extensions` (`ext_name`, `ext_data` in OpenSSL's printable form) and
//! `has_expired`; beacond adds `days_left`.
//!
//! Certificates are read from PEM (the first `CERTIFICATE` block, as Salt) or DER and decoded
//! by the `x509-cert` crate (RustCrypto's, over the `der` crate the RSA transport already uses).
//! Unreadable files are logged and skipped, as Salt does.

use super::{Beacon, BeaconError, BuildContext, Data};
use crate::config::{de, BeaconConfig, ConfigError};
use base64::Engine as _;
use der::{Decode, Tagged};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};
use x509_cert::ext::pkix::name::GeneralName;
use x509_cert::ext::pkix::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, IssuerAltName, KeyUsage, KeyUsages,
    SubjectAltName, SubjectKeyIdentifier,
};
use x509_cert::name::Name;

const DEFAULT_NOTIFY_DAYS: i64 = 45;

pub struct CertInfo {
    files: Vec<(PathBuf, Option<i64>)>,
    notify_days: i64,
}

/// X.509 certificates expiring within `notify_days`: one event per evaluation listing those
/// within their threshold.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The certificate files (PEM or DER): paths, or `<path>: {notify_days: N}` for a file's
    /// own threshold.
    files: Vec<FileItem>,
    /// Report a certificate when it expires within this many days (negative: always).
    #[serde(default = "default_notify_days")]
    notify_days: Days,
}

fn default_notify_days() -> Days {
    Days(DEFAULT_NOTIFY_DAYS)
}

/// A whole number of days (`30`, or `30.0`).
#[derive(Debug, Clone, Copy)]
struct Days(i64);

impl<'de> Deserialize<'de> for Days {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Days;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a whole number of days")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Days, E> {
                Ok(Days(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Days, E> {
                i64::try_from(v)
                    .map(Days)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Days, E> {
                if v.fract() == 0.0 && v.abs() < 1e15 {
                    Ok(Days(v as i64))
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
                }
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for Days {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Days".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "type": "integer", "x-type": "whole number of days" })
    }
}

/// A file's own options.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct FileOptions {
    /// This file's threshold instead of the beacon's `notify_days`.
    #[serde(default)]
    notify_days: Option<Days>,
}

/// One `files` item: a path, or `<path>: {notify_days: N}`.
#[derive(Debug)]
struct FileItem(PathBuf, Option<i64>);

impl<'de> Deserialize<'de> for FileItem {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = FileItem;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a path or `<path>: {notify_days: N}`")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<FileItem, E> {
                Ok(FileItem(PathBuf::from(s), None))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<FileItem, A::Error> {
                let Some((path, opts)) = map.next_entry::<String, FileOptions>()? else {
                    return Err(serde::de::Error::invalid_length(0, &self));
                };
                if map.next_key::<serde::de::IgnoredAny>()?.is_some() {
                    return Err(serde::de::Error::invalid_length(2, &self));
                }
                Ok(FileItem(PathBuf::from(path), opts.notify_days.map(|d| d.0)))
            }
        }
        d.deserialize_any(V)
    }
}

impl JsonSchema for FileItem {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "CertFile".into()
    }
    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({ "x-type": "path, or <path>: {notify_days: N}" })
    }
}

pub fn build(cfg: &BeaconConfig, _ctx: &BuildContext) -> Result<Box<dyn Beacon>, ConfigError> {
    let c: Config = de::from_config(cfg)?;
    Ok(Box::new(CertInfo {
        files: c.files.into_iter().map(|FileItem(p, d)| (p, d)).collect(),
        notify_days: c.notify_days.0,
    }))
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

fn name_of(oid: &der::asn1::ObjectIdentifier) -> String {
    let dotted = oid.to_string();
    short_name(&dotted).map_or(dotted, str::to_owned)
}

/// A distinguished name as (short name, value) pairs, in the certificate's order.
fn name_pairs(name: &Name) -> Vec<(String, String)> {
    let value = |v: &der::Any| match v.tag() {
        // BMPString: UTF-16BE.
        der::Tag::BmpString => {
            let units: Vec<u16> = v
                .value()
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            String::from_utf16_lossy(&units)
        }
        _ => String::from_utf8_lossy(v.value()).into_owned(),
    };
    name.0
        .iter()
        .flat_map(|rdn| rdn.0.iter())
        .map(|atv| (name_of(&atv.oid), value(&atv.value)))
        .collect()
}

fn unix_seconds(t: &x509_cert::time::Time) -> i64 {
    i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX)
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

/// A general name as OpenSSL prints it in `subjectAltName`.
fn general_name(n: &GeneralName) -> String {
    match n {
        GeneralName::Rfc822Name(s) => format!("email:{s}"),
        GeneralName::DnsName(s) => format!("DNS:{s}"),
        GeneralName::UniformResourceIdentifier(s) => format!("URI:{s}"),
        GeneralName::IpAddress(ip) => {
            let b = ip.as_bytes();
            match <[u8; 4]>::try_from(b) {
                Ok(v4) => format!("IP Address:{}", std::net::Ipv4Addr::from(v4)),
                Err(_) => match <[u8; 16]>::try_from(b) {
                    Ok(v6) => format!("IP Address:{}", std::net::Ipv6Addr::from(v6)),
                    Err(_) => "IP Address:<invalid>".to_owned(),
                },
            }
        }
        GeneralName::DirectoryName(name) => {
            let parts: String = name_pairs(name)
                .iter()
                .map(|(k, v)| format!("/{k}={v}"))
                .collect();
            format!("DirName:{parts}")
        }
        GeneralName::RegisteredId(oid) => format!("Registered ID:{oid}"),
        GeneralName::OtherName(_) => "othername:<unsupported>".to_owned(),
        GeneralName::EdiPartyName(_) => "EdiPartyName:<unsupported>".to_owned(),
    }
}

/// An extension's value as OpenSSL (and Salt's formatter) prints the common ones; hex otherwise.
fn ext_text(name: &str, value: &[u8]) -> String {
    let joined = |parts: Vec<String>| parts.join(", ");
    let pretty = || -> Result<String, der::Error> {
        Ok(match name {
            "basicConstraints" => {
                let bc = BasicConstraints::from_der(value)?;
                let mut out = if bc.ca { "CA:TRUE" } else { "CA:FALSE" }.to_owned();
                if let Some(p) = bc.path_len_constraint {
                    out.push_str(&format!(", pathlen:{p}"));
                }
                out
            }
            "keyUsage" => {
                let ku = KeyUsage::from_der(value)?;
                const NAMES: [(KeyUsages, &str); 9] = [
                    (KeyUsages::DigitalSignature, "Digital Signature"),
                    (KeyUsages::NonRepudiation, "Non Repudiation"),
                    (KeyUsages::KeyEncipherment, "Key Encipherment"),
                    (KeyUsages::DataEncipherment, "Data Encipherment"),
                    (KeyUsages::KeyAgreement, "Key Agreement"),
                    (KeyUsages::KeyCertSign, "Certificate Sign"),
                    (KeyUsages::CRLSign, "CRL Sign"),
                    (KeyUsages::EncipherOnly, "Encipher Only"),
                    (KeyUsages::DecipherOnly, "Decipher Only"),
                ];
                NAMES
                    .iter()
                    .filter(|(flag, _)| ku.0.contains(*flag))
                    .map(|(_, n)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            }
            "extendedKeyUsage" => joined(
                ExtendedKeyUsage::from_der(value)?
                    .0
                    .iter()
                    .map(|oid| {
                        let o = oid.to_string();
                        match o.as_str() {
                            "1.3.6.1.5.5.7.3.1" => "TLS Web Server Authentication".to_owned(),
                            "1.3.6.1.5.5.7.3.2" => "TLS Web Client Authentication".to_owned(),
                            "1.3.6.1.5.5.7.3.3" => "Code Signing".to_owned(),
                            "1.3.6.1.5.5.7.3.4" => "E-mail Protection".to_owned(),
                            "1.3.6.1.5.5.7.3.8" => "Time Stamping".to_owned(),
                            "1.3.6.1.5.5.7.3.9" => "OCSP Signing".to_owned(),
                            _ => o,
                        }
                    })
                    .collect(),
            ),
            "subjectKeyIdentifier" => {
                hex_colon(SubjectKeyIdentifier::from_der(value)?.0.as_bytes())
            }
            "authorityKeyIdentifier" => {
                let aki = AuthorityKeyIdentifier::from_der(value)?;
                aki.key_identifier
                    .map(|k| format!("keyid:{}", hex_colon(k.as_bytes())))
                    .unwrap_or_default()
            }
            "subjectAltName" => joined(
                SubjectAltName::from_der(value)?
                    .0
                    .iter()
                    .map(general_name)
                    .collect(),
            ),
            "issuerAltName" => joined(
                IssuerAltName::from_der(value)?
                    .0
                    .iter()
                    .map(general_name)
                    .collect(),
            ),
            _ => return Err(der::Tag::Null.value_error()),
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

impl Cert {
    /// The first PEM `CERTIFICATE` block of a file, or the file as DER.
    pub fn from_file(bytes: &[u8]) -> Result<Cert, String> {
        const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
        const END: &str = "-----END CERTIFICATE-----";
        let text = String::from_utf8_lossy(bytes);
        if let Some(start) = text.find(BEGIN) {
            let body = &text[start + BEGIN.len()..];
            let end = body.find(END).ok_or("PEM block without END line")?;
            let b64: String = body[..end]
                .chars()
                .filter(|c| !c.is_ascii_whitespace())
                .collect();
            let der = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|e| format!("invalid base64 in PEM: {e}"))?;
            return Cert::from_der(&der);
        }
        // A DER certificate starts with a SEQUENCE.
        if bytes.first() == Some(&0x30) {
            return Cert::from_der(bytes);
        }
        Err("no PEM certificate found".into())
    }

    pub fn from_der(der: &[u8]) -> Result<Cert, String> {
        let cert = x509_cert::Certificate::from_der(der).map_err(|e| e.to_string())?;
        let tbs = &cert.tbs_certificate;
        let version = match tbs.version {
            x509_cert::Version::V1 => 0,
            x509_cert::Version::V2 => 1,
            x509_cert::Version::V3 => 2,
        };
        let extensions = tbs
            .extensions
            .iter()
            .flatten()
            .map(|x| {
                let name = name_of(&x.extn_id);
                let text = ext_text(&name, x.extn_value.as_bytes());
                (name, text)
            })
            .collect();
        Ok(Cert {
            version,
            serial: tbs.serial_number.as_bytes().to_vec(),
            sig_alg: name_of(&cert.signature_algorithm.oid),
            issuer: name_pairs(&tbs.issuer),
            subject: name_pairs(&tbs.subject),
            not_before: unix_seconds(&tbs.validity.not_before),
            not_after: unix_seconds(&tbs.validity.not_after),
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
    fn crafted_input_is_an_error_not_a_panic() {
        // Truncated, wrong lengths, garbage: x509-cert rejects them all.
        for der in [
            &b"\x30"[..],
            b"\x30\x84\xff\xff\xff\xff",
            b"\x30\x03\x02\x01\x00",
            &[0x30; 64],
        ] {
            assert!(Cert::from_der(der).is_err(), "{der:?}");
        }
        let pem = b"-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        assert!(Cert::from_file(pem).is_err());
        assert!(Cert::from_file(b"-----BEGIN CERTIFICATE-----\nMIIB").is_err());
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
        // x509-cert refuses serial numbers longer than RFC 5280's 20 octets while decoding.
        assert!(e.is_err(), "{e:?}");
        assert!(t.elapsed() < std::time::Duration::from_secs(5));
    }
}
