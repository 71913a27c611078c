//! How a session's life ends, for every door: at its deadline (token,
//! lifetime or grant expiry), when its grant is revoked, or when an
//! administrator ends it.

use airlock_engine::open::{self, Cut};

/// Resolves with why, once `watch` says: the session's grant was revoked,
/// or an administrator ended it.
pub(crate) async fn told(
    watch: &mut Option<tokio::sync::watch::Receiver<Option<String>>>,
) -> String {
    if let Some(rx) = watch {
        loop {
            if let Some(why) = rx.borrow_and_update().clone() {
                return why;
            }
            if rx.changed().await.is_err() {
                break;
            }
        }
    }
    std::future::pending().await
}

/// Resolves at the session's deadline, with why it ends, or when the
/// gateway ends its sessions (its shutdown's grace is over).
pub(crate) async fn cut_at(
    clock: &dyn airlock_engine::clock::Clock,
    deadline: &Option<open::Deadline>,
    terminate: &mut tokio::sync::watch::Receiver<bool>,
) -> Cut {
    let at_deadline = async {
        match deadline {
            Some(d) => {
                clock.sleep_until(d.at).await;
                d.why.clone()
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        why = at_deadline => why,
        _ = terminated(terminate) => Cut::Shutdown,
    }
}

/// Resolves once the gateway ends its sessions.
pub(crate) async fn terminated(terminate: &mut tokio::sync::watch::Receiver<bool>) {
    if terminate.wait_for(|t| *t).await.is_err() {
        std::future::pending::<()>().await;
    }
}
