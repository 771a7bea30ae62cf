//! The few operating-system calls the PostgreSQL manager needs: the OS user PostgreSQL runs
//! as, signals, and starting the postmaster so that it shuts down when the agent dies. (The
//! clock shared with the watchdog process is `tandem_core::clock::boottime_ns`.)

use std::io;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::OnceLock;

/// An entry of /etc/passwd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OsUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: PathBuf,
}

/// Look `name` up in /etc/passwd.
pub fn lookup_user(name: &str) -> Result<OsUser, String> {
    let text = std::fs::read_to_string("/etc/passwd")
        .map_err(|e| format!("cannot read /etc/passwd: {e}"))?;
    parse_passwd(&text, name).ok_or_else(|| format!("there is no OS user {name:?}"))
}

fn parse_passwd(text: &str, name: &str) -> Option<OsUser> {
    text.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() < 7 || f[0] != name {
            return None;
        }
        Some(OsUser {
            name: f[0].to_string(),
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: PathBuf::from(f[5]),
        })
    })
}

/// The effective user id of this process (the owner of /proc/self).
pub fn euid() -> Option<u32> {
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Send `sig` to a process (`pid > 0`) or a process group (`pid < 0`).
#[allow(unsafe_code)]
pub fn kill(pid: i32, sig: i32) -> io::Result<()> {
    // SAFETY: kill(2) takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::kill(pid, sig) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// True while a process with this pid exists (it may be a zombie).
pub fn alive(pid: i32) -> bool {
    kill(pid, 0).is_ok()
}

type SpawnJob = (Command, mpsc::Sender<io::Result<Child>>);

/// Start `cmd` so that it receives `death_signal` when this process dies, in a process group of
/// its own (so that a terminal's Ctrl-C does not reach it, and the group can be signalled).
///
/// The parent-death signal fires when the *thread* that forked the child ends, so every such
/// child is forked by one thread that lives as long as the process.
pub fn spawn_tied(mut cmd: Command, death_signal: i32) -> io::Result<Child> {
    static SPAWNER: OnceLock<std::sync::Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let parent = std::process::id() as i32;
    set_death_signal(&mut cmd, death_signal, parent);
    cmd.process_group(0);
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        let _ = std::thread::Builder::new()
            .name("tandem-spawner".into())
            .spawn(move || {
                while let Ok((mut cmd, reply)) = rx.recv() {
                    let _ = reply.send(cmd.spawn());
                }
            });
        std::sync::Mutex::new(tx)
    });
    let (reply, result) = mpsc::channel();
    spawner
        .lock()
        .map_err(|_| io::Error::other("spawner lock poisoned"))?
        .send((cmd, reply))
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    result
        .recv()
        .map_err(|_| io::Error::other("the spawner thread is gone"))?
}

#[allow(unsafe_code)]
fn set_death_signal(cmd: &mut Command, sig: i32, parent: i32) {
    // SAFETY: the closure runs in the forked child before exec and only makes two
    // async-signal-safe system calls (prctl, getppid). It runs after the uid/gid change, which
    // would otherwise clear the setting.
    unsafe {
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The parent died before the setting took effect: do not outlive it.
            if libc::getppid() != parent {
                return Err(io::Error::other(
                    "the agent exited while starting PostgreSQL",
                ));
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_are_parsed() {
        let text = "root:x:0:0:root:/root:/bin/bash\npostgres:x:101:104:PostgreSQL:/var/lib/postgresql:/bin/bash\nbad:line\n";
        let u = parse_passwd(text, "postgres").unwrap_or_else(|| panic!("not found"));
        assert_eq!((u.uid, u.gid), (101, 104));
        assert_eq!(u.home, PathBuf::from("/var/lib/postgresql"));
        assert!(parse_passwd(text, "nobody").is_none());
        assert!(parse_passwd(text, "bad").is_none());
    }
}
