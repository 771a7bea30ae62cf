//! disk-full: a small tmpfs, mounted where the scenario says, filled with one file.

use std::path::{Path, PathBuf};

/// The largest tmpfs a disk-full fault fills (it lives in memory).
const MAX_FILL_BYTES: u64 = 1 << 30;

/// The size of the tmpfs mounted exactly at `path`, which must have a `size=` of at most 1 GiB.
pub fn tmpfs_size(path: &Path) -> Result<u64, String> {
    let real = path
        .canonicalize()
        .map_err(|e| format!("fault.path {}: {e}", path.display()))?;
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| format!("reading /proc/self/mountinfo: {e}"))?;
    // The last mount at a path is the visible one.
    let mount = info
        .lines()
        .filter_map(parse_mountinfo)
        .rfind(|m| Path::new(&m.0) == real)
        .ok_or_else(|| {
            format!(
                "fault.path {}: not a mount point; disk-full fills only a tmpfs mounted there (mount -t tmpfs -o size=16m tmpfs PATH)",
                path.display()
            )
        })?;
    if mount.1 != "tmpfs" {
        return Err(format!(
            "fault.path {}: a {} file system; disk-full fills only a tmpfs",
            path.display(),
            mount.1
        ));
    }
    let size = mount
        .2
        .split(',')
        .find_map(|o| o.strip_prefix("size="))
        .and_then(parse_size)
        .ok_or_else(|| {
            format!(
                "fault.path {}: the tmpfs has no size= option",
                path.display()
            )
        })?;
    if size > MAX_FILL_BYTES {
        return Err(format!(
            "fault.path {}: the tmpfs is {size} bytes; disk-full fills at most 1 GiB",
            path.display()
        ));
    }
    Ok(size)
}

/// (mount point, file system type, super options) of one `/proc/self/mountinfo` line.
pub(super) fn parse_mountinfo(line: &str) -> Option<(String, String, String)> {
    let (left, right) = line.split_once(" - ")?;
    let point = left.split(' ').nth(4)?;
    let mut r = right.split(' ');
    let fstype = r.next()?;
    let _source = r.next()?;
    let opts = r.next().unwrap_or("");
    // Spaces and such are written as octal escapes.
    let mut out = String::new();
    let b = point.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Ok(c) = u8::from_str_radix(&point[i + 1..i + 4], 8) {
                out.push(c as char);
                i += 4;
                continue;
            }
        }
        out.push(b[i] as char);
        i += 1;
    }
    Some((out, fstype.to_string(), opts.to_string()))
}

/// `4096k`, `16m`, `1g` or bytes.
pub(super) fn parse_size(s: &str) -> Option<u64> {
    let (num, mul) = match s.chars().last()? {
        'k' | 'K' => (&s[..s.len() - 1], 1 << 10),
        'm' | 'M' => (&s[..s.len() - 1], 1 << 20),
        'g' | 'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mul)
}

/// Fill the file system at `dir` with one file until it is full; returns the file.
pub(super) fn fill(dir: &Path, limit: u64) -> Result<PathBuf, String> {
    use std::io::Write;
    let file = dir.join(format!(".tandem-drill-fill-{}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .open(&file)
        .map_err(|e| format!("disk-full: creating {}: {e}", file.display()))?;
    let mut written = 0u64;
    // Large chunks, then small ones for the rest; bounded by the file system's size.
    for chunk in [1usize << 20, 4096, 512] {
        let buf = vec![0u8; chunk];
        while written <= limit {
            match f.write(&buf) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => {
                    let _ = std::fs::remove_file(&file);
                    return Err(format!("disk-full: writing {}: {e}", file.display()));
                }
            }
        }
    }
    let _ = f.sync_all();
    Ok(file)
}
