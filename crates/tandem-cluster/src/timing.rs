//! The lease's timing in one place: how often the primary renews, how soon it retries, how long
//! one etcd request may take, and from these the shortest `lease_ttl` that rides out an etcd
//! leader election (docs/design/lease.md, "etcd").

use std::time::Duration;

use tandem_core::validate::Issue;

use crate::config::ClusterConfig;

/// The primary renews every `ttl / RENEW_DIVISOR`.
pub const RENEW_DIVISOR: u32 = 8;
/// After a failed renewal the primary tries again `ttl / RETRY_DIVISOR` later.
pub const RETRY_DIVISOR: u32 = 20;
/// One etcd request (a read or a transaction) is given up after `ttl / ETCD_REQUEST_DIVISOR`.
pub const ETCD_REQUEST_DIVISOR: u32 = 8;
/// etcd's own default `--election-timeout`.
pub const ETCD_DEFAULT_ELECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// How often the primary renews its lease.
pub fn renew_every(ttl: Duration) -> Duration {
    ttl / RENEW_DIVISOR
}

/// How soon a failed renewal is tried again.
pub fn renew_retry_after(ttl: Duration) -> Duration {
    (ttl / RETRY_DIVISOR).max(Duration::from_millis(10))
}

/// The timeout of one etcd request. A request that reached a follower which forwarded it to a
/// leader that just died is never answered by etcd before its own request timeout (5 s plus two
/// election timeouts), so the client gives up early and the renewal is tried again.
pub fn etcd_request_timeout(ttl: Duration) -> Duration {
    ttl / ETCD_REQUEST_DIVISOR
}

/// The smallest `lease_ttl` whose primary keeps its lease through the loss of the etcd leader,
/// for an etcd cluster whose `--election-timeout` is `election_timeout` (E) and a safety margin
/// of `safety_margin` (`None`: the default, a quarter of the ttl). Rounded up to 100 ms.
///
/// Worst case, the etcd leader dies just before the renewal sent at that moment commits. The
/// last confirmed renewal was then sent one renewal interval earlier, so the lease runs out
/// `ttl - margin - ttl/8` after the failure. Meanwhile:
/// - the followers notice the loss after their randomized election timeout, at most 2E, and a
///   vote, the new leader's first commit and the renewal's read and transaction take a few round
///   trips more, counted as E/2 (etcd's tuning guide puts the heartbeat near one round trip and
///   E at ten heartbeats or more);
/// - the renewal request in flight may hang until its timeout (`ttl/8`), and the retry comes
///   `ttl/20` after that.
///
/// So `ttl - margin - ttl/8 - ttl/8 - ttl/20 >= 2.5 E`. A split vote (both surviving members
/// time out within one round trip of each other, which the randomized timeout makes rare)
/// costs another E to 2E and is not covered.
pub fn min_safe_ttl_etcd(election_timeout: Duration, safety_margin: Option<Duration>) -> Duration {
    let e = election_timeout.as_secs_f64();
    let store = 2.5 * e;
    let client = 1.0 / f64::from(RENEW_DIVISOR)
        + 1.0 / f64::from(ETCD_REQUEST_DIVISOR)
        + 1.0 / f64::from(RETRY_DIVISOR);
    let secs = match safety_margin {
        // ttl * (1 - margin - client) >= store, margin = ttl/4
        None => store / (1.0 - 0.25 - client),
        // ttl * (1 - client) >= store + margin
        Some(m) => (store + m.as_secs_f64()) / (1.0 - client),
    };
    round_up_100ms(secs)
}

/// `[cluster]` with etcd: the lease must outlast one etcd leader election (`min_safe_ttl_etcd`).
pub(crate) fn validate_etcd(c: &ClusterConfig, issues: &mut Vec<Issue>) {
    if c.dcs != crate::config::DcsKind::Etcd {
        if c.etcd_election_timeout.is_some() {
            issues.push(Issue::new(
                "cluster.etcd_election_timeout",
                "only used with dcs = \"etcd\"",
            ));
        }
        return;
    }
    let e = c.etcd_election_timeout();
    // etcd itself refuses an election timeout above 50 s.
    if e < Duration::from_millis(10) || e > Duration::from_secs(50) {
        issues.push(Issue::new(
            "cluster.etcd_election_timeout",
            "must be between 10ms and 50s (etcd's --election-timeout)",
        ));
        return;
    }
    let min = min_safe_ttl_etcd(e, c.safety_margin.map(|m| m.get()));
    if c.lease_ttl.get() < min {
        let stated = if c.etcd_election_timeout.is_some() {
            "with etcd_election_timeout"
        } else {
            "with etcd's default election timeout"
        };
        issues.push(Issue::new(
            "cluster.lease_ttl",
            format!(
                "{} is too short to ride out an etcd leader election: {stated} {} the smallest \
                 safe lease_ttl is {}{}; raise lease_ttl, or state etcd_election_timeout if the \
                 etcd cluster runs with a shorter --election-timeout",
                readable(c.lease_ttl.get()),
                readable(e),
                readable(min),
                if c.safety_margin.is_some() {
                    " (with this safety_margin)"
                } else {
                    ""
                },
            ),
        ));
    }
}

/// A duration as an operator writes it in the config: `"7.7s"`, `"800ms"`.
pub fn readable(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else if ms.is_multiple_of(100) {
        format!("{}.{}s", ms / 1000, (ms % 1000) / 100)
    } else {
        format!("{ms}ms")
    }
}

fn round_up_100ms(secs: f64) -> Duration {
    // A hair under a step (float error) does not push the result to the next one.
    let steps = (secs * 10.0 - 1e-9).ceil().max(0.0);
    Duration::from_millis((steps as u64).saturating_mul(100))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn etcd_defaults_need_a_ttl_of_5_6s() {
        // 2.5 s / (1 - 1/4 - 1/8 - 1/8 - 1/20) = 2.5 s / 0.45 = 5.56 s
        assert_eq!(min_safe_ttl_etcd(ms(1000), None), ms(5600));
    }

    #[test]
    fn shorter_election_timeouts_scale_down() {
        assert_eq!(min_safe_ttl_etcd(ms(100), None), ms(600));
        assert_eq!(min_safe_ttl_etcd(ms(200), None), ms(1200));
        assert_eq!(min_safe_ttl_etcd(ms(5000), None), ms(27_800));
    }

    #[test]
    fn an_explicit_margin_counts_in_full() {
        // (2.5 s + 0.5 s) / (1 - 0.3) = 4.29 s
        assert_eq!(min_safe_ttl_etcd(ms(1000), Some(ms(500))), ms(4300));
        // A larger margin needs a longer ttl.
        assert!(min_safe_ttl_etcd(ms(1000), Some(ms(3000))) > ms(5600));
    }

    #[test]
    fn the_bound_leaves_the_renewal_time_to_get_through() {
        // At the stated minimum, the time between the failure and the end of the lease covers
        // two election timeouts, the round trips, one hung request and the retry's wait.
        for e in [ms(50), ms(100), ms(1000), ms(2500)] {
            let ttl = min_safe_ttl_etcd(e, None);
            let lease_left = ttl - ttl / 4 - renew_every(ttl);
            let needed = e * 5 / 2 + etcd_request_timeout(ttl) + ttl / RETRY_DIVISOR;
            assert!(
                lease_left >= needed,
                "E = {e:?}: {lease_left:?} < {needed:?}"
            );
            // And 100 ms less would not.
            let shorter = ttl - ms(100);
            let left = shorter - shorter / 4 - renew_every(shorter);
            let need = e * 5 / 2 + etcd_request_timeout(shorter) + shorter / RETRY_DIVISOR;
            assert!(left < need, "E = {e:?}: {shorter:?} is enough already");
        }
    }

    #[test]
    fn rounding_is_up_to_the_next_100ms() {
        assert_eq!(round_up_100ms(0.7692), ms(800));
        assert_eq!(round_up_100ms(0.8), ms(800));
        assert_eq!(round_up_100ms(0.80001), ms(900));
    }

    #[test]
    fn readable_durations_parse_back() {
        for (d, text) in [
            (ms(800), "800ms"),
            (ms(7700), "7.7s"),
            (ms(2000), "2s"),
            (ms(1250), "1250ms"),
        ] {
            assert_eq!(readable(d), text);
            assert_eq!(
                text.parse::<tandem_core::HumanDuration>().map(|h| h.get()),
                Ok(d)
            );
        }
    }
}
