//! Files on disk that the clean-up jobs age out, by modification time.
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use chrono::{DateTime, Utc};

#[derive(Debug, Clone)]
pub struct AgedFile {
    pub path: PathBuf,
    pub size: u64,
}

/// Regular files under `dir` (recursively) last modified before `cutoff` and accepted by
/// `keep`. A missing directory has no files. Symbolic links are never followed or deleted.
pub async fn older_than(
    dir: PathBuf,
    cutoff: DateTime<Utc>,
    keep: fn(&Path) -> bool,
) -> std::io::Result<Vec<AgedFile>> {
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        let cutoff: SystemTime = cutoff.into();
        let mut pending = vec![dir];
        while let Some(dir) = pending.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(entries) => entries,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let meta = entry.path().symlink_metadata()?;
                if meta.is_dir() {
                    pending.push(entry.path());
                } else if meta.is_file() && meta.modified()? < cutoff && keep(&entry.path()) {
                    out.push(AgedFile {
                        path: entry.path(),
                        size: meta.len(),
                    });
                }
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    })
    .await
    .map_err(std::io::Error::other)?
}

/// Deletes `files`; returns (files deleted, bytes freed). A file already gone counts as done.
pub async fn remove(files: Vec<AgedFile>) -> std::io::Result<(u64, u64)> {
    let (mut n, mut bytes) = (0, 0);
    for f in files {
        match tokio::fs::remove_file(&f.path).await {
            Ok(()) => {
                n += 1;
                bytes += f.size;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("{}: {e}", f.path.display()),
                ));
            }
        }
    }
    Ok((n, bytes))
}

pub fn any_file(_: &Path) -> bool {
    true
}

pub fn log_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "log")
}

/// Usage of the file system holding `path`: (used bytes, total bytes).
pub fn disk_usage(path: &Path) -> std::io::Result<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(path).map_err(std::io::Error::from)?;
    let block = stat.fragment_size() as u64;
    let total = stat.blocks() as u64 * block;
    let available = stat.blocks_available() as u64 * block;
    Ok((total.saturating_sub(available), total))
}

/// Resident memory of this process in bytes (Linux), if known.
pub fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
