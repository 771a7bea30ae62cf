//! `tandem demo`: a whole HA setup on loopback in one command. Three cluster nodes (embedded
//! Raft) each managing an active-passive demo service, a load balancer with an active-active
//! pool and an active-passive frontend that follows the lease, then a kill-primary drill under
//! sequenced writes with its report (time without service, lost writes, two primaries). Killed processes are restarted, as a service manager would. Everything it
//! started is stopped, and its directory removed, on Ctrl-C or after `--duration`.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tandem_core::TaskHandle;
use tokio::process::{Child, Command};
use tokio::sync::Mutex;

use crate::drill_cmd::{self, Verdict};

/// A child process restarted when it dies, until stopped.
struct Supervised {
    name: String,
    stopping: Arc<AtomicBool>,
    child: Arc<Mutex<Option<Child>>>,
    _task: TaskHandle,
}

impl Supervised {
    fn start(name: &str, exe: &Path, args: Vec<String>, log: PathBuf) -> Supervised {
        let stopping = Arc::new(AtomicBool::new(false));
        let child: Arc<Mutex<Option<Child>>> = Arc::new(Mutex::new(None));
        let (st, ch, exe, n) = (
            stopping.clone(),
            child.clone(),
            exe.to_path_buf(),
            name.to_string(),
        );
        let task = TaskHandle::spawn(async move {
            // Bounded: a process that keeps dying is restarted at most 100 times.
            for _ in 0..100u32 {
                if st.load(Ordering::Relaxed) {
                    return;
                }
                let out = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log);
                let err = out.as_ref().ok().and_then(|f| f.try_clone().ok());
                let mut cmd = Command::new(&exe);
                cmd.args(&args)
                    .kill_on_drop(true)
                    .stdin(std::process::Stdio::null());
                die_with_parent(&mut cmd);
                if let (Ok(o), Some(e)) = (out, err) {
                    cmd.stdout(o).stderr(e);
                }
                match cmd.spawn() {
                    Ok(c) => *ch.lock().await = Some(c),
                    Err(e) => {
                        eprintln!("demo: cannot start {n}: {e}");
                        return;
                    }
                }
                // Wait for it to exit without holding the lock for long.
                loop {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    let mut guard = ch.lock().await;
                    let Some(c) = guard.as_mut() else { return };
                    if let Ok(Some(status)) = c.try_wait() {
                        *guard = None;
                        if !st.load(Ordering::Relaxed) {
                            eprintln!("\ndemo: {n} exited ({status}); restarting it in 1 s, as a service manager would");
                        }
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Supervised {
            name: name.to_string(),
            stopping,
            child,
            _task: task,
        }
    }

    async fn stop(&self) {
        self.stopping.store(true, Ordering::Relaxed);
        let mut guard = self.child.lock().await;
        if let Some(c) = guard.as_mut() {
            if let Some(pid) = c.id() {
                terminate(pid as i32);
                if tokio::time::timeout(Duration::from_secs(5), c.wait())
                    .await
                    .is_err()
                {
                    let _ = c.start_kill();
                    let _ = c.wait().await;
                }
            }
        }
        *guard = None;
    }
}

/// Children die with the demo, even when it is SIGKILLed.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    // SAFETY: only async-signal-safe calls (prctl) run between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

#[allow(unsafe_code)]
fn terminate(pid: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child.
    unsafe {
        libc::kill(pid, libc::SIGCONT);
        libc::kill(pid, libc::SIGTERM);
    }
}

struct Ports {
    peer: [u16; 3],
    admin: [u16; 3],
    svc: [u16; 3],
    web: [u16; 2],
    lb_admin: u16,
    lb_web: u16,
    lb_app: u16,
}

impl Ports {
    fn all(&self) -> Vec<u16> {
        let mut v = Vec::new();
        v.extend(self.peer);
        v.extend(self.admin);
        v.extend(self.svc);
        v.extend(self.web);
        v.extend([self.lb_admin, self.lb_web, self.lb_app]);
        v
    }

    fn pick() -> anyhow::Result<Ports> {
        // Held together until all are chosen, so no two are the same.
        let mut picker = tandem_core::ports::PortPicker::new();
        let mut held = Vec::new();
        let mut next = || -> anyhow::Result<u16> {
            let (port, l) = picker
                .pick()
                .ok_or_else(|| anyhow::anyhow!("no free port on 127.0.0.1 below 32000"))?;
            held.push(l);
            Ok(port)
        };
        Ok(Ports {
            peer: [next()?, next()?, next()?],
            admin: [next()?, next()?, next()?],
            svc: [next()?, next()?, next()?],
            web: [next()?, next()?],
            lb_admin: next()?,
            lb_web: next()?,
            lb_app: next()?,
        })
    }
}

/// `[admin]`, `[node]` and `[cluster]` of member `prefix{i+1}` of a three-node demo cluster.
fn member_sections(
    cluster: &str,
    prefix: &str,
    i: usize,
    admin: u16,
    peer: &[u16; 3],
    dir: &Path,
) -> String {
    let peers = (0..3)
        .map(|j| format!("{prefix}{} = \"127.0.0.1:{}\"", j + 1, peer[j]))
        .collect::<Vec<_>>()
        .join(", ");
    let d = dir.display();
    let n = i + 1;
    format!(
        r#"[admin]
listen = "127.0.0.1:{admin}"
token_file = "{d}/token"

[node]
name = "{prefix}{n}"
data_dir = "{d}/{prefix}{n}"

[cluster]
name = "{cluster}"
listen = "127.0.0.1:{me}"
peers = {{ {peers} }}
lease_ttl = "1s"
secret_file = "{d}/secret"
"#,
        me = peer[i]
    )
}

fn node_config(i: usize, p: &Ports, dir: &Path) -> String {
    let d = dir.display();
    let n = i + 1;
    format!(
        r#"# Cluster node n{n}: holds or follows the lease, manages service svc{n}.
{members}
[service]
kind = "command"
promote = "echo \"$(date +%T) n{n} promoted, fencing token $TANDEM_FENCING_TOKEN\" >> {d}/roles.log"
demote = "echo \"$(date +%T) n{n} demoted, fencing token $TANDEM_FENCING_TOKEN\" >> {d}/roles.log"

[service.health]
check = "http"
url = "http://127.0.0.1:{svc}/healthz"
interval = "200ms"
timeout = "300ms"
"#,
        members = member_sections("demo", "n", i, p.admin[i], &p.peer, dir),
        svc = p.svc[i],
    )
}

fn lb_config(p: &Ports) -> String {
    let app_servers: String = (0..3)
        .map(|i| {
            format!(
                "\n[[backend.server]]\nname = \"svc{}\"\naddress = \"127.0.0.1:{}\"\ncheck_address = \"127.0.0.1:{}\"\n",
                i + 1,
                p.svc[i],
                p.admin[i]
            )
        })
        .collect();
    format!(
        r#"# The load balancer: "web" spreads over two servers (active-active); "app" sends traffic
# only to the service on the node that holds the lease (its health check asks /primary).
[admin]
listen = "127.0.0.1:{lb_admin}"

[[frontend]]
name = "web"
listen = "127.0.0.1:{lb_web}"
backend = "web"
access_log = false

[[frontend]]
name = "app"
listen = "127.0.0.1:{lb_app}"
backend = "app"
access_log = false

[[backend]]
name = "web"
[backend.health]
check = "http"
path = "/healthz"
interval = "200ms"
fall = 2
rise = 2
[[backend.server]]
name = "web-a"
address = "127.0.0.1:{wa}"
[[backend.server]]
name = "web-b"
address = "127.0.0.1:{wb}"

[[backend]]
name = "app"
retries = 2
[backend.health]
check = "http"
path = "/primary"
interval = "100ms"
timeout = "200ms"
fall = 1
rise = 1
{app_servers}"#,
        lb_admin = p.lb_admin,
        lb_web = p.lb_web,
        lb_app = p.lb_app,
        wa = p.web[0],
        wb = p.web[1],
    )
}

fn scenario(p: &Ports, dir: &Path) -> String {
    let nodes = (0..3)
        .map(|i| format!("n{} = \"127.0.0.1:{}\"", i + 1, p.admin[i]))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        r#"name = "kill-primary"
description = "SIGKILL the primary's agent while clients write to the active-passive service"

[target]
http = "http://127.0.0.1:{app}/"

# Sequenced writes (POST /writes/N), read back after the run (GET /writes).
[workload]
kind = "writes"
concurrency = 8
rate = 400
duration = "10s"
timeout = "3s"

[fault]
kind = "sigkill"
at = "3s"
node = "primary"

[watch]
nodes = {{ {nodes} }}
token_file = "{d}/token"
observers = ["127.0.0.1:{lb_admin}"]
# The service names itself in x-served-by: which node's service acknowledged each write.
served_by = {{ svc1 = "n1", svc2 = "n2", svc3 = "n3" }}

[objectives]
rto = "5s"
rpo = 0
old_primary_acks = 0
"#,
        app = p.lb_app,
        lb_admin = p.lb_admin,
        d = dir.display()
    )
}

/// `--postgres`: a second three-node cluster, each node running PostgreSQL.
struct PgDemo {
    bin_dir: PathBuf,
    os_user: String,
    peer: [u16; 3],
    admin: [u16; 3],
    pg: [u16; 3],
    lb: u16,
}

impl PgDemo {
    /// Find PostgreSQL's server programs and the user to run them as, or say how to get them.
    fn find(taken: &Ports) -> anyhow::Result<PgDemo> {
        let bin_dir = find_pg_bin().ok_or_else(|| {
            anyhow::anyhow!(
                "--postgres needs PostgreSQL's server programs (postgres, initdb, pg_basebackup, \
                 pg_rewind, pg_controldata), found in neither /usr/lib/postgresql/*/bin nor \
                 `pg_config --bindir`. Install them, e.g. `sudo apt-get install postgresql` on \
                 Debian and Ubuntu or `sudo dnf install postgresql-server` on Fedora, then run \
                 `tandem demo --postgres` again"
            )
        })?;
        let euid = tandem_cluster::postgres::sys::euid().unwrap_or(0);
        let os_user = if euid == 0 {
            // PostgreSQL refuses to run as root: it runs as "postgres".
            tandem_cluster::postgres::sys::lookup_user("postgres").map_err(|e| {
                anyhow::anyhow!("{e}: --postgres as root runs PostgreSQL as the user postgres (the postgresql package creates it)")
            })?;
            "postgres".to_string()
        } else {
            let text = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
            text.lines()
                .find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() > 2 && f[2] == euid.to_string()).then(|| f[0].to_string())
                })
                .ok_or_else(|| anyhow::anyhow!("uid {euid} is not in /etc/passwd"))?
        };
        let taken = taken.all();
        let mut picker = tandem_core::ports::PortPicker::new();
        let mut held = Vec::new();
        let mut next = || -> anyhow::Result<u16> {
            loop {
                let (port, l) = picker
                    .pick()
                    .ok_or_else(|| anyhow::anyhow!("no free port on 127.0.0.1 below 32000"))?;
                held.push(l);
                if !taken.contains(&port) {
                    return Ok(port);
                }
            }
        };
        Ok(PgDemo {
            bin_dir,
            os_user,
            peer: [next()?, next()?, next()?],
            admin: [next()?, next()?, next()?],
            pg: [next()?, next()?, next()?],
            lb: next()?,
        })
    }

    fn node_config(&self, i: usize, dir: &Path) -> String {
        let d = dir.display();
        let n = i + 1;
        format!(
            r#"# PostgreSQL node pg{n}: runs PostgreSQL on port {pg}; the lease decides the primary.
{members}
[service]
kind = "postgres"
bin_dir = "{bin}"
data_dir = "{d}/pgdata{n}"
listen = "127.0.0.1:{pg}"
os_user = "{user}"
synchronous = "on"
parameters = {{ max_connections = "50", shared_buffers = "32MB" }}
"#,
            members = member_sections("demo-pg", "pg", i, self.admin[i], &self.peer, dir),
            pg = self.pg[i],
            bin = self.bin_dir.display(),
            user = self.os_user,
        )
    }

    /// The load balancer's TCP frontend that follows the PostgreSQL primary.
    fn lb_section(&self) -> String {
        let servers: String = (0..3)
            .map(|i| {
                format!(
                    "\n[[backend.server]]\nname = \"pg{}\"\naddress = \"127.0.0.1:{}\"\ncheck_address = \"127.0.0.1:{}\"\n",
                    i + 1,
                    self.pg[i],
                    self.admin[i]
                )
            })
            .collect();
        format!(
            r#"
# PostgreSQL clients connect here and reach the primary (its node's /primary answers 200).
[[frontend]]
name = "postgres"
listen = "127.0.0.1:{lb}"
mode = "tcp"
backend = "postgres"

[[backend]]
name = "postgres"
connect_timeout = "500ms"
[backend.health]
check = "http"
path = "/primary"
expect = "200"
interval = "100ms"
timeout = "200ms"
fall = 1
rise = 1
{servers}"#,
            lb = self.lb
        )
    }

    fn scenario(&self, dir: &Path) -> String {
        let nodes = (0..3)
            .map(|i| format!("pg{} = \"127.0.0.1:{}\"", i + 1, self.admin[i]))
            .collect::<Vec<_>>()
            .join(", ");
        format!(
            r#"name = "kill-postgres-primary"
description = "SIGKILL the tandem agent of the PostgreSQL primary while clients insert rows"

[target]
postgres = "host=127.0.0.1 port={lb} user={user} dbname=postgres"

[workload]
kind = "writes"
concurrency = 2
rate = 100
duration = "10s"
timeout = "3s"

[fault]
kind = "sigkill"
at = "3s"
node = "primary"

[watch]
nodes = {{ {nodes} }}
token_file = "{d}/token"

[objectives]
rto = "6s"
rpo = 0
"#,
            lb = self.lb,
            user = self.os_user,
            d = dir.display()
        )
    }
}

/// PostgreSQL's server programs: the newest /usr/lib/postgresql/N/bin, else `pg_config`'s.
fn find_pg_bin() -> Option<PathBuf> {
    let has_all = |d: &Path| {
        tandem_cluster::postgres::PROGRAMS
            .iter()
            .all(|p| d.join(p).is_file())
    };
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            Some((v, e.path().join("bin")))
        })
        .filter(|(_, d)| has_all(d))
        .collect();
    versions.sort();
    if let Some((_, d)) = versions.pop() {
        return Some(d);
    }
    let out = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()?;
    let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    (out.status.success() && has_all(&d)).then_some(d)
}

/// Run the demo; `Ok(true)` when its drills met their objectives.
pub async fn run(duration: Option<Duration>, keep: bool, postgres: bool) -> anyhow::Result<bool> {
    let ports = Ports::pick()?;
    let pg = if postgres {
        Some(PgDemo::find(&ports)?)
    } else {
        None
    };
    let exe = std::env::current_exe().context("finding the tandem binary")?;
    let dir = std::env::temp_dir().join(format!("tandem-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if pg.is_some() {
        // PostgreSQL runs as another user: it must reach its data directories.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("opening {}", dir.display()))?;
    }
    let result = run_in(&exe, &dir, duration, ports, pg.as_ref()).await;
    if keep {
        println!("kept {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    result
}

async fn run_in(
    exe: &Path,
    dir: &Path,
    duration: Option<Duration>,
    p: Ports,
    pg: Option<&PgDemo>,
) -> anyhow::Result<bool> {
    std::fs::write(
        dir.join("secret"),
        format!(
            "demo-secret-{}-{}\n",
            std::process::id(),
            tandem_core::clock::unix_millis()
        ),
    )?;
    std::fs::write(
        dir.join("token"),
        format!(
            "demo-token-{}-{}\n",
            tandem_core::clock::unix_millis(),
            std::process::id()
        ),
    )?;
    let mut procs = Vec::new();
    let backend = |name: &str, port: u16, extra: Vec<String>| {
        let mut args = vec![
            "demo-backend".into(),
            "--name".into(),
            name.into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ];
        args.extend(extra);
        Supervised::start(name, exe, args, dir.join(format!("{name}.log")))
    };
    for i in 0..3 {
        // The managed service keeps its writes in a file and copies each one to the other two
        // before acknowledging it (synchronous replication), so a failover loses none.
        let name = format!("svc{}", i + 1);
        let peers: Vec<String> = (0..3)
            .filter(|&j| j != i)
            .map(|j| format!("127.0.0.1:{}", p.svc[j]))
            .collect();
        let extra = vec![
            "--store".into(),
            dir.join(format!("{name}.writes")).display().to_string(),
            "--replicate-to".into(),
            peers.join(","),
        ];
        procs.push(backend(&name, p.svc[i], extra));
    }
    procs.push(backend("web-a", p.web[0], Vec::new()));
    procs.push(backend("web-b", p.web[1], Vec::new()));
    for i in 0..3 {
        let cfg = dir.join(format!("n{}.toml", i + 1));
        std::fs::write(&cfg, node_config(i, &p, dir))?;
        let args = vec!["run".into(), "--config".into(), cfg.display().to_string()];
        procs.push(Supervised::start(
            &format!("n{}", i + 1),
            exe,
            args,
            dir.join(format!("n{}.log", i + 1)),
        ));
    }
    if let Some(pg) = pg {
        for i in 0..3 {
            let cfg = dir.join(format!("pg{}.toml", i + 1));
            std::fs::write(&cfg, pg.node_config(i, dir))?;
            let args = vec!["run".into(), "--config".into(), cfg.display().to_string()];
            procs.push(Supervised::start(
                &format!("pg{}", i + 1),
                exe,
                args,
                dir.join(format!("pg{}.log", i + 1)),
            ));
        }
        std::fs::write(dir.join("kill-postgres-primary.toml"), pg.scenario(dir))?;
    }
    let lb = dir.join("lb.toml");
    let mut lb_text = lb_config(&p);
    if let Some(pg) = pg {
        lb_text.push_str(&pg.lb_section());
    }
    std::fs::write(&lb, lb_text)?;
    procs.push(Supervised::start(
        "lb",
        exe,
        vec!["run".into(), "--config".into(), lb.display().to_string()],
        dir.join("lb.log"),
    ));
    let scenario_path = dir.join("kill-primary.toml");
    std::fs::write(&scenario_path, scenario(&p, dir))?;

    let outcome = demo_body(&p, dir, &scenario_path, duration, pg).await;
    println!("\nstopping {} processes...", procs.len());
    for s in procs.iter().rev() {
        s.stop().await;
        tracing::debug!(name = %s.name, "stopped");
    }
    outcome
}

async fn demo_body(
    p: &Ports,
    dir: &Path,
    scenario_path: &Path,
    duration: Option<Duration>,
    pg: Option<&PgDemo>,
) -> anyhow::Result<bool> {
    let admins: Vec<String> = p.admin.iter().map(|a| format!("127.0.0.1:{a}")).collect();
    println!(
        "tandem demo: everything runs on 127.0.0.1, files in {}",
        dir.display()
    );
    println!(
        "  cluster nodes n1 n2 n3 (embedded Raft, lease ttl 1s), admin APIs: {}",
        admins.join(", ")
    );
    println!(
        "  managed active-passive service svc1..3 on ports {} {} {} (each write copied to the other two before it is acknowledged)",
        p.svc[0], p.svc[1], p.svc[2]
    );
    println!(
        "  load balancer admin API:  http://127.0.0.1:{}/status",
        p.lb_admin
    );
    println!("  active-active (web):      http://127.0.0.1:{}/", p.lb_web);
    println!(
        "  active-passive (app):     http://127.0.0.1:{}/   (follows the lease)",
        p.lb_app
    );
    if let Some(pg) = pg {
        println!(
            "  PostgreSQL cluster pg1 pg2 pg3 ({}, synchronous), servers on ports {} {} {}, admin APIs 127.0.0.1:{} {} {}",
            pg.bin_dir.display(),
            pg.pg[0],
            pg.pg[1],
            pg.pg[2],
            pg.admin[0],
            pg.admin[1],
            pg.admin[2]
        );
        println!(
            "  PostgreSQL primary via the load balancer: psql -h 127.0.0.1 -p {} -U {} postgres",
            pg.lb, pg.os_user
        );
    }
    println!("  dashboard (open it in a browser): http://{}/", admins[0]);
    println!("  try: tandem ctl --admin 127.0.0.1:{} status", p.admin[0]);
    println!("waiting for the cluster to elect a primary...");
    let deadline = tandem_core::clock::now() + Duration::from_secs(60);
    loop {
        let nodes = p
            .admin
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("n{}", i + 1), format!("127.0.0.1:{a}")))
            .collect();
        let primary = tandem_drill::fault::current_primary(&nodes).await;
        let app_up = tandem_drill::client::get_json(
            &format!("127.0.0.1:{}", p.lb_app),
            "/",
            Duration::from_secs(1),
        )
        .await
        .is_some()
            || matches!(
                tandem_drill::client::Conn::new(&format!("127.0.0.1:{}", p.lb_app))
                    .request("GET", "/", None, Duration::from_secs(1))
                    .await,
                tandem_drill::client::Outcome::Status(200, _)
            );
        if let (Some(pr), true) = (primary, app_up) {
            println!("primary: {pr}; the load balancer routes the app to it");
            break;
        }
        if tandem_core::clock::now() > deadline {
            anyhow::bail!(
                "the demo cluster did not come up in 60 s; see the logs in {}",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let s = drill_cmd::load(scenario_path).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "\nrunning the kill-primary drill (scenario {}):",
        scenario_path.display()
    );
    let html = dir.join("report.html");
    let json = dir.join("report.json");
    let verdict = drill_cmd::run(&s, 1, Some(&json), Some(&html)).await?;
    let roles = std::fs::read_to_string(dir.join("roles.log")).unwrap_or_default();
    println!("\nrole changes (from the promote/demote hooks):\n{roles}");
    let mut passed = matches!(verdict, Verdict::Passed);
    if let Some(pg) = pg {
        passed &= pg_drill(pg, dir).await?;
    }
    match duration {
        Some(d) => {
            println!(
                "the demo keeps running for {}s (--duration)...",
                d.as_secs()
            );
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = stop_signal() => {}
            }
        }
        None => {
            println!("the demo keeps running: press Ctrl-C to stop it and remove everything");
            stop_signal().await;
        }
    }
    Ok(passed)
}

/// Wait for the PostgreSQL cluster, then run the kill-postgres-primary drill.
async fn pg_drill(pg: &PgDemo, dir: &Path) -> anyhow::Result<bool> {
    println!("\nwaiting for the PostgreSQL cluster (initdb, then two clones)...");
    let nodes = (0..3)
        .map(|i| (format!("pg{}", i + 1), format!("127.0.0.1:{}", pg.admin[i])))
        .collect();
    let deadline = tandem_core::clock::now() + Duration::from_secs(120);
    loop {
        let primary = tandem_drill::fault::current_primary(&nodes).await;
        // Both replicas stream, and one is synchronous, before the drill starts.
        let (mut streaming, mut sync) = (0, 0);
        for i in 0..3 {
            for (path, n) in [("/replica", &mut streaming), ("/sync", &mut sync)] {
                let r = tandem_drill::client::Conn::new(&format!("127.0.0.1:{}", pg.admin[i]))
                    .request("GET", path, None, Duration::from_secs(1))
                    .await;
                if matches!(r, tandem_drill::client::Outcome::Status(200, _)) {
                    *n += 1;
                }
            }
        }
        if let (Some(pr), 2, 1) = (&primary, streaming, sync) {
            println!("PostgreSQL primary: {pr}; two replicas stream from it, one synchronously");
            break;
        }
        if tandem_core::clock::now() > deadline {
            anyhow::bail!(
                "the PostgreSQL cluster did not come up in 120 s; see pg1.log .. pg3.log and pg*/postgresql.log in {}",
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let path = dir.join("kill-postgres-primary.toml");
    let s = drill_cmd::load(&path).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "\nrunning the kill-postgres-primary drill (scenario {}):",
        path.display()
    );
    let verdict = drill_cmd::run(
        &s,
        1,
        Some(&dir.join("report-postgres.json")),
        Some(&dir.join("report-postgres.html")),
    )
    .await?;
    Ok(matches!(verdict, Verdict::Passed))
}

/// Ctrl-C or SIGTERM.
async fn stop_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(t) => t,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
