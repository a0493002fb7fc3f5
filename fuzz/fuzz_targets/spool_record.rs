//! Spool records and the ack file as read back after a crash: any bytes decode to a record,
//! "need more" or an error, never a panic.
#![no_main]
use beacond::spool::store;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut off = 0;
    while let Ok(Some((_, size))) = store::decode(&data[off..]) {
        off += size;
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = store::parse_ack(text);
    }
});
