//! `tandem drill`: run a scenario file, repeat it, print the summary, write JSON and HTML.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
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
    for i in 0..repeat.max(1) {
        if i > 0 {
            recovered(s).await?;
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
