//! Minion key pairs for fleet runs, generated once by `openssl genrsa` (C, both cores) and
//! cached under `~/.cache/beacond/fleet-keys` (`BEACOND_FLEET_KEYS` overrides): 2,000 RSA
//! 2048 keys take about a minute to make, and nothing afterwards. Shared by `tests/fleet.rs`
//! and `benches/fleet`.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BEACOND_FLEET_KEYS") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".cache/beacond/fleet-keys")
}

fn key_path(n: usize) -> PathBuf {
    cache_dir().join(format!("key-{n:05}.pem"))
}

/// Make sure keys 0..count exist in the cache (missing ones made in parallel).
pub fn ensure(count: usize) -> Result<(), String> {
    let dir = cache_dir();
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let missing: Vec<PathBuf> = (0..count).map(key_path).filter(|p| !p.exists()).collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!(
        "fleet keys: generating {} RSA 2048 keys in {}",
        missing.len(),
        dir.display()
    );
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunks: Vec<Vec<PathBuf>> = (0..workers)
        .map(|w| missing.iter().skip(w).step_by(workers).cloned().collect())
        .collect();
    let handles: Vec<_> = chunks
        .into_iter()
        .map(|chunk| {
            std::thread::spawn(move || -> Result<(), String> {
                for p in chunk {
                    let tmp = p.with_extension("tmp");
                    let out = Command::new("openssl")
                        .args(["genrsa", "-traditional", "-out"])
                        .arg(&tmp)
                        .arg("2048")
                        .output()
                        .map_err(|e| format!("openssl: {e}"))?;
                    if !out.status.success() {
                        return Err(format!(
                            "openssl genrsa: {}",
                            String::from_utf8_lossy(&out.stderr)
                        ));
                    }
                    std::fs::rename(&tmp, &p).map_err(|e| format!("{}: {e}", p.display()))?;
                }
                Ok(())
            })
        })
        .collect();
    for h in handles {
        h.join()
            .map_err(|_| "key generation thread panicked".to_string())??;
    }
    Ok(())
}

/// Install cached key `n` as `pki_dir/minion.pem` (0400; beacond writes minion.pub).
pub fn install(n: usize, pki_dir: &Path) -> Result<(), String> {
    std::fs::create_dir_all(pki_dir).map_err(|e| format!("{}: {e}", pki_dir.display()))?;
    let _ = std::fs::set_permissions(pki_dir, std::fs::Permissions::from_mode(0o700));
    let dst = pki_dir.join("minion.pem");
    if dst.exists() {
        return Ok(());
    }
    std::fs::copy(key_path(n), &dst).map_err(|e| format!("{}: {e}", dst.display()))?;
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(0o400))
        .map_err(|e| format!("{}: {e}", dst.display()))
}
