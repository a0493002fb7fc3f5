//! utmp records (`/var/log/wtmp`, `/var/log/btmp`, `/var/run/utmp`): the platform's
//! `libc::utmpx` layout, read field by field at the offsets the compiler gives that struct, so
//! no Python-style format string is hard-coded.
//!
//! Salt's event keys come from `struct.unpack("hi32s4s32s256shhiii4i20x")` zipped with ten
//! names, which shifts the last four: Salt's `exit_status` is `ut_exit.e_termination`,
//! `session` is `ut_exit.e_exit`, `time` is `ut_session` and `addr` is `ut_tv.tv_sec`.
//! [`Record::salt_data`] keeps those keys with exactly Salt's values and adds the fields under
//! their own names.

use serde_json::{json, Map, Value};
use std::io;
use std::mem::{offset_of, size_of};
use std::path::Path;

/// The size of one record on this platform (384 on Linux/glibc).
pub const RECORD_SIZE: usize = size_of::<libc::utmpx>();

pub const USER_PROCESS: i16 = 7;
pub const DEAD_PROCESS: i16 = 8;

/// The size of a field, from its type, without building a value.
const fn field_size<T>(_: fn(&libc::utmpx) -> &T) -> usize {
    size_of::<T>()
}

const OFF_TYPE: usize = offset_of!(libc::utmpx, ut_type);
const OFF_PID: usize = offset_of!(libc::utmpx, ut_pid);
const OFF_LINE: usize = offset_of!(libc::utmpx, ut_line);
const OFF_ID: usize = offset_of!(libc::utmpx, ut_id);
const OFF_USER: usize = offset_of!(libc::utmpx, ut_user);
const OFF_HOST: usize = offset_of!(libc::utmpx, ut_host);
const OFF_EXIT: usize = offset_of!(libc::utmpx, ut_exit);
const OFF_SESSION: usize = offset_of!(libc::utmpx, ut_session);
const OFF_TV: usize = offset_of!(libc::utmpx, ut_tv);
const OFF_ADDR: usize = offset_of!(libc::utmpx, ut_addr_v6);
const LEN_LINE: usize = field_size(|u| &u.ut_line);
const LEN_ID: usize = field_size(|u| &u.ut_id);
const LEN_USER: usize = field_size(|u| &u.ut_user);
const LEN_HOST: usize = field_size(|u| &u.ut_host);
const LEN_SESSION: usize = field_size(|u| &u.ut_session);
const LEN_TV_FIELD: usize = field_size(|u| &u.ut_tv) / 2;

/// One utmp/wtmp/btmp record.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub ut_type: i16,
    pub pid: i32,
    pub line: String,
    pub id: String,
    pub user: String,
    pub host: String,
    pub e_termination: i16,
    pub e_exit: i16,
    pub session: i64,
    pub tv_sec: i64,
    pub tv_usec: i64,
    pub addr: [u8; 16],
}

fn int(buf: &[u8], off: usize, len: usize) -> i64 {
    let b = &buf[off..off + len];
    match len {
        2 => i16::from_ne_bytes([b[0], b[1]]) as i64,
        4 => i32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as i64,
        _ => {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[..8]);
            i64::from_ne_bytes(a)
        }
    }
}

/// Python's `bytes.decode().strip("\x00")`, lossy rather than raising on bad UTF-8.
fn text(buf: &[u8], off: usize, len: usize) -> String {
    let b = &buf[off..off + len];
    let start = b.iter().position(|c| *c != 0).unwrap_or(b.len());
    let end = b.iter().rposition(|c| *c != 0).map_or(start, |e| e + 1);
    String::from_utf8_lossy(&b[start..end]).into_owned()
}

impl Record {
    /// Parse one record of `RECORD_SIZE` bytes.
    pub fn parse(buf: &[u8]) -> Option<Record> {
        if buf.len() < RECORD_SIZE {
            return None;
        }
        let mut addr = [0u8; 16];
        addr.copy_from_slice(&buf[OFF_ADDR..OFF_ADDR + 16]);
        Some(Record {
            ut_type: int(buf, OFF_TYPE, 2) as i16,
            pid: int(buf, OFF_PID, 4) as i32,
            line: text(buf, OFF_LINE, LEN_LINE),
            id: text(buf, OFF_ID, LEN_ID),
            user: text(buf, OFF_USER, LEN_USER),
            host: text(buf, OFF_HOST, LEN_HOST),
            e_termination: int(buf, OFF_EXIT, 2) as i16,
            e_exit: int(buf, OFF_EXIT + 2, 2) as i16,
            session: int(buf, OFF_SESSION, LEN_SESSION),
            tv_sec: int(buf, OFF_TV, LEN_TV_FIELD),
            tv_usec: int(buf, OFF_TV + LEN_TV_FIELD, LEN_TV_FIELD),
            addr,
        })
    }

    /// The remote address: IPv4 when only the first word is set, else IPv6; None when unset.
    pub fn ip(&self) -> Option<String> {
        if self.addr == [0u8; 16] {
            return None;
        }
        if self.addr[4..] == [0u8; 12] {
            let a = &self.addr;
            return Some(std::net::Ipv4Addr::new(a[0], a[1], a[2], a[3]).to_string());
        }
        Some(std::net::Ipv6Addr::from(self.addr).to_string())
    }

    /// The event data: Salt's ten keys with Salt's values, then beacond's own fields.
    pub fn salt_data(&self) -> Map<String, Value> {
        let mut d = Map::new();
        d.insert("type".into(), json!(self.ut_type));
        d.insert("PID".into(), json!(self.pid));
        d.insert("line".into(), json!(self.line));
        d.insert("inittab".into(), json!(self.id));
        d.insert("user".into(), json!(self.user));
        d.insert("hostname".into(), json!(self.host));
        d.insert("exit_status".into(), json!(self.e_termination));
        d.insert("session".into(), json!(self.e_exit));
        d.insert("time".into(), json!(self.session));
        d.insert("addr".into(), json!(self.tv_sec));
        d.insert("ut_session".into(), json!(self.session));
        d.insert("tv_sec".into(), json!(self.tv_sec));
        d.insert("tv_usec".into(), json!(self.tv_usec));
        d.insert("timestamp".into(), json!(rfc3339_utc(self.tv_sec)));
        d.insert("ip".into(), self.ip().map_or(Value::Null, Value::from));
        d
    }
}

/// Every complete record in a file (for `utmp` readers such as `selinux`'s `who`).
pub fn read_all(path: &Path) -> io::Result<Vec<Record>> {
    let bytes = std::fs::read(path)?;
    Ok(bytes
        .chunks_exact(RECORD_SIZE)
        .filter_map(Record::parse)
        .collect())
}

/// `YYYY-MM-DDTHH:MM:SSZ` for a Unix time.
pub fn rfc3339_utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = crate::calendar::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        sod / 3600,
        sod / 60 % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
    fn layout_matches_glibc() {
        assert_eq!(RECORD_SIZE, 384);
        assert_eq!(OFF_PID, 4);
        assert_eq!(OFF_LINE, 8);
        assert_eq!(OFF_USER, 44);
        assert_eq!(OFF_HOST, 76);
        assert_eq!(OFF_EXIT, 332);
        assert_eq!(OFF_SESSION, 336);
        assert_eq!(OFF_TV, 340);
        assert_eq!(OFF_ADDR, 348);
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_utc(1_603_924_132), "2020-10-28T22:28:52Z");
    }
}
