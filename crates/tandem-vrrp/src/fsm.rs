//! The VRRP instance state machine (RFC 5798 section 6.4) as a decision engine: it takes
//! events with a `now` and returns actions; timers are deadlines the caller sleeps until and
//! reports as `Event::Tick`. Every state change goes through `change`, which logs the reason and
//! runs the side effects for the (old, new) pair.

use std::net::Ipv4Addr;
use std::time::Duration;

use tandem_core::clock::Instant;

use crate::packet::Version;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Initialize,
    Backup,
    Master,
}

/// Static settings of one virtual router.
#[derive(Clone, Debug)]
pub struct Config {
    pub vrid: u8,
    /// 1-254, or 255 for the address owner.
    pub priority: u8,
    /// Our advertisement interval in centiseconds.
    pub interval_cs: u16,
    pub preempt: bool,
    pub version: Version,
    /// Our primary address on the interface, for ties between equal priorities.
    pub primary_ip: Ipv4Addr,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Startup,
    Shutdown,
    /// A valid advertisement for our VRID from another router.
    Advert {
        from: Ipv4Addr,
        priority: u8,
        interval_cs: u16,
    },
    /// A timer deadline passed (or any wake-up).
    Tick,
    /// Tracking changed our effective priority.
    Priority(u8),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send an advertisement with this priority.
    Send { priority: u8 },
    /// Configure the virtual addresses on the interface.
    AddAddresses,
    /// Remove them.
    RemoveAddresses,
    /// Send gratuitous ARPs for the virtual addresses.
    Garp,
    /// The state changed (log, metrics, event, notify script).
    Changed {
        from: State,
        to: State,
        reason: String,
    },
}

/// One virtual router.
#[derive(Debug)]
pub struct Instance {
    cfg: Config,
    state: State,
    priority: u8,
    /// The master's advertisement interval (v3 learns it from the master's adverts).
    master_adver_cs: u16,
    master_down_at: Option<Instant>,
    adver_at: Option<Instant>,
    /// The master said it is leaving (priority 0): the takeover reason says so.
    master_left: bool,
}

fn cs(n: u32) -> Duration {
    Duration::from_millis(u64::from(n) * 10)
}

impl Instance {
    pub fn new(cfg: Config) -> Self {
        Self {
            priority: cfg.priority,
            master_adver_cs: cfg.interval_cs,
            cfg,
            state: State::Initialize,
            master_down_at: None,
            adver_at: None,
            master_left: false,
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// Turn preemption on or off (a preempt delay keeps it off for a while after startup).
    pub fn set_preempt(&mut self, preempt: bool) {
        self.cfg.preempt = preempt;
    }

    pub fn priority(&self) -> u8 {
        self.priority
    }

    /// Skew_Time = ((256 - Priority) * Master_Adver_Interval) / 256 (RFC 5798 6.1).
    pub fn skew(&self) -> Duration {
        cs((256 - u32::from(self.priority)) * u32::from(self.master_adver_cs) / 256)
    }

    /// Master_Down_Interval = 3 * Master_Adver_Interval + Skew_Time.
    pub fn master_down_interval(&self) -> Duration {
        cs(3 * u32::from(self.master_adver_cs)) + self.skew()
    }

    /// The next timer deadline, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        match self.state {
            State::Master => self.adver_at,
            State::Backup => self.master_down_at,
            State::Initialize => None,
        }
    }

    pub fn handle(&mut self, now: Instant, ev: Event) -> Vec<Action> {
        let mut out = Vec::new();
        match (self.state, ev) {
            (State::Initialize, Event::Startup) => {
                if self.priority == 255 {
                    self.change(
                        now,
                        State::Master,
                        "address owner (priority 255) starts as master",
                        &mut out,
                    );
                } else {
                    self.change(now, State::Backup, "started", &mut out);
                }
            }
            (_, Event::Priority(p)) => {
                // Also while out of service, so a restart uses the tracked priority.
                self.priority = p;
                if self.state == State::Master {
                    // Tell the others at once, so a higher backup can preempt.
                    out.push(Action::Send { priority: p });
                }
            }
            (State::Initialize, _) | (_, Event::Startup) => {}
            (_, Event::Shutdown) => self.change(now, State::Initialize, "shutting down", &mut out),
            (State::Backup, Event::Tick) => {
                if self.master_down_at.is_some_and(|t| now >= t) {
                    let why = if self.master_left {
                        "the master left (priority 0 advertisement)"
                    } else {
                        "no advertisement within Master_Down_Interval"
                    };
                    self.change(now, State::Master, why, &mut out);
                }
            }
            (State::Master, Event::Tick) => {
                if self.adver_at.is_some_and(|t| now >= t) {
                    out.push(Action::Send {
                        priority: self.priority,
                    });
                    self.adver_at = Some(now + cs(u32::from(self.cfg.interval_cs)));
                }
            }
            (
                State::Backup,
                Event::Advert {
                    priority,
                    interval_cs,
                    ..
                },
            ) => {
                self.master_left = priority == 0;
                if priority == 0 {
                    // RFC 5798 6.4.2: the master is leaving; take over after Skew_Time.
                    self.master_down_at = Some(now + self.skew());
                } else if !self.cfg.preempt || priority >= self.priority {
                    if self.cfg.version == Version::V3 {
                        self.master_adver_cs = interval_cs.max(1);
                    }
                    self.master_down_at = Some(now + self.master_down_interval());
                }
                // else: preempt, and a lower-priority master: let its timer run out.
            }
            (
                State::Master,
                Event::Advert {
                    from,
                    priority,
                    interval_cs,
                },
            ) => {
                if priority == 0 {
                    out.push(Action::Send {
                        priority: self.priority,
                    });
                    self.adver_at = Some(now + cs(u32::from(self.cfg.interval_cs)));
                } else if priority > self.priority
                    || (priority == self.priority && from > self.cfg.primary_ip)
                {
                    if self.cfg.version == Version::V3 {
                        self.master_adver_cs = interval_cs.max(1);
                    }
                    // One last advertisement before yielding: if the winner has not heard
                    // ours since a partition healed, it learns there were two masters and
                    // announces the addresses again (see the branch below). To every backup it
                    // is an ordinary advertisement.
                    out.push(Action::Send {
                        priority: self.priority,
                    });
                    let why = format!("higher-priority master {from} (priority {priority})");
                    self.change(now, State::Backup, &why, &mut out);
                } else {
                    // Another master that loses to us (a healed partition): reclaim the
                    // clients' ARP caches now, not when they expire.
                    out.push(Action::Send {
                        priority: self.priority,
                    });
                    out.push(Action::Garp);
                }
            }
        }
        out
    }

    /// The one place the state changes.
    fn change(&mut self, now: Instant, to: State, reason: &str, out: &mut Vec<Action>) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        out.push(Action::Changed {
            from,
            to,
            reason: reason.to_string(),
        });
        match to {
            State::Master => {
                out.push(Action::AddAddresses);
                out.push(Action::Send {
                    priority: self.priority,
                });
                out.push(Action::Garp);
                self.master_down_at = None;
                self.adver_at = Some(now + cs(u32::from(self.cfg.interval_cs)));
            }
            State::Backup => {
                if from == State::Master {
                    out.push(Action::RemoveAddresses);
                }
                self.adver_at = None;
                self.master_down_at = Some(now + self.master_down_interval());
            }
            State::Initialize => {
                if from == State::Master {
                    // RFC 5798 6.4.3: priority 0 lets a backup take over after Skew_Time.
                    out.push(Action::Send { priority: 0 });
                    out.push(Action::RemoveAddresses);
                }
                self.adver_at = None;
                self.master_down_at = None;
            }
        }
    }
}

#[cfg(test)]
mod tests;
