//! `tandem drill`: run a scenario file, repeat it, print the summary, write JSON and HTML.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tandem_drill::chaos::{self, Chaos};
use tandem_drill::scenario::Scenario;
use tandem_drill::{run_scenario, DrillError, Summary};

/// How a drill ended.
pub enum Verdict {
    Passed,
    Missed,
}

/// Run `s` `repeat` times; between runs wait for the cluster to be whole again.
pub async fn run(
    s: &Scenario,
    repeat: u32,
    json: Option<&Path>,
    html: Option<&Path>,
) -> anyhow::Result<Verdict> {
    let mut runs = Vec::new();
    let base_seed = s
        .chaos
        .as_ref()
        .map(|c| c.seed.unwrap_or_else(chaos::draw_seed));
    for i in 0..repeat.max(1) {
        if i > 0 {
            recovered(s).await?;
        }
        if let (Some(c), Some(base)) = (&s.chaos, base_seed) {
            // Repeats of a chaos scenario use the next seeds, each printed.
            let seed = base.wrapping_add(u64::from(i));
            let mut run_s = s.clone();
            let mut c = c.clone();
            c.seed = Some(seed);
            let plan = print_schedule(&run_s, &c, seed)?;
            eprintln!(
                "drill {} run {}/{}: chaos seed {seed}, {} faults over {}",
                s.name,
                i + 1,
                repeat.max(1),
                plan,
                c.duration
            );
            run_s.chaos = Some(c);
            let live = std::io::IsTerminal::is_terminal(&std::io::stderr());
            let r = tokio::select! {
                r = run_scenario(&run_s, live) => r.map_err(|e| anyhow::anyhow!("{e}"))?,
                _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted: the fault under way was undone"),
            };
            runs.push(r);
            continue;
        }
        let on = match (&s.fault.pid_file, &s.fault.path) {
            (Some(f), _) => format!("the process in {f}"),
            (None, Some(p)) => p.clone(),
            (None, None) => s.fault.node.clone(),
        };
        eprintln!(
            "drill {} run {}/{}: {:?} at {} on {on}",
            s.name,
            i + 1,
            repeat.max(1),
            s.fault.kind,
            s.fault.at,
        );
        let live = std::io::IsTerminal::is_terminal(&std::io::stderr());
        // Interrupted: dropping the run undoes its fault (a stopped process is continued).
        let r = tokio::select! {
            r = run_scenario(s, live) => r.map_err(|e| anyhow::anyhow!("{e}"))?,
            _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted: the fault was undone"),
        };
        runs.push(r);
    }
    let summary = Summary::new(&s.name, runs);
    print!("{}", summary.table());
    if let Some(p) = json {
        let text = serde_json::to_string_pretty(&summary)?;
        std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
        println!("JSON report: {}", p.display());
    }
    if let Some(p) = html {
        std::fs::write(p, summary.html()).with_context(|| format!("writing {}", p.display()))?;
        println!("HTML report: {}", p.display());
    }
    Ok(if summary.passed {
        Verdict::Passed
    } else {
        Verdict::Missed
    })
}

/// Print a chaos schedule on stderr; returns the number of faults.
fn print_schedule(s: &Scenario, c: &Chaos, seed: u64) -> anyhow::Result<usize> {
    let names: Vec<String> = s.watch.nodes.keys().cloned().collect();
    let plan = chaos::schedule(c, &names, seed).map_err(|e| anyhow::anyhow!("{e}"))?;
    eprintln!("chaos seed {seed}: {} faults", plan.len());
    for (i, p) in plan.iter().enumerate() {
        eprintln!("  {:>4}  {p}", i + 1);
    }
    Ok(plan.len())
}

/// `--dry-run`: the seed and the schedule on stdout, nothing touched.
pub fn dry_run(s: &Scenario) -> anyhow::Result<()> {
    let Some(c) = &s.chaos else {
        println!(
            "drill {}: {:?} at {} on {} (one fault; a schedule is for [chaos])",
            s.name, s.fault.kind, s.fault.at, s.fault.node
        );
        return Ok(());
    };
    let seed = c.seed.unwrap_or_else(chaos::draw_seed);
    let names: Vec<String> = s.watch.nodes.keys().cloned().collect();
    let plan = chaos::schedule(c, &names, seed).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "drill {} chaos seed {seed}: {} faults over {}",
        s.name,
        plan.len(),
        c.duration
    );
    for (i, p) in plan.iter().enumerate() {
        println!("  {:>4}  {p}", i + 1);
    }
    Ok(())
}

/// Every watched node answers and exactly one is primary (60 s at most).
async fn recovered(s: &Scenario) -> anyhow::Result<()> {
    let deadline = tandem_core::clock::now() + Duration::from_secs(60);
    loop {
        let mut up = true;
        for a in s.watch.nodes.values() {
            up &= tandem_drill::client::get_json(a, "/health", Duration::from_millis(500))
                .await
                .is_some();
        }
        if up
            && (s.watch.nodes.is_empty()
                || tandem_drill::fault::current_primary(&s.watch.nodes)
                    .await
                    .is_some())
        {
            return Ok(());
        }
        if tandem_core::clock::now() > deadline {
            anyhow::bail!("the cluster did not recover between runs (a killed node must be restarted, e.g. by systemd)");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Load a scenario, mapping a bad file to exit status 2.
pub fn load(path: &Path) -> Result<Scenario, DrillError> {
    Scenario::load(path)
}
