//! Console logins: a random session id in an `HttpOnly`, `SameSite=Lax`
//! cookie (`Secure` behind TLS) names a server-side [`Session`] holding the
//! token and a CSRF token. A cookie that names no live session (forged,
//! expired, or from before a restart) is no login at all.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use airlock_api::Caller;
use aws_lc_rs::rand::{SecureRandom as _, SystemRandom};
use axum::http::HeaderMap;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// The session cookie.
pub const COOKIE: &str = "airlock_console";
/// The cookie that ties a login in progress to the browser that began it.
pub const LOGIN_COOKIE: &str = "airlock_login";
/// The most console logins kept at once; the one that would expire first
/// makes room for a new one.
const MAX_SESSIONS: usize = 10_000;
/// The most logins one subject keeps (a new one ends its oldest): nobody
/// can crowd the others out.
const MAX_PER_SUBJECT: usize = 10;
/// The most live-queue streams one login keeps open.
pub const MAX_STREAMS: usize = 4;

/// One person's console login.
pub struct Session {
    /// Who, as the API authenticated the token.
    pub caller: Caller,
    /// The token every API call is made with.
    pub token: String,
    /// Every form and state-changing request must carry it.
    pub csrf: String,
    pub expires: SystemTime,
    /// Set when the login ends (logout): its streams stop.
    ended: AtomicBool,
    /// Live-queue streams open.
    streams: AtomicUsize,
}

/// One of a login's live-queue streams, while it is open.
pub struct Stream(Arc<Session>);

impl Stream {
    pub fn session(&self) -> &Session {
        &self.0
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Session {
    /// Whether the login still holds (not logged out, not expired).
    pub fn live(&self) -> bool {
        !self.ended.load(Ordering::SeqCst) && self.expires > SystemTime::now()
    }

    /// A live-queue stream of this login, unless it has [`MAX_STREAMS`].
    pub fn stream(self: &Arc<Self>) -> Option<Stream> {
        let open = self.streams.fetch_add(1, Ordering::SeqCst);
        let stream = Stream(Arc::clone(self));
        (open < MAX_STREAMS).then_some(stream)
    }

    /// Whether `token` is this session's CSRF token (in constant time).
    pub fn csrf_ok(&self, token: Option<&str>) -> bool {
        token.is_some_and(|t| {
            aws_lc_rs::constant_time::verify_slices_are_equal(t.as_bytes(), self.csrf.as_bytes())
                .is_ok()
        })
    }
}

/// The logins, by session id.
#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Arc<Session>>>,
}

impl Sessions {
    /// Starts a session; its id goes in the cookie.
    pub fn create(&self, caller: Caller, token: String, expires: SystemTime) -> String {
        let id = random_token();
        let who = (caller.principal.issuer.clone(), caller.subject.clone());
        let session = Arc::new(Session {
            caller,
            token,
            csrf: random_token(),
            expires,
            ended: AtomicBool::new(false),
            streams: AtomicUsize::new(0),
        });
        let mut map = self.lock();
        let now = SystemTime::now();
        map.retain(|_, s| s.expires > now);
        let same =
            |s: &Session| (&s.caller.principal.issuer, &s.caller.subject) == (&who.0, &who.1);
        if map.values().filter(|s| same(s)).count() >= MAX_PER_SUBJECT {
            evict(&mut map, same);
        }
        if map.len() >= MAX_SESSIONS {
            evict(&mut map, |_| true);
        }
        map.insert(id.clone(), session);
        id
    }

    /// The live session the request's cookie names.
    pub fn get(&self, headers: &HeaderMap) -> Option<Arc<Session>> {
        let id = cookie(headers, COOKIE)?;
        let mut map = self.lock();
        let session = map.get(id)?;
        if session.expires <= SystemTime::now() {
            map.remove(id);
            return None;
        }
        Some(Arc::clone(session))
    }

    /// Ends the session the request's cookie names.
    pub fn remove(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, COOKIE)
            && let Some(s) = self.lock().remove(id)
        {
            s.ended.store(true, Ordering::SeqCst);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.map
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Ends the login among `which` that would expire first.
fn evict(map: &mut HashMap<String, Arc<Session>>, which: impl Fn(&Session) -> bool) {
    let first = map
        .iter()
        .filter(|(_, s)| which(s))
        .min_by_key(|(_, s)| s.expires)
        .map(|(k, _)| k.clone());
    if let Some(s) = first.and_then(|k| map.remove(&k)) {
        s.ended.store(true, Ordering::SeqCst);
    }
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Lax`, path `/console`,
/// `Secure` when `secure`; `max_age` seconds (0 deletes it).
pub fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; Path=/console; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

/// 256 random bits, base64url.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn caller() -> Caller {
        let principal = airlock_policy::Principal {
            issuer_name: "dev".into(),
            issuer: "airlock-dev".into(),
            subject: "alice".into(),
            groups: vec![],
            act: None,
            token_id: None,
            expires_at: SystemTime::now(),
            claims: airlock_policy::claims::Claims::default(),
            act_chain: vec![],
        };
        Caller {
            subject: "alice".into(),
            principal,
            auditor: false,
            admin: false,
        }
    }

    fn with_cookie(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::COOKIE,
            format!("other=1; {COOKIE}={value}").parse().unwrap(),
        );
        h
    }

    #[test]
    fn a_cookie_names_a_session_until_it_expires_or_ends() {
        let sessions = Sessions::default();
        let later = SystemTime::now() + Duration::from_secs(60);
        let id = sessions.create(caller(), "t".into(), later);
        let found = sessions.get(&with_cookie(&id)).expect("the session");
        assert_eq!(found.token, "t");
        // A forged id, a prefix of the real one, or no cookie: no session.
        assert!(sessions.get(&with_cookie("forged")).is_none());
        assert!(sessions.get(&with_cookie(&id[..10])).is_none());
        assert!(sessions.get(&HeaderMap::new()).is_none());
        sessions.remove(&with_cookie(&id));
        assert!(sessions.get(&with_cookie(&id)).is_none());
        // An expired one is gone.
        let past = SystemTime::now() - Duration::from_secs(1);
        let old = sessions.create(caller(), "t".into(), past);
        assert!(sessions.get(&with_cookie(&old)).is_none());
    }

    #[test]
    fn one_subject_keeps_a_few_logins_and_a_login_a_few_streams() {
        let sessions = Sessions::default();
        let later = SystemTime::now() + Duration::from_secs(60);
        let ids: Vec<String> = (0..=MAX_PER_SUBJECT)
            .map(|i| sessions.create(caller(), "t".into(), later + Duration::from_secs(i as u64)))
            .collect();
        // The oldest made room for the newest.
        assert!(sessions.get(&with_cookie(&ids[0])).is_none());
        assert!(sessions.get(&with_cookie(&ids[MAX_PER_SUBJECT])).is_some());
        let s = sessions.get(&with_cookie(&ids[1])).unwrap();
        let open: Vec<Stream> = (0..MAX_STREAMS).map(|_| s.stream().unwrap()).collect();
        assert!(s.stream().is_none(), "no more than MAX_STREAMS");
        drop(open);
        assert!(s.stream().is_some(), "a closed stream frees its place");
        assert!(s.live());
        sessions.remove(&with_cookie(&ids[1]));
        assert!(!s.live(), "logging out ends the login's streams");
    }

    #[test]
    fn csrf_tokens_are_compared_whole() {
        let sessions = Sessions::default();
        let later = SystemTime::now() + Duration::from_secs(60);
        let id = sessions.create(caller(), "t".into(), later);
        let s = sessions.get(&with_cookie(&id)).unwrap();
        assert!(s.csrf_ok(Some(&s.csrf)));
        assert!(!s.csrf_ok(None));
        assert!(!s.csrf_ok(Some("")));
        assert!(!s.csrf_ok(Some(&s.csrf[..s.csrf.len() - 1])));
        assert!(!s.csrf_ok(Some(&random_token())));
    }

    #[test]
    fn cookies_are_http_only_lax_and_secure_behind_tls() {
        let c = set_cookie(COOKIE, "v", 60, true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Secure"));
        assert!(!set_cookie(COOKIE, "v", 60, false).contains("Secure"));
    }
}
