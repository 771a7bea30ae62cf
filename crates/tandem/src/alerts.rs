//! `tandem alerts`: the Prometheus alerting rules shipped with tandem (`alerts.yml`, documented
//! in docs/metrics.md), printed on stdout for `tandem alerts > /etc/prometheus/tandem.rules.yml`.

use std::io::Write;
use std::process::ExitCode;

/// The rules file, as printed.
pub(crate) const RULES: &str = include_str!("alerts.yml");

/// Print the rules. A closed stdout (`tandem alerts | head`) is an error, not a panic.
pub(crate) fn print() -> ExitCode {
    let mut out = std::io::stdout().lock();
    match out.write_all(RULES.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem alerts: writing to stdout: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::RULES;

    /// The alerts docs/metrics.md promises, in the order it lists them.
    const ALERTS: [&str; 11] = [
        "TandemNodeDown",
        "TandemClusterWithoutPrimary",
        "TandemTwoPrimaries",
        "TandemFailoverHappened",
        "TandemLeaseRenewalsSlow",
        "TandemQuorumLost",
        "TandemBackendServerDown",
        "TandemBackendAllServersDown",
        "TandemErrorRatioHigh",
        "TandemReplicationLagHigh",
        "TandemVipFlapping",
    ];

    #[test]
    fn every_promised_alert_is_in_the_rules_once() {
        let names: Vec<&str> = RULES
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- alert: "))
            .collect();
        assert_eq!(names, ALERTS);
    }

    #[test]
    fn the_rules_are_plain_spaces_and_end_with_a_newline() {
        assert!(
            !RULES.contains('\t'),
            "YAML does not allow tabs for indentation"
        );
        assert!(RULES.ends_with('\n'));
    }
}
