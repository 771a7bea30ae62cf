use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::parse(Path::new("tandem.toml"), text)
}

const GOOD: &str = r#"
[admin]
listen = "127.0.0.1:9000"

[[frontend]]
name = "web"
listen = "127.0.0.1:8080"
backend = "app"

[[backend]]
name = "app"
retries = 2
[backend.health]
check = "http"
path = "/healthz"
interval = "500ms"
[[backend.server]]
name = "a"
address = "127.0.0.1:9001"
[[backend.server]]
name = "b"
address = "127.0.0.1:9002"
backup = true
"#;

#[test]
fn a_good_config_parses_with_defaults() {
    let c = parse(GOOD).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.backend[0].server.len(), 2);
    assert_eq!(c.backend[0].health.interval.get().as_millis(), 500);
    assert_eq!(c.backend[0].try_timeout.get().as_secs(), 5);
    assert!(c.backend[0].server[1].backup);
}

fn error_of(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("accepted a bad config"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn unknown_key_names_file_line_and_key() {
    let bad = GOOD.replace("retries = 2", "retries = 2\nretry_on = \"all\"");
    let e = error_of(&bad);
    assert!(e.starts_with("tandem.toml:13"), "{e}");
    assert!(e.contains("retry_on"), "{e}");
}

#[test]
fn bad_duration_names_the_line() {
    let e = error_of(&GOOD.replace("\"500ms\"", "\"fast\""));
    assert!(e.starts_with("tandem.toml:16"), "{e}");
    assert!(e.contains("invalid duration"), "{e}");
    assert!(
        e.contains("backend.health.interval"),
        "the key is named: {e}"
    );
}

#[test]
fn validation_error_points_at_the_key() {
    let e = error_of(&GOOD.replace("127.0.0.1:9002", "localhost"));
    assert!(
        e.starts_with("tandem.toml:22: backend[0].server[1].address"),
        "{e}"
    );
    let e = error_of(&GOOD.replace("backend = \"app\"", "backend = \"nope\""));
    assert!(e.starts_with("tandem.toml:8: frontend[0].backend"), "{e}");
}

#[test]
fn every_problem_is_reported() {
    let bad = GOOD
        .replace("127.0.0.1:9002", "x")
        .replace("name = \"a\"", "name = \"b\"");
    let e = error_of(&bad);
    assert_eq!(e.lines().count(), 2, "{e}");
}

#[test]
fn syntax_error_names_the_line() {
    let e = error_of("[admin]\nlisten = \n");
    assert!(e.starts_with("tandem.toml:2"), "{e}");
}

#[test]
fn empty_config_is_refused() {
    assert!(error_of("").contains("nothing to run"));
}

const CLUSTER: &str = r#"
[node]
name = "n1"
data_dir = "data"

[cluster]
name = "demo"
listen = "127.0.0.1:7101"
peers = { n1 = "127.0.0.1:7101", n2 = "127.0.0.1:7102", n3 = "127.0.0.1:7103" }
secret_file = "/nonexistent/secret"
"#;

#[test]
fn cluster_sections_are_validated() {
    let e = error_of(CLUSTER);
    assert!(e.contains("tandem.toml:10: cluster.secret_file"), "{e}");
    let dir = std::env::temp_dir().join(format!("tandem-cfg-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let secret = dir.join("secret");
    let _ = std::fs::write(&secret, "0123456789abcdef-secret");
    let good = CLUSTER.replace("/nonexistent/secret", &secret.display().to_string());
    let c = parse(&good).unwrap_or_else(|e| panic!("{e}"));
    assert!(c
        .node
        .map(|n| n.data_dir.ends_with("data"))
        .unwrap_or(false));
    let e = error_of(&good.replace("name = \"n1\"", "name = \"n9\""));
    assert!(
        e.contains("cluster.peers") && e.contains("not among the peers"),
        "{e}"
    );
    let e = error_of(&good.replace("127.0.0.1:7103", "127.0.0.1:7102"));
    assert!(e.contains("given to two peers"), "{e}");
    assert!(parse(&good.replace("[node]", "[service]\nkind = \"command\"\n[node]")).is_ok());
    let e = error_of("[service]\nkind = \"command\"\n[admin]\nlisten = \"127.0.0.1:0\"\n");
    assert!(
        e.contains("service") && e.contains("needs [node] and [cluster]"),
        "{e}"
    );
    let e = error_of(&format!(
        "{good}\n[[notify]]\nurl = \"https://hooks.example\"\n"
    ));
    assert!(e.contains("notify[0].url"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(feature = "etcd")]
#[test]
fn an_etcd_lease_must_outlast_an_etcd_election() {
    let dir = tempfile_dir("etcd");
    let secret = dir.join("secret");
    let _ = std::fs::write(&secret, "0123456789abcdef-secret");
    let etcd = CLUSTER.replace("/nonexistent/secret", &secret.display().to_string())
        + "dcs = \"etcd\"\netcd_endpoints = [\"http://127.0.0.1:2379\"]\n";
    // The default ttl (2s) against etcd's default election timeout (1s).
    let e = error_of(&etcd);
    assert!(
        e.contains("cluster.lease_ttl")
            && e.contains("2s is too short")
            && e.contains("the smallest safe lease_ttl is 5.6s")
            && e.contains("etcd_election_timeout"),
        "{e}"
    );
    assert!(parse(&format!("{etcd}lease_ttl = \"5.6s\"\n")).is_ok());
    // A stated shorter election timeout allows a shorter ttl.
    let short = format!("{etcd}etcd_election_timeout = \"100ms\"\n");
    assert!(parse(&format!("{short}lease_ttl = \"600ms\"\n")).is_ok());
    let e = error_of(&format!("{short}lease_ttl = \"500ms\"\n"));
    assert!(e.contains("is 600ms"), "{e}");
    // An explicit margin counts in full.
    let e = error_of(&format!(
        "{etcd}lease_ttl = \"4s\"\nsafety_margin = \"500ms\"\n"
    ));
    assert!(e.contains("is 4.3s (with this safety_margin)"), "{e}");
    // Only with etcd, and within etcd's own range.
    let raft = CLUSTER.replace("/nonexistent/secret", &secret.display().to_string());
    let e = error_of(&format!("{raft}etcd_election_timeout = \"1s\"\n"));
    assert!(
        e.contains("cluster.etcd_election_timeout") && e.contains("only used with"),
        "{e}"
    );
    let e = error_of(&format!(
        "{etcd}lease_ttl = \"300s\"\netcd_election_timeout = \"1m\"\n"
    ));
    assert!(e.contains("between 10ms and 50s"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn postgres_services_are_validated() {
    let dir = tempfile_dir("pg");
    let secret = dir.join("secret");
    let _ = std::fs::write(&secret, "0123456789abcdef-secret");
    let cluster = CLUSTER.replace("/nonexistent/secret", &secret.display().to_string());
    let bin = "/usr/lib/postgresql/15/bin";
    let pg = |extra: &str| {
        format!(
            "{cluster}\n[service]\nkind = \"postgres\"\nbin_dir = \"{bin}\"\ndata_dir = \"{}/pg\"\nlisten = \"127.0.0.1:5432\"\n{extra}",
            dir.display()
        )
    };
    if std::path::Path::new(bin).join("postgres").exists() {
        let c = parse(&pg(
            "synchronous = \"strict\"\nmaximum_lag_on_failover = \"16MB\"",
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let s = c.service.unwrap_or_else(|| panic!("no service"));
        let settings = s
            .postgres(
                c.node.as_ref().unwrap_or_else(|| panic!("no node")),
                c.cluster.as_ref().unwrap_or_else(|| panic!("no cluster")),
            )
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(settings.maximum_lag_on_failover, 16 << 20);
        assert_eq!(settings.os_user, "postgres");
    }
    // A wrong bin_dir names what is missing.
    let e = error_of(&pg("").replace(bin, "/nonexistent/bin"));
    assert!(
        e.contains("service.bin_dir") && e.contains("has no postgres"),
        "{e}"
    );
    // Settings tandem owns, sizes, users, hooks.
    let e = error_of(&pg("parameters = { port = \"5433\" }"));
    assert!(
        e.contains("service.parameters.port") && e.contains("tandem sets this"),
        "{e}"
    );
    let e = error_of(&pg("maximum_lag_on_failover = \"1 lightyear\""));
    assert!(e.contains("service.maximum_lag_on_failover"), "{e}");
    let e = error_of(&pg("os_user = \"root\""));
    assert!(e.contains("refuses to run as root"), "{e}");
    let e = error_of(&pg("os_user = \"no_such_user_here\""));
    assert!(
        e.contains("service.os_user") && e.contains("no OS user"),
        "{e}"
    );
    let e = error_of(&pg("promote = \"true\""));
    assert!(
        e.contains("service.promote") && e.contains("not used with kind"),
        "{e}"
    );
    let e = error_of(&pg("synchronous = \"maybe\""));
    assert!(e.contains("synchronous"), "{e}");
    let e = error_of(&pg("").replace("listen = \"127.0.0.1:5432\"", "listen = \"5432\""));
    assert!(e.contains("service.listen"), "{e}");
    // A data dir owned by someone else (root made it) is refused before anything starts.
    let owned = dir.join("owned");
    let _ = std::fs::create_dir_all(&owned);
    if std::fs::metadata(&owned).is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0) {
        let e = error_of(&pg("").replace(
            &format!("{}/pg", dir.display()),
            &owned.display().to_string(),
        ));
        assert!(
            e.contains("service.data_dir") && e.contains("owned by uid 0"),
            "{e}"
        );
    }
    // PostgreSQL keys on a command service.
    let e = error_of(&format!(
        "{cluster}\n[service]\nkind = \"command\"\nbin_dir = \"/x\"\n"
    ));
    assert!(
        e.contains("service.bin_dir") && e.contains("only used with kind"),
        "{e}"
    );
}

fn tempfile_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("tandem-cfg-{tag}-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    dir
}

const VIP: &str = r#"
[[vip]]
interface = "eth0"
address = "10.0.0.100/24"
vrid = 51
priority = 100
advert_int = "1s"
version = 3
"#;

#[test]
fn vip_sections_are_validated() {
    let c = parse(VIP).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(c.vip[0].vrid, Some(51));
    let e = error_of(&VIP.replace("priority = 100", "priority = 0"));
    assert!(e.starts_with("tandem.toml:6: vip[0].priority"), "{e}");
    let e = error_of(&VIP.replace("version = 3", "version = 2\nadvert_int_x = 1"));
    assert!(e.contains("advert_int_x"), "unknown keys are refused: {e}");
    let e = error_of(
        &VIP.replace("advert_int = \"1s\"", "advert_int = \"1500ms\"")
            .replace("version = 3", "version = 2"),
    );
    assert!(
        e.contains("vip[0].advert_int") && e.contains("whole seconds"),
        "{e}"
    );
    let e = error_of(&VIP.replace("\"10.0.0.100/24\"", "\"10.0.0.300/24\""));
    assert!(e.starts_with("tandem.toml:4: vip[0].address"), "{e}");
    let e = error_of(&VIP.replace("vrid = 51", "mode = \"leader\""));
    assert!(e.contains("vip[0].mode") && e.contains("[cluster]"), "{e}");
}
