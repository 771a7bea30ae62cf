use super::*;

const OK: &str = r#"
name = "kill-primary"
[target]
http = "http://127.0.0.1:8080/"
[fault]
kind = "sigkill"
at = "2s"
[watch]
nodes = { n1 = "127.0.0.1:9101", n2 = "127.0.0.1:9102" }
[objectives]
rto = "3s"
"#;

fn err(text: &str) -> String {
    match Scenario::parse("s.toml", text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn files_named_in_a_scenario_are_relative_to_it() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let path = dir.path().join("s.toml");
    let text = "name = \"x\"\n[target]\nhttp = \"http://127.0.0.1:1/\"\n[fault]\nkind = \"sigkill\"\npid_file = \"run/app.pid\"\n";
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
    let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        s.fault.pid_file.map(std::path::PathBuf::from),
        Some(dir.path().join("run/app.pid"))
    );
    let abs = text.replace("run/app.pid", "/run/app.pid");
    std::fs::write(&path, abs).unwrap_or_else(|e| panic!("{e}"));
    let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.fault.pid_file.as_deref(), Some("/run/app.pid"));
}

#[test]
fn a_scenario_parses_with_defaults() {
    let s = Scenario::parse("s.toml", OK).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(s.workload.concurrency, 8);
    assert_eq!(s.fault.node, "primary");
    assert_eq!(s.objectives.rto.map(|d| d.get().as_secs()), Some(3));
}

#[test]
fn bad_scenarios_are_refused_before_anything_runs() {
    assert!(
        err(&OK.replace("kind = \"sigkill\"", "kind = \"sigkill\"\ncolour = 1")).contains("line 7")
    );
    assert!(err(&OK.replace("127.0.0.1:8080", "10.1.1.1:8080")).contains("outside loopback"));
    assert!(err(&OK.replace("at = \"2s\"", "at = \"20s\"")).contains("inside workload.duration"));
    assert!(
        err(&OK.replace("at = \"2s\"", "at = \"2s\"\nrecovery_timeout = \"1h\""))
            .contains("recovery_timeout")
    );
    assert!(
        err(&OK.replace("kind = \"sigkill\"", "kind = \"sigstop\"")).contains("duration is needed")
    );
    assert!(
        err(&OK.replace("at = \"2s\"", "at = \"2s\"\nnode = \"n9\"")).contains("not in [watch]")
    );
    let link = |extra: &str| {
        OK.replace(
            "kind = \"sigkill\"",
            &format!("kind = \"link-down\"\nduration = \"1s\"{extra}"),
        )
    };
    assert!(err(&link("")).contains("watch.links has no link"));
    let missing_ns = link("").replace(
        "[objectives]",
        "links = { n1 = \"no-such-ns:eth0\", n2 = \"no-such-ns:eth0\" }\n[objectives]",
    );
    assert!(
        err(&missing_ns).contains("does not exist"),
        "{}",
        err(&missing_ns)
    );
    let netem = OK.replace(
        "kind = \"sigkill\"",
        "kind = \"netem\"\nduration = \"1s\"\nloss = \"lots\"",
    );
    assert!(err(&netem).contains("watch.links") || err(&netem).contains("percentage"));
    let api = OK.replace(
        "kind = \"sigkill\"",
        "kind = \"sigstop\"\nduration = \"1s\"\nvia = \"api\"",
    );
    assert!(err(&api).contains("needs watch.token_file"));
    let api_link = OK
        .replace(
            "kind = \"sigkill\"",
            "kind = \"link-down\"\nduration = \"1s\"\nvia = \"api\"",
        )
        .replace("[objectives]", "token_file = \"t\"\n[objectives]");
    assert!(err(&api_link).contains("fault.interface"));
    assert!(Scenario::parse(
        "s.toml",
        &api_link.replace("via = \"api\"", "via = \"api\"\ninterface = \"eth0\"")
    )
    .is_ok());
    // Targets: exactly one; PostgreSQL hosts checked like HTTP ones; TCP takes reads only.
    let pg = |dsn: &str| {
        OK.replace(
            "http = \"http://127.0.0.1:8080/\"",
            &format!("postgres = \"{dsn}\""),
        )
    };
    assert!(Scenario::parse("s.toml", &pg("postgres://app@127.0.0.1:5432/db")).is_ok());
    assert!(err(&pg("host=10.9.9.9 user=app")).contains("outside loopback"));
    assert!(
        err(&OK.replace("[target]", "[target]\ntcp = \"127.0.0.1:1\"")).contains("exactly one")
    );
    let tcp = OK.replace(
        "http = \"http://127.0.0.1:8080/\"",
        "tcp = \"127.0.0.1:5432\"",
    );
    assert!(Scenario::parse("s.toml", &tcp).is_ok());
    assert!(
        err(&tcp.replace("[fault]", "[workload]\nkind = \"writes\"\n[fault]"))
            .contains("reads only")
    );
    // Write objectives need writes; rpo is 0 or a duration.
    assert!(err(&OK.replace("rto = \"3s\"", "rpo = 0")).contains("kind = \"writes\""));
    let writes = |obj: &str| {
        OK.replace("[fault]", "[workload]\nkind = \"writes\"\n[fault]")
            .replace("rto = \"3s\"", obj)
    };
    let rpo = |obj: &str| Scenario::parse("s.toml", &writes(obj)).map(|s| s.objectives.rpo);
    assert_eq!(rpo("rpo = 0").ok().flatten(), Some(Rpo(Duration::ZERO)));
    assert_eq!(
        rpo("rpo = \"500ms\"").ok().flatten(),
        Some(Rpo(Duration::from_millis(500)))
    );
    assert!(err(&writes("rpo = 3")).contains("write 0"));
    assert!(err(&writes("rpo = \"soon\"")).contains("invalid duration"));
    // pid_file and disk-full faults need no watched nodes; partitions need hosts.
    let standalone = |fault: &str| {
        format!("name = \"x\"\n[target]\nhttp = \"http://127.0.0.1:1/\"\n[fault]\n{fault}\n")
    };
    assert!(Scenario::parse(
        "s.toml",
        &standalone("kind = \"sigkill\"\npid_file = \"p\"")
    )
    .is_ok());
    assert!(err(&standalone(
        "kind = \"netem\"\npid_file = \"p\"\nloss = \"1%\""
    ))
    .contains("pid_file goes with"));
    assert!(err(&standalone("kind = \"disk-full\"\nduration = \"1s\"")).contains("fault.path"));
    assert!(Scenario::parse(
        "s.toml",
        &standalone("kind = \"disk-full\"\nduration = \"1s\"\npath = \"/x\"")
    )
    .is_ok());
    let part = OK.replace(
        "kind = \"sigkill\"",
        "kind = \"partition\"\nduration = \"1s\"",
    );
    assert!(err(&part).contains("watch.hosts"));
    assert!(err(&part.replace(
        "[objectives]",
        "hosts = { n1 = \"no-such-ns\", n2 = \"no-such-ns\" }\n[objectives]"
    ))
    .contains("does not exist"));
    assert!(
        err(&OK.replace("[objectives]", "served_by = { svc = \"n7\" }\n[objectives]"))
            .contains("not in [watch] nodes")
    );
    let allowed = OK
        .replace("127.0.0.1:8080", "10.1.1.1:8080")
        .replace("name = ", "allow_targets = [\"10.1.1.0/24\"]\nname = ");
    assert!(Scenario::parse("s.toml", &allowed).is_ok());
}
