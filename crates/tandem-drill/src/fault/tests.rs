use super::disk::{parse_mountinfo, parse_size, tmpfs_size};
use super::*;

#[test]
fn mount_lines_and_sizes() {
    let line =
        "36 25 0:32 / /tmp/a\\040b rw,relatime shared:1 - tmpfs tmpfs rw,size=4096k,mode=755";
    assert_eq!(
        parse_mountinfo(line),
        Some((
            "/tmp/a b".into(),
            "tmpfs".into(),
            "rw,size=4096k,mode=755".into()
        ))
    );
    assert_eq!(parse_size("4096k"), Some(4 << 20));
    assert_eq!(parse_size("1g"), Some(1 << 30));
    assert_eq!(parse_size("12"), Some(12));
    assert_eq!(parse_size("x"), None);
}

#[test]
fn disk_full_refuses_what_is_not_a_small_tmpfs() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let e = tmpfs_size(dir.path()).err().unwrap_or_default();
    assert!(e.contains("not a mount point"), "{e}");
    let e = tmpfs_size(Path::new("/no/such/dir"))
        .err()
        .unwrap_or_default();
    assert!(e.contains("/no/such/dir"), "{e}");
    let e = tmpfs_size(Path::new("/proc")).err().unwrap_or_default();
    assert!(e.contains("proc file system"), "{e}");
}

#[test]
fn pid_files_are_checked() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let f = dir.path().join("pid");
    std::fs::write(&f, "abc\n").unwrap_or_else(|e| panic!("{e}"));
    assert!(read_pid_file(&f).is_err_and(|e| e.contains("not a pid")));
    std::fs::write(&f, format!("{}\n/data\n", std::process::id()))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(read_pid_file(&f).is_err_and(|e| e.contains("drill itself")));
    std::fs::write(&f, "999999999\n").unwrap_or_else(|e| panic!("{e}"));
    assert!(read_pid_file(&f).is_err_and(|e| e.contains("does not exist")));
    assert!(read_pid_file(&dir.path().join("none")).is_err());
}
