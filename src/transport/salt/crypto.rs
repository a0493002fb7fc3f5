//! The cryptography salt-minion uses on the request channel, re-implemented to be
//! byte-compatible with `salt.crypt`:
//!
//! - [`Crypticle`]: AES-192-CBC with PKCS#7 padding, then HMAC-SHA256 over `iv || ciphertext`
//!   appended; keys come from a base64 string of 24 AES + 32 HMAC bytes. `dumps`/`loads` add
//!   the `pickle::` marker and the optional 32-character request nonce around msgpack.
//! - RSA-OAEP (SHA-1 or SHA-224, as `encryption_algorithm` says) for session keys and the
//!   auth token, PKCS#1 v1.5 signatures (`signing_algorithm`) on the master's auth reply.
//! - RSA with ANSI X9.31 padding, which Salt calls `encrypt`/`decrypt` on a key: the minion's
//!   `tok` (its private key applied to `b"salt"`) and the master's signature over the AES key
//!   digest. The private operation always uses blinding (RUSTSEC-2023-0071).
//! - `pem_finger`, the fingerprint `master_finger` is compared against.

use aes::cipher::{block_padding::Pkcs7, BlockDecryptMut, BlockEncryptMut, KeyIvInit};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey, EncodeRsaPrivateKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, LineEnding};
use rsa::traits::PublicKeyParts;
use rsa::{BigUint, Oaep, Pkcs1v15Sign, RsaPrivateKey, RsaPublicKey};
use sha1::Sha1;
use sha2::{Digest, Sha224, Sha256, Sha384, Sha512};

type HmacSha256 = Hmac<Sha256>;
type Aes192CbcEnc = cbc::Encryptor<aes::Aes192>;
type Aes192CbcDec = cbc::Decryptor<aes::Aes192>;

/// `Crypticle.PICKLE_PAD`: marks a decrypted payload as meaningful.
pub const PICKLE_PAD: &[u8] = b"pickle::";
const AES_KEY_LEN: usize = 24;
const HMAC_KEY_LEN: usize = 32;
const SIG_SIZE: usize = 32;
const BLOCK: usize = 16;

/// Everything that can fail in here. None of these carry key material.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    #[error("invalid AES key string: {0}")]
    BadKeyString(String),
    #[error("message authentication failed (HMAC mismatch)")]
    HmacMismatch,
    #[error("message too short to be an encrypted payload")]
    Truncated,
    #[error("bad AES padding")]
    BadPadding,
    #[error("payload does not start with the pickle:: marker")]
    NoPicklePad,
    #[error("reply nonce does not match the request")]
    NonceMismatch,
    #[error("msgpack: {0}")]
    Msgpack(String),
    #[error("unsupported algorithm {0:?} (salt knows OAEP-SHA1, OAEP-SHA224, PKCS1v15-SHA1, PKCS1v15-SHA224)")]
    UnsupportedAlgorithm(String),
    #[error("unsupported hash_type {0:?}")]
    UnsupportedHash(String),
    #[error("RSA: {0}")]
    Rsa(String),
    #[error("X9.31: {0}")]
    X931(&'static str),
    #[error("cannot parse key: {0}")]
    KeyParse(String),
}

impl From<rsa::Error> for CryptoError {
    fn from(e: rsa::Error) -> Self {
        CryptoError::Rsa(e.to_string())
    }
}

/// Salt's authenticated symmetric cipher.
#[derive(Clone)]
pub struct Crypticle {
    aes_key: [u8; AES_KEY_LEN],
    hmac_key: [u8; HMAC_KEY_LEN],
}

impl std::fmt::Debug for Crypticle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Crypticle(..)")
    }
}

impl Crypticle {
    /// From the base64 key string the master hands out (`aes`, `session`).
    pub fn from_key_string(key: &[u8]) -> Result<Self, CryptoError> {
        let trimmed: Vec<u8> = key
            .iter()
            .copied()
            .filter(|b| !b.is_ascii_whitespace())
            .collect();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&trimmed)
            .map_err(|e| CryptoError::BadKeyString(e.to_string()))?;
        if raw.len() != AES_KEY_LEN + HMAC_KEY_LEN {
            return Err(CryptoError::BadKeyString(format!(
                "{} bytes, expected {}",
                raw.len(),
                AES_KEY_LEN + HMAC_KEY_LEN
            )));
        }
        let mut aes_key = [0u8; AES_KEY_LEN];
        let mut hmac_key = [0u8; HMAC_KEY_LEN];
        aes_key.copy_from_slice(&raw[..AES_KEY_LEN]);
        hmac_key.copy_from_slice(&raw[AES_KEY_LEN..]);
        Ok(Crypticle { aes_key, hmac_key })
    }

    /// A fresh random key string, as `Crypticle.generate_key_string` makes one.
    pub fn generate_key_string() -> String {
        let mut raw = [0u8; AES_KEY_LEN + HMAC_KEY_LEN];
        OsRng.fill_bytes(&mut raw);
        base64::engine::general_purpose::STANDARD.encode(raw)
    }

    /// `Crypticle.encrypt` with a random IV.
    pub fn encrypt(&self, data: &[u8]) -> Vec<u8> {
        let mut iv = [0u8; BLOCK];
        OsRng.fill_bytes(&mut iv);
        self.encrypt_with_iv(data, &iv)
    }

    /// `Crypticle.encrypt` with a given IV (tests compare against Salt's output).
    pub fn encrypt_with_iv(&self, data: &[u8], iv: &[u8; BLOCK]) -> Vec<u8> {
        let ct = Aes192CbcEnc::new(&self.aes_key.into(), iv.into())
            .encrypt_padded_vec_mut::<Pkcs7>(data);
        let mut out = Vec::with_capacity(BLOCK + ct.len() + SIG_SIZE);
        out.extend_from_slice(iv);
        out.extend_from_slice(&ct);
        let mut mac = self.mac();
        mac.update(&out);
        out.extend_from_slice(&mac.finalize().into_bytes());
        out
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length; 32 bytes is always accepted.
        <HmacSha256 as Mac>::new_from_slice(&self.hmac_key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"))
    }

    /// `Crypticle.decrypt`: check the HMAC (constant time), then decrypt.
    pub fn decrypt(&self, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        if data.len() < BLOCK + SIG_SIZE {
            return Err(CryptoError::Truncated);
        }
        let (body, sig) = data.split_at(data.len() - SIG_SIZE);
        let mut mac = self.mac();
        mac.update(body);
        mac.verify_slice(sig)
            .map_err(|_| CryptoError::HmacMismatch)?;
        let (iv, ct) = body.split_at(BLOCK);
        if ct.is_empty() || ct.len() % BLOCK != 0 {
            return Err(CryptoError::Truncated);
        }
        let mut ivb = [0u8; BLOCK];
        ivb.copy_from_slice(iv);
        Aes192CbcDec::new(&self.aes_key.into(), &ivb.into())
            .decrypt_padded_vec_mut::<Pkcs7>(ct)
            .map_err(|_| CryptoError::BadPadding)
    }

    /// `Crypticle.dumps`: `pickle::` + nonce + msgpack, encrypted.
    pub fn dumps(&self, value: &rmpv::Value, nonce: Option<&str>) -> Vec<u8> {
        self.encrypt(&Self::plain(value, nonce))
    }

    /// `dumps` with a fixed IV, for byte-for-byte comparison with Salt.
    pub fn dumps_with_iv(
        &self,
        value: &rmpv::Value,
        nonce: Option<&str>,
        iv: &[u8; 16],
    ) -> Vec<u8> {
        self.encrypt_with_iv(&Self::plain(value, nonce), iv)
    }

    fn plain(value: &rmpv::Value, nonce: Option<&str>) -> Vec<u8> {
        let mut plain = PICKLE_PAD.to_vec();
        if let Some(n) = nonce {
            plain.extend_from_slice(n.as_bytes());
        }
        plain.extend_from_slice(&super::wire::pack(value));
        plain
    }

    /// `Crypticle.loads`: decrypt, check the marker and the nonce, decode msgpack.
    pub fn loads(&self, data: &[u8], nonce: Option<&str>) -> Result<rmpv::Value, CryptoError> {
        let plain = self.decrypt(data)?;
        let Some(mut rest) = plain.strip_prefix(PICKLE_PAD) else {
            return Err(CryptoError::NoPicklePad);
        };
        if let Some(n) = nonce {
            if rest.len() < 32 || &rest[..32] != n.as_bytes() {
                return Err(CryptoError::NonceMismatch);
            }
            rest = &rest[32..];
        }
        super::wire::unpack(rest).map_err(|e| CryptoError::Msgpack(e.to_string()))
    }
}

/// `encryption_algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncAlgo {
    OaepSha1,
    OaepSha224,
}

impl EncAlgo {
    pub fn parse(s: &str) -> Result<Self, CryptoError> {
        match s {
            "OAEP-SHA1" => Ok(EncAlgo::OaepSha1),
            "OAEP-SHA224" => Ok(EncAlgo::OaepSha224),
            other => Err(CryptoError::UnsupportedAlgorithm(other.into())),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            EncAlgo::OaepSha1 => "OAEP-SHA1",
            EncAlgo::OaepSha224 => "OAEP-SHA224",
        }
    }
    fn padding(self) -> Oaep {
        match self {
            EncAlgo::OaepSha1 => Oaep::new::<Sha1>(),
            EncAlgo::OaepSha224 => Oaep::new::<Sha224>(),
        }
    }
}

/// `signing_algorithm`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigAlgo {
    Pkcs1v15Sha1,
    Pkcs1v15Sha224,
}

impl SigAlgo {
    pub fn parse(s: &str) -> Result<Self, CryptoError> {
        match s {
            "PKCS1v15-SHA1" => Ok(SigAlgo::Pkcs1v15Sha1),
            "PKCS1v15-SHA224" => Ok(SigAlgo::Pkcs1v15Sha224),
            other => Err(CryptoError::UnsupportedAlgorithm(other.into())),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            SigAlgo::Pkcs1v15Sha1 => "PKCS1v15-SHA1",
            SigAlgo::Pkcs1v15Sha224 => "PKCS1v15-SHA224",
        }
    }
}

/// An RSA private key (the minion's).
pub struct PrivateKey {
    key: RsaPrivateKey,
}

impl std::fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PrivateKey({} bits)", self.key.n().bits())
    }
}

impl PrivateKey {
    /// PKCS#1 (`BEGIN RSA PRIVATE KEY`, what salt writes) or unencrypted PKCS#8.
    pub fn from_pem(pem: &str) -> Result<Self, CryptoError> {
        if pem.contains("ENCRYPTED") {
            return Err(CryptoError::KeyParse(
                "the private key is passphrase-protected; beacond needs an unencrypted key".into(),
            ));
        }
        let key = RsaPrivateKey::from_pkcs1_pem(pem)
            .or_else(|_| RsaPrivateKey::from_pkcs8_pem(pem))
            .map_err(|e| CryptoError::KeyParse(e.to_string()))?;
        Ok(PrivateKey { key })
    }

    /// A new key pair of `bits` bits, public exponent 65537 (as `salt.crypt.gen_keys`).
    pub fn generate(bits: usize) -> Result<Self, CryptoError> {
        let key = RsaPrivateKey::new(&mut OsRng, bits)?;
        Ok(PrivateKey { key })
    }

    /// PEM as salt writes `minion.pem` (TraditionalOpenSSL = PKCS#1).
    pub fn to_pem(&self) -> Result<String, CryptoError> {
        Ok(self
            .key
            .to_pkcs1_pem(LineEnding::LF)
            .map_err(|e| CryptoError::KeyParse(e.to_string()))?
            .to_string())
    }

    /// SubjectPublicKeyInfo PEM, as salt writes `minion.pub`.
    pub fn public_pem(&self) -> Result<String, CryptoError> {
        self.key
            .to_public_key()
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| CryptoError::KeyParse(e.to_string()))
    }

    /// RSA-OAEP decryption (blinded).
    pub fn decrypt(&self, algo: EncAlgo, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        Ok(self.key.decrypt_blinded(&mut OsRng, algo.padding(), data)?)
    }

    /// Salt's `PrivateKey.encrypt`: RSA private operation with X9.31 padding, as OpenSSL's
    /// `RSA_private_encrypt(.., RSA_X931_PADDING)`, including its choice of `min(s, n - s)`.
    pub fn x931_sign(&self, msg: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let k = self.key.size();
        let padded = x931_pad(msg, k)?;
        let m = BigUint::from_bytes_be(&padded);
        if &m >= self.key.n() {
            return Err(CryptoError::X931("padded message not below the modulus"));
        }
        // Blinded private operation, with the result checked against the public key.
        let s = rsa::hazmat::rsa_decrypt_and_check(&self.key, Some(&mut OsRng), &m)?;
        let alt = self.key.n() - &s;
        let res = if s > alt { alt } else { s };
        Ok(left_pad(&res.to_bytes_be(), k))
    }
}

/// An RSA public key (the master's, or ours for tests).
#[derive(Clone)]
pub struct PublicKey {
    key: RsaPublicKey,
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PublicKey({} bits)", self.key.n().bits())
    }
}

impl PublicKey {
    /// SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`) or PKCS#1 (`BEGIN RSA PUBLIC KEY`).
    pub fn from_pem(pem: &str) -> Result<Self, CryptoError> {
        let pem = pem.trim();
        let key = RsaPublicKey::from_public_key_pem(pem)
            .or_else(|_| RsaPublicKey::from_pkcs1_pem(pem))
            .map_err(|e| CryptoError::KeyParse(e.to_string()))?;
        Ok(PublicKey { key })
    }

    /// SubjectPublicKeyInfo PEM.
    pub fn to_pem(&self) -> Result<String, CryptoError> {
        self.key
            .to_public_key_pem(LineEnding::LF)
            .map_err(|e| CryptoError::KeyParse(e.to_string()))
    }

    /// RSA-OAEP encryption (the auth `token`).
    pub fn encrypt(&self, algo: EncAlgo, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        Ok(self.key.encrypt(&mut OsRng, algo.padding(), data)?)
    }

    /// PKCS#1 v1.5 signature check over `data`, as `PublicKey.verify`.
    pub fn verify(&self, algo: SigAlgo, data: &[u8], sig: &[u8]) -> bool {
        match algo {
            SigAlgo::Pkcs1v15Sha1 => self
                .key
                .verify(Pkcs1v15Sign::new::<Sha1>(), &Sha1::digest(data), sig)
                .is_ok(),
            SigAlgo::Pkcs1v15Sha224 => self
                .key
                .verify(Pkcs1v15Sign::new::<Sha224>(), &Sha224::digest(data), sig)
                .is_ok(),
        }
    }

    /// Salt's `PublicKey.decrypt`: recover what an X9.31 "encryption" with the private key
    /// carried (OpenSSL's `RSA_public_decrypt(.., RSA_X931_PADDING)`).
    pub fn x931_recover(&self, sig: &[u8]) -> Result<Vec<u8>, CryptoError> {
        let k = self.key.size();
        if sig.len() != k {
            return Err(CryptoError::X931("signature length is not the key size"));
        }
        let s = BigUint::from_bytes_be(sig);
        if &s >= self.key.n() {
            return Err(CryptoError::X931("signature not below the modulus"));
        }
        let mut r = rsa::hazmat::rsa_encrypt(&self.key, &s)?;
        let low = r.to_bytes_le().first().copied().unwrap_or(0);
        if low & 0x0F != 12 {
            r = self.key.n() - &r;
        }
        x931_unpad(&left_pad(&r.to_bytes_be(), k))
    }
}

/// `RSA_padding_add_X931`.
fn x931_pad(msg: &[u8], k: usize) -> Result<Vec<u8>, CryptoError> {
    let j = k
        .checked_sub(msg.len() + 2)
        .ok_or(CryptoError::X931("message too long for the key"))?;
    let mut out = Vec::with_capacity(k);
    if j == 0 {
        out.push(0x6A);
    } else {
        out.push(0x6B);
        out.extend(std::iter::repeat_n(0xBB, j - 1));
        out.push(0xBA);
    }
    out.extend_from_slice(msg);
    out.push(0xCC);
    Ok(out)
}

/// `RSA_padding_check_X931`, with OpenSSL's rules.
fn x931_unpad(block: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let flen = block.len();
    if flen < 2 {
        return Err(CryptoError::X931("block too short"));
    }
    let (start, len) = match block[0] {
        0x6A => (1, flen - 2),
        0x6B => {
            let j = flen.saturating_sub(3);
            let mut i = 0;
            while i < j {
                match block[1 + i] {
                    0xBA => break,
                    0xBB => i += 1,
                    _ => return Err(CryptoError::X931("invalid padding")),
                }
            }
            if i == 0 || i == j {
                return Err(CryptoError::X931("invalid padding"));
            }
            (2 + i, j - i)
        }
        _ => return Err(CryptoError::X931("invalid header")),
    };
    if block.get(start + len) != Some(&0xCC) {
        return Err(CryptoError::X931("invalid trailer"));
    }
    Ok(block[start..start + len].to_vec())
}

fn left_pad(b: &[u8], k: usize) -> Vec<u8> {
    if b.len() >= k {
        return b.to_vec();
    }
    let mut out = vec![0u8; k - b.len()];
    out.extend_from_slice(b);
    out
}

/// Salt's `clean_key`: strip, and join lines with `\n`.
pub fn clean_key(key: &str) -> String {
    key.trim().lines().collect::<Vec<_>>().join("\n")
}

/// `salt.utils.crypt.pem_finger(key=..., sum_type=hash_type)`: hash of the PEM body lines
/// (armor stripped, each line with its `\n`), as colon-separated hex pairs.
pub fn pem_finger(key: &str, hash_type: &str) -> Result<String, CryptoError> {
    let normalized = key.replace("\r\n", "\n");
    let lines: Vec<&str> = normalized
        .split('\n')
        .filter(|l| !l.trim().is_empty())
        .collect();
    let body: Vec<u8> = if lines.len() >= 2
        && lines[0].trim().starts_with("-----BEGIN")
        && lines[lines.len() - 1].trim().starts_with("-----END")
    {
        lines[1..lines.len() - 1]
            .iter()
            .flat_map(|l| l.bytes().chain(std::iter::once(b'\n')))
            .collect()
    } else {
        key.as_bytes().to_vec()
    };
    let digest: Vec<u8> = match hash_type.to_ascii_lowercase().as_str() {
        "sha1" => Sha1::digest(&body).to_vec(),
        "sha224" => Sha224::digest(&body).to_vec(),
        "sha256" => Sha256::digest(&body).to_vec(),
        "sha384" => Sha384::digest(&body).to_vec(),
        "sha512" => Sha512::digest(&body).to_vec(),
        other => return Err(CryptoError::UnsupportedHash(other.into())),
    };
    Ok(digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":"))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `hashlib.sha256(data).hexdigest()` as bytes.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// `uuid.uuid4().hex`: 32 lower-case hex characters.
pub fn uuid4_hex() -> String {
    let mut b = [0u8; 16];
    OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0F) | 0x40;
    b[8] = (b[8] & 0x3F) | 0x80;
    hex(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypticle_round_trip_and_tamper() {
        let c =
            Crypticle::from_key_string(Crypticle::generate_key_string().as_bytes()).expect("key");
        for len in [0usize, 1, 15, 16, 17, 1000] {
            let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
            let enc = c.encrypt(&data);
            assert_eq!(c.decrypt(&enc).expect("dec"), data);
            let mut bad = enc.clone();
            bad[20] ^= 1;
            assert!(matches!(c.decrypt(&bad), Err(CryptoError::HmacMismatch)));
        }
        assert!(matches!(
            c.decrypt(b"bad load"),
            Err(CryptoError::Truncated)
        ));
        assert!(Crypticle::from_key_string(b"c2hvcnQ=").is_err());
    }

    #[test]
    fn x931_pad_round_trip() {
        for len in [1usize, 4, 64, 250] {
            let msg: Vec<u8> = (0..len).map(|i| (i * 7) as u8).collect();
            let p = x931_pad(&msg, 256).expect("pad");
            assert_eq!(p.len(), 256);
            assert_eq!(x931_unpad(&p).expect("unpad"), msg);
        }
        assert!(x931_unpad(&[0x6B, 0xBB, 0x00, 0xCC]).is_err());
        assert!(x931_pad(&[0u8; 255], 256).is_err());
    }

    #[test]
    fn finger_strips_armor() {
        let pem = "-----BEGIN PUBLIC KEY-----\nAAAA\nBBBB\n-----END PUBLIC KEY-----\n";
        let f = pem_finger(pem, "sha256").expect("finger");
        assert_eq!(f, {
            let d = Sha256::digest(b"AAAA\nBBBB\n");
            d.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        });
        assert!(pem_finger(pem, "md5").is_err());
    }

    #[test]
    fn uuid_shape() {
        let u = uuid4_hex();
        assert_eq!(u.len(), 32);
        assert_eq!(&u[12..13], "4");
    }
}
