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
