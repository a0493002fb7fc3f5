//! Messages from the bus (any peer on the system bus can send us signals): the framing and
//! the whole header/body decoder (`sources::dbus::decode`), message after message as the
//! connection reads them, never a panic, a hang or unbounded memory. The seed corpus holds
//! real messages captured from the system bus (see fuzz/README.md).
#![no_main]
use beacond::sources::dbus;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut off = 0;
    while let Ok(Some((m, len))) = dbus::decode(&data[off..]) {
        assert!(len >= 16 && off + len <= data.len());
        let _ = m.body.first().and_then(dbus::Val::as_str);
        off += len;
    }
});
