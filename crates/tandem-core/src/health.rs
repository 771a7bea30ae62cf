//! Rise/fall hysteresis: the decision engine behind a server's (or a service's) up/down state.
//! No I/O: it takes check results and returns transitions; the task around it does the probing.

use std::time::Duration;

/// A server's health as the balancer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Up,
    Down,
}

/// One observation about a server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    /// An active check passed.
    Passed,
    /// An active check failed, with the reason.
    Failed(String),
    /// The request path saw `fall` consecutive failures: down at once.
    PassiveDown(String),
}

/// A change of status, with the reason to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub to: Status,
    pub reason: String,
}

/// Hysteresis state for one server: `rise` consecutive passes bring it up, `fall` consecutive
/// failures take it down; passive detection takes it down at once.
#[derive(Clone, Debug)]
pub struct Hysteresis {
    status: Status,
    /// Consecutive observations pointing at the other status.
    streak: u32,
    rise: u32,
    fall: u32,
}

impl Hysteresis {
    pub fn new(rise: u32, fall: u32, initial: Status) -> Self {
        Self {
            status: initial,
            streak: 0,
            rise: rise.max(1),
            fall: fall.max(1),
        }
    }

    pub fn status(&self) -> Status {
        self.status
    }

    /// True while observations point away from the current status (then check faster).
    pub fn changing(&self) -> bool {
        self.streak > 0
    }

    /// Interval to the next check: `fast` while the status is changing, `normal` otherwise.
    pub fn next_interval(&self, normal: Duration) -> Duration {
        if self.changing() {
            (normal / 4).max(Duration::from_millis(10)).min(normal)
        } else {
            normal
        }
    }

    pub fn handle(&mut self, input: Input) -> Option<Transition> {
        match (self.status, input) {
            (Status::Up, Input::Passed) | (Status::Down, Input::Failed(_)) => {
                self.streak = 0;
                None
            }
            (Status::Down, Input::PassiveDown(_)) => {
                self.streak = 0;
                None
            }
            (Status::Down, Input::Passed) => {
                self.streak += 1;
                (self.streak >= self.rise).then(|| {
                    let reason = format!("{} consecutive checks passed", self.streak);
                    self.set(Status::Up, reason)
                })
            }
            (Status::Up, Input::Failed(why)) => {
                self.streak += 1;
                (self.streak >= self.fall).then(|| {
                    let reason = format!("{} consecutive checks failed, last: {why}", self.streak);
                    self.set(Status::Up.flip(), reason)
                })
            }
            (Status::Up, Input::PassiveDown(why)) => Some(self.set(Status::Down, why)),
        }
    }

    fn set(&mut self, to: Status, reason: String) -> Transition {
        self.status = to;
        self.streak = 0;
        Transition { to, reason }
    }
}

impl Status {
    fn flip(self) -> Status {
        match self {
            Status::Up => Status::Down,
            Status::Down => Status::Up,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fail() -> Input {
        Input::Failed("refused".into())
    }

    #[test]
    fn starts_down_and_needs_rise_passes() {
        let mut h = Hysteresis::new(2, 3, Status::Down);
        assert_eq!(h.handle(Input::Passed), None);
        assert!(h.changing());
        let t = h.handle(Input::Passed);
        assert_eq!(t.map(|t| t.to), Some(Status::Up));
        assert!(!h.changing());
    }

    #[test]
    fn a_failure_resets_the_rise_streak() {
        let mut h = Hysteresis::new(2, 3, Status::Down);
        h.handle(Input::Passed);
        h.handle(fail());
        assert_eq!(h.handle(Input::Passed), None);
        assert_eq!(h.status(), Status::Down);
    }

    #[test]
    fn falls_after_fall_failures_with_reason() {
        let mut h = Hysteresis::new(2, 3, Status::Up);
        assert_eq!(h.handle(fail()), None);
        assert_eq!(h.handle(fail()), None);
        let t = h.handle(fail());
        assert_eq!(t.as_ref().map(|t| t.to), Some(Status::Down));
        assert!(t.map(|t| t.reason.contains("refused")).unwrap_or(false));
    }

    #[test]
    fn a_pass_resets_the_fall_streak() {
        let mut h = Hysteresis::new(2, 2, Status::Up);
        h.handle(fail());
        h.handle(Input::Passed);
        assert_eq!(h.handle(fail()), None);
        assert_eq!(h.status(), Status::Up);
    }

    #[test]
    fn passive_down_is_immediate_and_needs_rise_to_return() {
        let mut h = Hysteresis::new(2, 3, Status::Up);
        let t = h.handle(Input::PassiveDown("3 consecutive request failures".into()));
        assert_eq!(t.map(|t| t.to), Some(Status::Down));
        assert_eq!(h.handle(Input::Passed), None);
        assert_eq!(h.handle(Input::Passed).map(|t| t.to), Some(Status::Up));
    }

    #[test]
    fn checks_faster_while_changing() {
        let mut h = Hysteresis::new(2, 3, Status::Up);
        let normal = Duration::from_secs(1);
        assert_eq!(h.next_interval(normal), normal);
        h.handle(fail());
        assert_eq!(h.next_interval(normal), Duration::from_millis(250));
    }
}
