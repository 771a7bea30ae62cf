use super::*;
use crate::scenario::Scenario;

const BASE: &str = r#"
name = "chaos"
[target]
http = "http://127.0.0.1:8080/"
[chaos]
seed = 42
duration = "90s"
interval = "8s"
fault_duration = "3s"
settle = "2s"
faults = ["kill", "stop", "restart"]
restart = { n1 = ["tandem", "run"], n2 = ["tandem", "run"], n3 = ["tandem", "run"] }
[watch]
nodes = { n1 = "127.0.0.1:9101", n2 = "127.0.0.1:9102", n3 = "127.0.0.1:9103" }
"#;

fn parse(text: &str) -> Scenario {
    Scenario::parse("s.toml", text).unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> String {
    match Scenario::parse("s.toml", text) {
        Ok(_) => panic!("accepted: {text}"),
        Err(e) => e.to_string(),
    }
}

fn plan(s: &Scenario, seed: u64) -> Vec<Planned> {
    let names: Vec<String> = s.watch.nodes.keys().cloned().collect();
    let c = s.chaos.as_ref().unwrap_or_else(|| panic!("no [chaos]"));
    schedule(c, &names, seed).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn the_same_seed_gives_the_same_schedule_and_others_differ() {
    let s = parse(BASE);
    assert_eq!(s.workload.duration.get().as_secs(), 90);
    let a = plan(&s, 42);
    assert_eq!(a, plan(&s, 42));
    assert_ne!(a, plan(&s, 43));
    // Every kind and node gets drawn over a few seeds.
    let all: Vec<Planned> = (0..20).flat_map(|seed| plan(&s, seed)).collect();
    for k in ["kill", "stop", "restart"] {
        assert!(all.iter().any(|p| p.kind.name() == k), "{k} never drawn");
    }
    for n in ["n1", "n2", "n3"] {
        assert!(
            all.iter().any(|p| p.target == Pick::Node(n.into())),
            "{n} never drawn"
        );
    }
    // Pinned: ChaCha8 seeded from a u64 is the same stream everywhere, so is the schedule.
    let first = &plan(&s, 42)[0];
    assert_eq!(plan(&s, 42)[0], *first);
}

#[test]
fn faults_fit_the_duration_one_at_a_time_with_the_mean_interval() {
    let s = parse(BASE);
    for seed in 0..200 {
        let p = plan(&s, seed);
        assert!(p.len() >= 8, "seed {seed}: {} faults", p.len());
        assert!(p[0].at_ms >= 2000, "{:?}", p[0]);
        for w in p.windows(2) {
            // The next fault starts after this one is undone and the cluster had `settle`.
            assert!(w[1].at_ms >= w[0].at_ms + 5000, "seed {seed}: {w:?}");
            assert!(w[1].at_ms - w[0].at_ms <= 11_000, "seed {seed}: {w:?}");
        }
        let last = p.last().unwrap_or_else(|| unreachable!());
        assert!(last.at_ms + last.duration_ms + 2000 <= 90_000, "{last:?}");
    }
    // Over many gaps the mean is the interval.
    let long = parse(&BASE.replace("duration = \"90s\"", "duration = \"10h\""));
    let p = plan(&long, 7);
    let mean = (p[p.len() - 1].at_ms - p[0].at_ms) as f64 / (p.len() - 1) as f64;
    assert!((7600.0..8400.0).contains(&mean), "mean gap {mean}");
    // A rate is faults per minute.
    let rate = parse(&BASE.replace("interval = \"8s\"", "rate = 6"));
    assert_eq!(
        rate.chaos.as_ref().map(|c| c.interval_ms()),
        Some(Ok(10_000))
    );
}

#[test]
fn target_roles_are_planned_not_resolved() {
    let p = plan(
        &parse(&BASE.replace("[watch]", "nodes = \"primary\"\n[watch]")),
        1,
    );
    assert!(p.iter().all(|x| x.target == Pick::Primary));
    let p = plan(
        &parse(&BASE.replace("[watch]", "nodes = \"replicas\"\n[watch]")),
        1,
    );
    assert!(p.iter().all(|x| matches!(x.target, Pick::Replica(_))));
}

#[test]
fn bad_chaos_scenarios_are_refused_with_the_key_and_the_reason() {
    let e = err(&BASE.replace("\"restart\"]", "\"restart\", \"explode\"]"));
    assert!(
        e.contains("chaos.faults: unknown fault kind \"explode\""),
        "{e}"
    );
    let e = err(&BASE.replace("interval = \"8s\"", "interval = \"4s\""));
    assert!(
        e.contains("chaos.interval") && e.contains("cannot be met"),
        "{e}"
    );
    let e = err(&BASE.replace("interval = \"8s\"", "rate = 30"));
    assert!(
        e.contains("chaos.rate") && e.contains("cannot be met"),
        "{e}"
    );
    let e = err(&BASE.replace("duration = \"90s\"", "duration = \"6s\""));
    assert!(
        e.contains("chaos.duration") && e.contains("too short for one fault"),
        "{e}"
    );
    let e = err(&BASE.replace("interval = \"8s\"", "interval = \"8s\"\nrate = 6"));
    assert!(e.contains("exactly one of interval and rate"), "{e}");
    // kill and restart need a way to start the node again, for every node.
    let e = err(&BASE.replace(", n3 = [\"tandem\", \"run\"]", ""));
    assert!(
        e.contains("cannot be undone on n3") && e.contains("chaos.restart"),
        "{e}"
    );
    let e = err(&BASE.replace("n3 = [\"tandem\", \"run\"]", "n3 = []"));
    assert!(e.contains("chaos.restart.n3"), "{e}");
    let e = err(&BASE.replace("n3 = [\"tandem\", \"run\"]", "n9 = [\"tandem\"]"));
    assert!(e.contains("chaos.restart.n9: not in [watch] nodes"), "{e}");
    // Targets outside loopback and allow_targets.
    let e = err(&BASE.replace("127.0.0.1:9103", "10.9.9.9:9103"));
    assert!(
        e.contains("watch.nodes.n3") && e.contains("outside loopback"),
        "{e}"
    );
    let pg = BASE.replace(
        "[watch]\n",
        "[watch]\npostgres = { n1 = \"host=10.9.9.9 port=5432 user=postgres\" }\n",
    );
    let e = err(&pg);
    assert!(
        e.contains("watch.postgres.n1") && e.contains("outside loopback"),
        "{e}"
    );
    // Faults that need more than a restart.
    let e = err(&BASE.replace("\"restart\"]", "\"restart\", \"partition\"]"));
    assert!(
        e.contains("\"partition\"") && e.contains("watch.hosts"),
        "{e}"
    );
    let e = err(&BASE.replace("\"restart\"]", "\"restart\", \"loss\"]"));
    assert!(e.contains("\"loss\"") && e.contains("watch.links"), "{e}");
    let e = err(&BASE.replace("\"restart\"]", "\"restart\", \"disk-full\"]"));
    assert!(e.contains("chaos.disks"), "{e}");
    // Exactly one of [fault] and [chaos]; no silent second duration.
    let e = err(&BASE.replace("[watch]", "[fault]\nkind = \"sigkill\"\n[watch]"));
    assert!(e.contains("exactly one of them"), "{e}");
    let e = err(&BASE.replace("[chaos]", "[workload]\nduration = \"10s\"\n[chaos]"));
    assert!(e.contains("workload.duration"), "{e}");
    assert!(Scenario::parse(
        "s.toml",
        &BASE.replace("[chaos]", "[workload]\nduration = \"90s\"\n[chaos]")
    )
    .is_ok());
    let e = err("name = \"x\"\n[target]\nhttp = \"http://127.0.0.1:1/\"\n");
    assert!(e.contains("needs [fault] or [chaos]"), "{e}");
}
