//! Time, injected: the engine and its doors read the wall clock through a
//! [`Clock`], so tests can move it instead of waiting for it.
//!
//! What uses it: token verification and a session's lifetime and grant
//! deadlines (`open`). Timeouts that only bound a wait (a hold's, a
//! connect's) are tokio timers, which tests pause instead.

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

/// A wall clock and a way to wait for it.
pub trait Clock: Send + Sync {
    fn now(&self) -> SystemTime;
    /// Resolves once [`Clock::now`] has reached `at`.
    fn sleep_until(&self, at: SystemTime) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The system's clock, with tokio's timer.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn sleep_until(&self, at: SystemTime) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let left = at.duration_since(SystemTime::now()).unwrap_or_default();
        Box::pin(tokio::time::sleep(left))
    }
}

/// A clock that moves only when told to (tests).
pub struct ManualClock {
    now: tokio::sync::watch::Sender<SystemTime>,
}

impl ManualClock {
    pub fn new(start: SystemTime) -> ManualClock {
        ManualClock {
            now: tokio::sync::watch::Sender::new(start),
        }
    }

    /// Moves the clock forward, waking whoever waits for a time now past.
    pub fn advance(&self, by: std::time::Duration) {
        self.now.send_modify(|now| *now += by);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.now.borrow()
    }

    fn sleep_until(&self, at: SystemTime) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut rx = self.now.subscribe();
        Box::pin(async move {
            // The sender lives as long as `self`: `changed` cannot fail.
            while *rx.borrow_and_update() < at {
                if rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_manual_clock_wakes_sleepers_when_moved_past_their_time() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(100);
        let clock = ManualClock::new(start);
        let mut sleep = clock.sleep_until(start + Duration::from_secs(10));
        assert!(futures_poll(&mut sleep).is_pending());
        clock.advance(Duration::from_secs(5));
        assert!(futures_poll(&mut sleep).is_pending());
        clock.advance(Duration::from_secs(5));
        assert!(futures_poll(&mut sleep).is_ready());
        assert_eq!(clock.now(), start + Duration::from_secs(10));
    }

    fn futures_poll<F: Future + Unpin>(f: &mut F) -> std::task::Poll<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        Pin::new(f).poll(&mut cx)
    }
}
