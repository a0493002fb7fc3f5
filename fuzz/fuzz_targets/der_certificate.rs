//! A certificate file as the `cert_info` beacon reads it (PEM or DER, any bytes): parsed and
//! turned into the fields its event reports (`beacons::cert_info::report`), never a panic. The
//! seed corpus holds real certificates from /etc/ssl/certs (see fuzz/README.md).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = std::path::Path::new("/etc/ssl/certs/fuzz.pem");
    if let Ok(m) = beacond::beacons::cert_info::report(data, path, 1_700_000_000) {
        assert!(m.contains_key("notAfter") && m.contains_key("serial_number"));
    }
});
