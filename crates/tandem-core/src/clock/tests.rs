use std::time::Duration;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test(start_paused = true)]
async fn now_counts_a_suspend_and_never_goes_back() {
    let a = now();
    tokio::time::advance(ms(100)).await;
    let b = now();
    assert!(b >= a + ms(100));
    // The host sleeps for 5 s: tokio's clock does not move, ours does.
    let tokio_before = Instant::now();
    simulate_suspend(Duration::from_secs(5));
    let c = now();
    assert_eq!(Instant::now(), tokio_before);
    assert!(c >= b + Duration::from_secs(5), "{:?}", c - b);
    let mut last = c;
    for _ in 0..1000 {
        let t = now();
        assert!(t >= last);
        last = t;
    }
    assert!(suspended() >= Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn sleep_until_takes_the_suspend_back_out() {
    let deadline = now() + ms(1000);
    simulate_suspend(ms(400));
    let started = Instant::now();
    sleep_until(deadline).await;
    // 600 ms of tokio's timers are left, not 1000.
    let slept = Instant::now() - started;
    assert!(slept >= ms(599) && slept <= ms(601), "{slept:?}");
    assert!(now() >= deadline);
}

#[tokio::test(start_paused = true)]
async fn a_deadline_passed_during_a_suspend_is_due_at_once() {
    let deadline = now() + ms(1000);
    simulate_suspend(ms(2500));
    let started = Instant::now();
    sleep_until(deadline).await;
    assert!(Instant::now() - started <= ms(1));
    let r = timeout_at(deadline, std::future::pending::<()>()).await;
    assert!(r.is_err());
    assert!(Instant::now() - started <= ms(1));
}

#[test]
fn boottime_ns_moves_forward_and_counts_a_suspend() {
    let a = boottime_ns();
    std::thread::sleep(ms(2));
    let b = boottime_ns();
    assert!(a > 0 && b >= a + 2_000_000, "{a} {b}");
    simulate_suspend(Duration::from_secs(3));
    assert!(boottime_ns() >= b + 3_000_000_000);
}

/// On this kernel: both clocks can be read, BOOTTIME is never behind MONOTONIC, and with no
/// suspend the counted suspended time does not move.
#[test]
fn the_kernel_offset_is_read_and_stable() {
    let mono = read(libc::CLOCK_MONOTONIC);
    let boot = read(libc::CLOCK_BOOTTIME);
    let (Some(mono), Some(boot)) = (mono, boot) else {
        panic!("clock_gettime failed for CLOCK_MONOTONIC or CLOCK_BOOTTIME");
    };
    assert!(boot >= mono, "BOOTTIME {boot} behind MONOTONIC {mono}");
    assert!(boot_minus_mono().is_some());
    let first = real_suspended_ns();
    assert_eq!(first % MS, 0);
    for _ in 0..10_000 {
        assert_eq!(real_suspended_ns(), first);
    }
}
