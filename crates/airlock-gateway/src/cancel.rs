//! Cancel routing.
//!
//! Each client gets a BackendKeyData minted by the gateway, never the
//! upstream's: the upstream key would let anyone who reaches the database
//! directly cancel the session's queries, and it would tell the client which
//! backend it has. A CancelRequest to the gateway is looked up here and
//! forwarded to the upstream with the upstream's key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// Where a cancel for one session goes.
#[derive(Debug, Clone)]
pub struct CancelTarget {
    pub host: String,
    pub port: u16,
    pub process_id: i32,
    pub secret_key: i32,
}

#[derive(Debug, Default)]
pub struct CancelRegistry {
    by_pid: Mutex<HashMap<i32, (i32, CancelTarget)>>,
}

/// Removes its key from the registry when the session ends.
#[derive(Debug)]
pub struct CancelKey {
    registry: Arc<CancelRegistry>,
    pub process_id: i32,
    pub secret_key: i32,
}

impl Drop for CancelKey {
    fn drop(&mut self) {
        self.registry
            .by_pid
            .lock()
            .unwrap()
            .remove(&self.process_id);
    }
}

impl CancelRegistry {
    /// Mints a fresh key for a session whose upstream is `target`.
    pub fn register(self: &Arc<Self>, target: CancelTarget) -> CancelKey {
        let secret_key = rand::random::<i32>();
        let mut map = self
            .by_pid
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let process_id = loop {
            // Positive, like a real backend pid, and unique among live sessions.
            let pid = rand::random::<i32>() & 0x7fff_ffff;
            if pid != 0 && !map.contains_key(&pid) {
                break pid;
            }
        };
        map.insert(process_id, (secret_key, target));
        CancelKey {
            registry: Arc::clone(self),
            process_id,
            secret_key,
        }
    }

    /// The upstream target for a client's key, if the key is live and the
    /// secret matches.
    pub fn lookup(&self, process_id: i32, secret_key: i32) -> Option<CancelTarget> {
        let map = self
            .by_pid
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (secret, target) = map.get(&process_id)?;
        // Compare without an early exit on the first differing bit.
        ((secret ^ secret_key) == 0).then(|| target.clone())
    }

    /// Forwards a client's CancelRequest upstream. Unknown keys are ignored,
    /// as PostgreSQL ignores them.
    pub async fn cancel(&self, process_id: i32, secret_key: i32) {
        let Some(t) = self.lookup(process_id, secret_key) else {
            tracing::info!("cancel request with an unknown key ignored");
            return;
        };
        t.send().await;
    }
}

impl CancelTarget {
    /// Sends the upstream a CancelRequest for this backend.
    pub async fn send(&self) {
        let t = self;
        let mut buf = bytes::BytesMut::new();
        airlock_pgwire::codec::cancel_request(t.process_id, t.secret_key, &mut buf);
        match TcpStream::connect((t.host.as_str(), t.port)).await {
            Ok(mut s) => {
                if let Err(e) = s.write_all(&buf).await {
                    tracing::warn!(error = %e, "forwarding a cancel request failed");
                } else {
                    // Wait for the server to close, so the cancel has been
                    // read before we return.
                    let _ = tokio::io::AsyncReadExt::read(&mut s, &mut [0u8; 1]).await;
                    tracing::info!("cancel request forwarded upstream");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot reach the upstream to cancel"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> CancelTarget {
        CancelTarget {
            host: "127.0.0.1".into(),
            port: 5432,
            process_id: 77,
            secret_key: 88,
        }
    }

    #[test]
    fn keys_map_to_upstream_keys_and_expire_with_the_session() {
        let reg = Arc::new(CancelRegistry::default());
        let key = reg.register(target());
        assert!(key.process_id > 0);
        let t = reg.lookup(key.process_id, key.secret_key).unwrap();
        assert_eq!((t.process_id, t.secret_key), (77, 88));
        assert!(reg.lookup(key.process_id, key.secret_key ^ 1).is_none());
        let (pid, secret) = (key.process_id, key.secret_key);
        drop(key);
        assert!(reg.lookup(pid, secret).is_none());
    }

    #[test]
    fn keys_are_unique() {
        let reg = Arc::new(CancelRegistry::default());
        let keys: Vec<_> = (0..1000).map(|_| reg.register(target())).collect();
        let mut pids: Vec<_> = keys.iter().map(|k| k.process_id).collect();
        pids.sort();
        pids.dedup();
        assert_eq!(pids.len(), 1000);
    }
}
