use super::*;

fn inst(priority: u8, preempt: bool) -> Instance {
    Instance::new(Config {
        vrid: 51,
        priority,
        interval_cs: 100,
        preempt,
        version: Version::V3,
        primary_ip: Ipv4Addr::new(10, 0, 0, 2),
    })
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn changed_to(actions: &[Action]) -> Option<State> {
    actions.iter().find_map(|a| match a {
        Action::Changed { to, .. } => Some(*to),
        _ => None,
    })
}

#[test]
fn timers_follow_rfc_5798() {
    let i = inst(150, true);
    // Skew = (256 - 150) * 100 / 256 = 41 cs; MDI = 300 + 41 cs.
    assert_eq!(i.skew(), ms(410));
    assert_eq!(i.master_down_interval(), ms(3410));
}

#[test]
fn a_backup_becomes_master_when_adverts_stop() {
    let t0 = Instant::now();
    let mut i = inst(100, true);
    i.handle(t0, Event::Startup);
    assert_eq!(i.state(), State::Backup);
    let mdi = i.master_down_interval();
    assert!(i.handle(t0 + mdi - ms(10), Event::Tick).is_empty());
    let a = i.handle(t0 + mdi, Event::Tick);
    assert_eq!(changed_to(&a), Some(State::Master));
    assert!(a.contains(&Action::AddAddresses) && a.contains(&Action::Garp));
    // Then it advertises every interval.
    assert_eq!(
        i.handle(t0 + mdi + ms(1000), Event::Tick),
        vec![Action::Send { priority: 100 }]
    );
}

#[test]
fn adverts_keep_a_backup_backup() {
    let t0 = Instant::now();
    let mut i = inst(100, true);
    i.handle(t0, Event::Startup);
    let master = Ipv4Addr::new(10, 0, 0, 1);
    i.handle(
        t0 + ms(3000),
        Event::Advert {
            from: master,
            priority: 150,
            interval_cs: 100,
        },
    );
    assert!(i.handle(t0 + ms(4000), Event::Tick).is_empty());
    assert_eq!(i.state(), State::Backup);
}

#[test]
fn priority_zero_means_take_over_after_skew() {
    let t0 = Instant::now();
    let mut i = inst(100, true);
    i.handle(t0, Event::Startup);
    i.handle(
        t0 + ms(100),
        Event::Advert {
            from: Ipv4Addr::new(10, 0, 0, 1),
            priority: 0,
            interval_cs: 100,
        },
    );
    let skew = i.skew();
    let a = i.handle(t0 + ms(100) + skew, Event::Tick);
    assert_eq!(changed_to(&a), Some(State::Master));
    assert!(
        a.iter()
            .any(|a| matches!(a, Action::Changed { reason, .. } if reason.contains("priority 0"))),
        "{a:?}"
    );
}

#[test]
fn tracked_priority_holds_while_out_of_service() {
    let t0 = Instant::now();
    let mut i = inst(100, true);
    i.handle(t0, Event::Startup);
    i.handle(t0, Event::Shutdown);
    i.handle(t0, Event::Priority(80));
    i.handle(t0, Event::Startup);
    assert_eq!((i.state(), i.priority()), (State::Backup, 80));
}

#[test]
fn preemption_follows_priority_and_the_setting() {
    let t0 = Instant::now();
    let lower = Ipv4Addr::new(10, 0, 0, 1);
    // With preempt, a lower master's adverts are ignored: we take over when our timer ends.
    let mut p = inst(200, true);
    p.handle(t0, Event::Startup);
    p.handle(
        t0 + ms(100),
        Event::Advert {
            from: lower,
            priority: 100,
            interval_cs: 100,
        },
    );
    let a = p.handle(t0 + p.master_down_interval(), Event::Tick);
    assert_eq!(changed_to(&a), Some(State::Master));
    // Without preempt, they keep us backup.
    let mut n = inst(200, false);
    n.handle(t0, Event::Startup);
    n.handle(
        t0 + ms(3000),
        Event::Advert {
            from: lower,
            priority: 100,
            interval_cs: 100,
        },
    );
    assert!(n.handle(t0 + ms(4000), Event::Tick).is_empty());
}

#[test]
fn a_master_yields_to_a_higher_one_and_keeps_a_lower_one_out() {
    let t0 = Instant::now();
    let mut m = inst(255, true);
    let a = m.handle(t0, Event::Startup);
    assert_eq!(
        changed_to(&a),
        Some(State::Master),
        "address owner starts as master"
    );
    // A lower master (a healed partition): stay, assert, and send gratuitous ARPs again.
    let a = m.handle(
        t0 + ms(10),
        Event::Advert {
            from: Ipv4Addr::new(10, 0, 0, 9),
            priority: 100,
            interval_cs: 100,
        },
    );
    assert_eq!(a, vec![Action::Send { priority: 255 }, Action::Garp]);
    let mut m = inst(100, true);
    m.handle(t0, Event::Startup);
    m.handle(t0 + m.master_down_interval(), Event::Tick);
    // Equal priority: the higher address wins.
    let a = m.handle(
        t0 + ms(5000),
        Event::Advert {
            from: Ipv4Addr::new(10, 0, 0, 3),
            priority: 100,
            interval_cs: 100,
        },
    );
    assert_eq!(changed_to(&a), Some(State::Backup));
    assert!(a.contains(&Action::RemoveAddresses));
    // The loser's last advertisement goes out before it yields, so the winner hears it.
    assert_eq!(a.first(), Some(&Action::Send { priority: 100 }));
}

#[test]
fn shutdown_of_a_master_sends_priority_zero() {
    let t0 = Instant::now();
    let mut m = inst(255, true);
    m.handle(t0, Event::Startup);
    let a = m.handle(t0 + ms(10), Event::Shutdown);
    assert!(a.contains(&Action::Send { priority: 0 }) && a.contains(&Action::RemoveAddresses));
    assert_eq!(m.state(), State::Initialize);
}
