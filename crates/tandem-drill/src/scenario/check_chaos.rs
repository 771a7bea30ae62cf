//! The checks of a `[chaos]` section: exactly one of `[fault]` and `[chaos]`, known fault
//! kinds, a rate that can be met, and a way to undo every fault on every node it may hit.

use std::time::Duration;

use super::Scenario;
use crate::chaos::ChaosKind;

impl Scenario {
    /// Exactly one of `[fault]` and `[chaos]`; with `[chaos]` the workload lasts
    /// `chaos.duration` (a different `workload.duration` is refused, not ignored).
    pub(super) fn check_sections(
        &mut self,
        fault_given: bool,
        workload_duration_given: bool,
    ) -> Result<(), String> {
        match (&self.chaos, fault_given) {
            (Some(_), true) => {
                Err("[fault] and [chaos]: a scenario has exactly one of them".into())
            }
            (None, false) => Err("a scenario needs [fault] or [chaos]".into()),
            (None, true) => Ok(()),
            (Some(c), false) => {
                if workload_duration_given && self.workload.duration.get() != c.duration.get() {
                    return Err(format!(
                        "workload.duration: with [chaos] the workload lasts chaos.duration ({}); leave it out",
                        c.duration
                    ));
                }
                self.workload.duration = c.duration;
                Ok(())
            }
        }
    }

    pub(super) fn check_chaos(&self) -> Result<(), String> {
        let Some(c) = &self.chaos else {
            return Ok(());
        };
        let kinds = c.kinds()?;
        if kinds.is_empty() {
            return Err("chaos.faults: give at least one fault kind".into());
        }
        if self.watch.nodes.is_empty() {
            return Err("[chaos] needs [watch] nodes to find its targets".into());
        }
        let fault = c.fault_duration.get();
        let settle = c.settle.get();
        let total = c.duration.get();
        if fault.is_zero() || fault > Duration::from_secs(600) {
            return Err("chaos.fault_duration must be between 1ms and 10m".into());
        }
        if settle > Duration::from_secs(600) {
            return Err("chaos.settle must be at most 10m".into());
        }
        if total > Duration::from_secs(24 * 3600) {
            return Err("chaos.duration must be at most 24h".into());
        }
        if c.converge_timeout.get() > Duration::from_secs(600) {
            return Err("chaos.converge_timeout must be at most 10m".into());
        }
        let interval = Duration::from_millis(c.interval_ms()?);
        let key = if c.rate.is_some() {
            "chaos.rate"
        } else {
            "chaos.interval"
        };
        if interval < fault + settle {
            return Err(format!(
                "{key}: a fault every {} on average cannot be met: each lasts fault_duration + settle = {} (one fault at a time)",
                tandem_core::HumanDuration(interval),
                tandem_core::HumanDuration(fault + settle)
            ));
        }
        if total < settle + fault + settle {
            return Err(format!(
                "chaos.duration: {} is too short for one fault (settle + fault_duration + settle = {})",
                c.duration,
                tandem_core::HumanDuration(settle + fault + settle)
            ));
        }
        self.check_chaos_undo(&kinds)
    }

    /// Every node a fault may hit (any of them: the primary moves) has what that fault needs
    /// to be made and undone.
    fn check_chaos_undo(&self, kinds: &[ChaosKind]) -> Result<(), String> {
        let Some(c) = &self.chaos else {
            return Ok(());
        };
        for (node, argv) in &c.restart {
            if !self.watch.nodes.contains_key(node) {
                return Err(format!("chaos.restart.{node}: not in [watch] nodes"));
            }
            if argv.first().is_none_or(|p| p.is_empty()) {
                return Err(format!(
                    "chaos.restart.{node}: an argv, [\"program\", \"arg\", ...]"
                ));
            }
        }
        for node in c.disks.keys() {
            if !self.watch.nodes.contains_key(node) {
                return Err(format!("chaos.disks.{node}: not in [watch] nodes"));
            }
        }
        let nodes: Vec<&String> = self.watch.nodes.keys().collect();
        for &k in kinds {
            if k.needs_restart() {
                if let Some(n) = nodes.iter().find(|n| !c.restart.contains_key(**n)) {
                    return Err(format!(
                        "chaos.faults: {:?} cannot be undone on {n}: chaos.restart has no argv for it (the drill starts a {} node again with it)",
                        k.name(),
                        if k == ChaosKind::Kill { "killed" } else { "stopped" }
                    ));
                }
            }
            match k {
                ChaosKind::Partition => self
                    .check_hosts_exist()
                    .map_err(|e| format!("chaos.faults: \"partition\": {e}"))?,
                ChaosKind::Loss | ChaosKind::LinkDown => self
                    .check_links_of(&nodes)
                    .map_err(|e| format!("chaos.faults: {:?}: {e}", k.name()))?,
                ChaosKind::DiskFull => {
                    if let Some(n) = nodes.iter().find(|n| !c.disks.contains_key(**n)) {
                        return Err(format!(
                            "chaos.faults: \"disk-full\" needs chaos.disks for every node; {n} has none"
                        ));
                    }
                }
                _ => {}
            }
        }
        let ok = c
            .loss
            .strip_suffix('%')
            .and_then(|n| n.parse::<f64>().ok())
            .is_some_and(|n| (0.0..=100.0).contains(&n));
        if !ok {
            return Err(format!(
                "chaos.loss: {:?} must be a percentage like \"30%\"",
                c.loss
            ));
        }
        Ok(())
    }
}
