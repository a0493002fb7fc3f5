//! utmp/wtmp/btmp records as the `utmp`, `wtmp` and `btmp` beacons read them (any bytes, split
//! into `RECORD_SIZE` chunks, each parsed and turned into event data): never a panic. The seed
//! corpus holds real records written by `utmpdump -r` (see fuzz/README.md).
#![no_main]
use beacond::beacons::utmp::{Record, RECORD_SIZE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // A short or torn tail is not a record.
    let _ = Record::parse(data);
    for raw in data.chunks_exact(RECORD_SIZE) {
        if let Some(rec) = Record::parse(raw) {
            let d = rec.salt_data();
            assert_eq!(d["tv_sec"], rec.tv_sec);
            let _ = rec.ip();
        }
    }
});
