//! What `airlock audit verify` found, as lines: printed by the CLI and
//! shown by the console (`POST /api/v1/audit/verify`).

use std::path::Path;

use airlock_audit::verify::Report;

/// The lines of a verification that found every chain intact. `store` is
/// the store's URL without credentials ([`redact_url`]); `store_exists`
/// says whether it was checked.
pub fn lines(journal: &Path, store: &str, store_exists: bool, report: &Report) -> Vec<String> {
    let mut out = vec![format!(
        "journal {}: {} stream(s), {} record(s): ok",
        journal.display(),
        report.journal.streams.len(),
        report.journal.records()
    )];
    match store_exists {
        true => {
            let events: u64 = report.store.iter().map(|s| s.events).sum();
            let cross: u64 = report.store.iter().map(|s| s.cross_checked).sum();
            out.push(format!(
                "store {store}: {} stream(s), {events} event(s), {cross} compared with the journal: ok",
                report.store.len()
            ));
        }
        false => out.push(format!(
            "store {store}: does not exist yet, nothing to check"
        )),
    }
    for (stream, n) in &report.unshipped {
        out.push(format!(
            "stream {stream}: {n} record(s) not shipped to the store yet"
        ));
    }
    out.push("ok: every hash chain is intact".into());
    out
}

/// A URL without a password, for messages.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => match rest.split_once('@') {
            Some((user, host)) => {
                let user = user.split(':').next().unwrap_or(user);
                format!("{scheme}://{user}@{host}")
            }
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}
