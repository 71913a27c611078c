//! Recording one session, for any door: audit events built from what the
//! judge decided and what the door passed back, appended to the process's
//! [`Recorder`].
//!
//! What is recorded when:
//! - a statement's `statement` event as it is judged, before it is
//!   forwarded (or instead, when refused); a prepared statement's at each
//!   execution (text from its preparation, parameters from the execution);
//!   one refused when it is prepared, then;
//! - a `result` event per statement once its completion, suspension or
//!   error passes the door.
//!
//! Redaction, so that nothing masking would hide is recorded:
//! - texts always go through the content detectors;
//! - a statement that names a relation a column rule could cover (by name,
//!   or by the session's catalog), or that airlock could not parse, has
//!   every literal and comment replaced (by the dialect's [`Redactor`]) and
//!   every parameter recorded as the placeholder;
//! - result samples are the rows as the client got them, so masked; a
//!   session exempt from masking (`unmask`) has its values withheld from
//!   samples and its errors scrubbed as if sensitive.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use airlock_audit::event::{
    self, Decision, ErrorInfo, Protocol, Sample, StatementResult, Truncated, Value,
};
use airlock_audit::{Body, Event, RecordError, Recorder};
use airlock_mask::Masking;
use airlock_policy::Statement;
use airlock_policy::masking::SensitiveCatalog;
use uuid::Uuid;

use crate::hold::Trail;

/// A dialect's redactor: the byte spans of a text's literal values and
/// comments, in order; `None` when the text cannot be tokenized.
pub type Redactor = fn(&str) -> Option<Vec<(usize, usize)>>;

/// One bound parameter, as the door read it.
#[derive(Debug, Clone, Copy)]
pub struct Param<'a> {
    pub value: Option<&'a [u8]>,
    /// Sent in a binary format (recorded as hex).
    pub binary: bool,
}

/// The parameters of an execution.
#[derive(Debug, Clone, Default)]
pub enum Params<'a> {
    /// Not an execution of a prepared statement.
    #[default]
    None,
    Values(Vec<Param<'a>>),
    /// The door could not read them.
    Malformed,
}

/// Where a result belongs: the message (or prepared statement) a door
/// judged, and the statement's index in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct At {
    pub id: u64,
    pub index: usize,
}

/// Results kept open at once (a pipelining client's answers in flight).
const MAX_OPEN: usize = 256;

/// How much a recording keeps, from `recording`.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub sample_rows: usize,
    pub sample_bytes: usize,
    pub max_text: usize,
}

/// What a statement event says of the decision.
pub struct Judgement<'a> {
    pub decision: Decision,
    pub rule: Option<&'a str>,
    pub refusal: Option<(&'a str, &'a str)>,
    /// The approval that decided a held statement.
    pub approval: Option<Uuid>,
}

/// One session's recording.
pub struct RecordingSession {
    recorder: Arc<Recorder>,
    session: Uuid,
    limits: Limits,
    masking: Arc<Masking>,
    catalog: Option<Arc<SensitiveCatalog>>,
    /// Values are withheld from samples: the session sees unmasked values.
    withhold: bool,
    redactor: Redactor,
    next_seq: u64,
    /// Message id → the statement event its results belong to.
    recorded: HashMap<u64, (u64, Instant)>,
    /// Parse id → what its Binds record.
    parsed: HashMap<u64, Parsed>,
    /// Results being answered, by statement.
    open: HashMap<(u64, usize), Open>,
    /// The last RowDescription's column names, by message id.
    columns: HashMap<u64, Arc<[String]>>,
    /// The door, for `airlock_statements_total`.
    door: event::Door,
    /// That counter's handles by decision and rule, looked up once each
    /// (a session meets few rules: a short list, searched without
    /// allocating).
    counters: Vec<(Decision, Option<Arc<str>>, metrics::Counter)>,
}

/// Statements recorded, by door, decision and deciding rule.
pub const STATEMENTS_TOTAL: &str = "airlock_statements_total";

struct Parsed {
    text: Arc<str>,
    statements: Arc<[Statement]>,
}

#[derive(Default)]
struct Open {
    rows: u64,
    sample: Vec<Vec<Value>>,
    bytes: usize,
    truncated: bool,
    flags: Vec<event::Flag>,
}

/// Flags kept per result; the door's notice counts the rest.
pub const MAX_FLAGS: usize = 16;

impl RecordingSession {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        recorder: Arc<Recorder>,
        session: Uuid,
        door: event::Door,
        limits: Limits,
        masking: Arc<Masking>,
        catalog: Option<Arc<SensitiveCatalog>>,
        unmask: bool,
        redactor: Redactor,
    ) -> RecordingSession {
        RecordingSession {
            door,
            counters: Vec::new(),
            withhold: unmask && masking.is_active(),
            redactor,
            recorder,
            session,
            limits,
            masking,
            catalog,
            next_seq: 1,
            recorded: HashMap::new(),
            parsed: HashMap::new(),
            open: HashMap::new(),
            columns: HashMap::new(),
        }
    }

    /// Statements recorded so far.
    pub fn statements(&self) -> u64 {
        self.next_seq - 1
    }

    /// Records a statement for message `id` (a statement run as sent, or
    /// the prepared statement an execution runs, with its `params`).
    pub fn statement(
        &mut self,
        id: u64,
        protocol: Protocol,
        text: &str,
        statements: &[Statement],
        params: &Params<'_>,
        judgement: Judgement<'_>,
    ) -> Result<(), RecordError> {
        let sensitive = self.sensitive(statements);
        let (text, truncated) = self.redact(text, sensitive);
        let params = self.params(params, sensitive);
        let seq = self.next_seq;
        let event = Event::now(Body::Statement(event::Statement {
            session: self.session,
            seq,
            protocol,
            text,
            truncated,
            params,
            kinds: kinds(statements),
            effects: effects(statements),
            decision: judgement.decision,
            rule: judgement.rule.map(Into::into),
            refusal: judgement.refusal.map(|(code, message)| ErrorInfo {
                code: code.into(),
                message: message.into(),
            }),
            approval: judgement.approval.map(|a| a.to_string()),
        }));
        self.recorder.record(&event)?;
        self.count(judgement.decision, judgement.rule);
        self.next_seq += 1;
        if judgement.refusal.is_none() {
            self.recorded.insert(id, (seq, Instant::now()));
        }
        Ok(())
    }

    /// Counts a recorded statement by its decision and rule.
    fn count(&mut self, decision: Decision, rule: Option<&str>) {
        if let Some((_, _, counter)) = self
            .counters
            .iter()
            .find(|(d, r, _)| *d == decision && r.as_deref() == rule)
        {
            counter.increment(1);
            return;
        }
        let counter = metrics::counter!(
            STATEMENTS_TOTAL,
            "door" => self.door.name(),
            "decision" => decision.name(),
            "rule" => rule.unwrap_or("none").to_string()
        );
        counter.increment(1);
        self.counters.push((decision, rule.map(Arc::from), counter));
    }

    /// A statement's text and parameters, redacted as its statement event
    /// redacts them (for approvers).
    pub fn redacted(
        &self,
        text: &str,
        statements: &[Statement],
        params: &Params<'_>,
    ) -> (String, Vec<Value>) {
        let sensitive = self.sensitive(statements);
        let (text, _) = self.redact(text, sensitive);
        (text, self.params(params, sensitive))
    }

    /// The session's id.
    pub fn session(&self) -> Uuid {
        self.session
    }

    /// Where this session's approval events go.
    pub fn trail(&self) -> Trail {
        Trail {
            recorder: Arc::clone(&self.recorder),
            session: self.session,
        }
    }

    /// Keeps a judged prepared statement's text for the statement events of
    /// its executions.
    pub fn parsed(&mut self, id: u64, text: &str, statements: Arc<[Statement]>) {
        self.parsed.insert(
            id,
            Parsed {
                text: text.into(),
                statements,
            },
        );
    }

    /// Records an execution of prepared statement `id` (or its refusal).
    pub fn bound(
        &mut self,
        id: u64,
        params: &Params<'_>,
        judgement: Judgement<'_>,
    ) -> Result<(), RecordError> {
        let (text, statements) = match self.parsed.get(&id) {
            Some(p) => (Arc::clone(&p.text), Arc::clone(&p.statements)),
            // Every statement a door prepares was judged; fail closed anyway.
            None => {
                return Err(RecordError(
                    "an execution of a statement airlock did not see".into(),
                ));
            }
        };
        self.statement(
            id,
            Protocol::Extended,
            &text,
            &statements,
            params,
            judgement,
        )
    }

    /// The result of message `id` has these columns.
    pub fn columns(&mut self, id: u64, names: Arc<[String]>) {
        self.columns.insert(id, names);
    }

    /// One row of result `at`, as the client got it (masked).
    pub fn row<'v>(&mut self, at: At, values: impl Iterator<Item = Option<&'v [u8]>>) {
        if !self.recorded.contains_key(&at.id) {
            return;
        }
        if self.open.len() >= MAX_OPEN && !self.open.contains_key(&(at.id, at.index)) {
            return;
        }
        let limits = self.limits;
        let withhold = self.withhold;
        let open = self.open.entry((at.id, at.index)).or_default();
        open.rows += 1;
        if withhold || open.truncated {
            return;
        }
        if open.sample.len() >= limits.sample_rows {
            open.truncated = true;
            return;
        }
        let row: Vec<Value> = values.map(Value::from_bytes).collect();
        let weight: usize = row.iter().map(Value::weight).sum();
        if open.bytes + weight > limits.sample_bytes {
            open.truncated = true;
            return;
        }
        open.bytes += weight;
        open.sample.push(row);
    }

    /// A value of result `at` the client got unchanged reads like
    /// instructions to an agent (the first [`MAX_FLAGS`] are kept).
    pub fn flag(&mut self, at: At, row: u64, column: &str, kind: &str) {
        if !self.recorded.contains_key(&at.id) {
            return;
        }
        if self.open.len() >= MAX_OPEN && !self.open.contains_key(&(at.id, at.index)) {
            return;
        }
        let open = self.open.entry((at.id, at.index)).or_default();
        if open.flags.len() < MAX_FLAGS {
            open.flags.push(event::Flag {
                row,
                column: column.into(),
                kind: kind.into(),
            });
        }
    }

    /// Result `at` completed (`tag`: its command tag, if it has one), or
    /// was suspended with rows left.
    pub fn complete(&mut self, at: At, tag: Option<String>, suspended: bool) {
        self.finish(at, tag, suspended, None);
    }

    /// Result `at` ended with an error the client got (already scrubbed
    /// as the client saw it).
    pub fn error(&mut self, at: At, code: String, message: String) {
        let message = if self.withhold {
            self.masking
                .scrub(&message, Some(&|_| false))
                .unwrap_or(message)
        } else {
            message
        };
        if !self.recorded.contains_key(&at.id)
            && let Some(p) = self.parsed.get(&at.id)
        {
            // The preparation itself failed upstream (an unknown table):
            // there was no execution to record it at.
            let (text, statements) = (Arc::clone(&p.text), Arc::clone(&p.statements));
            let allow = Judgement {
                decision: Decision::Allow,
                rule: None,
                refusal: None,
                approval: None,
            };
            let _ = self.statement(
                at.id,
                Protocol::Extended,
                &text,
                &statements,
                &Params::None,
                allow,
            );
        }
        self.finish(at, None, false, Some(ErrorInfo { code, message }));
    }

    fn finish(&mut self, at: At, tag: Option<String>, suspended: bool, error: Option<ErrorInfo>) {
        let Some(&(seq, started)) = self.recorded.get(&at.id) else {
            return;
        };
        let open = self.open.remove(&(at.id, at.index)).unwrap_or_default();
        let columns = self.columns.get(&at.id);
        let sample = (open.rows > 0 || columns.is_some()).then(|| Sample {
            columns: columns.map_or_else(Vec::new, |c| c.to_vec()),
            rows: open.sample,
            truncated: open.truncated || (self.withhold && open.rows > 0),
            withheld: (self.withhold && open.rows > 0).then(|| {
                "the session sees unmasked values; airlock records no values from it".into()
            }),
        });
        let event = Event::now(Body::Result(StatementResult {
            session: self.session,
            seq,
            index: at.index as u32,
            duration_us: started.elapsed().as_micros() as u64,
            rows: open.rows,
            tag,
            suspended,
            error,
            sample: sample.filter(|s| !s.columns.is_empty() || !s.rows.is_empty()),
            flags: open.flags,
        }));
        // The statement has run: its result is queued, not waited for (it
        // is written with the next batch). A result that cannot be
        // recorded cannot un-run it; it is logged and counted, and the
        // recorder is not ready until a batch is written again.
        if let Err(e) = self.recorder.record_later(&event) {
            tracing::error!(error = %e, "a statement's result could not be recorded");
        }
    }

    /// Message `id` will not be referred to again.
    pub fn forget(&mut self, id: u64) {
        self.recorded.remove(&id);
        self.parsed.remove(&id);
        self.columns.remove(&id);
        self.open.retain(|(i, _), _| *i != id);
    }

    /// Whether a statement's values must be hidden from the recording.
    fn sensitive(&self, statements: &[Statement]) -> bool {
        if !self.masking.is_active() {
            return false;
        }
        let policy = &self.masking.policy;
        statements.is_empty()
            || statements.iter().any(|s| {
                s.kind == airlock_policy::StatementKind::Unknown
                    || match &self.catalog {
                        // Precise: relations the catalog knows to hold (or
                        // derive from) masked columns, by name otherwise.
                        Some(c) => policy.touches_sensitive(c, &s.relations),
                        None => policy.may_name_masked(&s.relations),
                    }
            })
    }

    /// The text to record: values hidden when `sensitive`, detector matches
    /// masked, cut to the limit.
    fn redact(&self, text: &str, sensitive: bool) -> (String, Option<Truncated>) {
        let hidden: std::borrow::Cow<'_, str> = if sensitive {
            match (self.redactor)(text) {
                Some(spans) => replace_spans(text, &spans).into(),
                None => {
                    return (
                        "(withheld: the statement touches masked data and could not be tokenized)"
                            .into(),
                        None,
                    );
                }
            }
        } else {
            text.into()
        };
        let text = self.masking.detect_in(&hidden).into_owned();
        Truncated::cut(text, self.limits.max_text)
    }

    fn params(&self, params: &Params<'_>, sensitive: bool) -> Vec<Value> {
        let params = match params {
            Params::None => return Vec::new(),
            Params::Malformed => return vec![Value::Text("(malformed parameters)".into())],
            Params::Values(p) => p,
        };
        let mut budget = self.limits.max_text;
        params
            .iter()
            .map(|p| {
                let Some(v) = p.value else {
                    return Value::Null;
                };
                // A value the client sent is recorded as sent unless it is
                // sensitive: value-only detectors (instructions to an
                // agent) judge results, not the client's own words.
                let detected = self.masking.is_active()
                    && self
                        .masking
                        .detectors
                        .scan(v)
                        .is_some_and(|d| !d.value_only());
                if sensitive || detected {
                    return Value::Text(airlock_mask::PLACEHOLDER.into());
                }
                if v.len() > budget {
                    budget = 0;
                    return Value::Text(format!("(not recorded: {} bytes)", v.len()));
                }
                budget -= v.len();
                if p.binary {
                    Value::Bytes { hex: event::hex(v) }
                } else {
                    Value::from_bytes(Some(v))
                }
            })
            .collect()
    }
}

/// How a statement event records a denial: `approve` with its rule when
/// the statement needed an approval it could not get, `deny` otherwise
/// (with the rule, unless masking refused it).
pub fn denied_by(by: &airlock_policy::judge::DeniedBy) -> (Decision, Option<&str>) {
    use airlock_policy::judge::DeniedBy;
    match by {
        DeniedBy::Rule(r) => (Decision::Deny, Some(r)),
        DeniedBy::Unapprovable(r) => (Decision::Approve, Some(r)),
        DeniedBy::Masking => (Decision::Deny, None),
    }
}

/// The kinds of a message's statements, as events and approvers see them.
pub fn kinds(statements: &[Statement]) -> Vec<String> {
    statements.iter().map(|s| s.kind.name().into()).collect()
}

/// The effects of a message's statements, sorted, each once.
pub fn effects(statements: &[Statement]) -> Vec<String> {
    let mut effects: Vec<String> = statements
        .iter()
        .flat_map(|s| s.effects.iter().map(|e| e.name().to_string()))
        .collect();
    effects.sort();
    effects.dedup();
    effects
}

/// `text` with each span replaced by the placeholder, quoted.
fn replace_spans(text: &str, spans: &[(usize, usize)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for &(start, end) in spans {
        if start < at {
            continue;
        }
        out.push_str(&text[at..start]);
        out.push('\'');
        out.push_str(airlock_mask::PLACEHOLDER);
        out.push('\'');
        at = end;
    }
    out.push_str(&text[at..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_become_placeholders() {
        let sql = "select * from t where ssn = '1' and n = 2";
        assert_eq!(
            replace_spans(sql, &[(28, 31), (40, 41)]),
            "select * from t where ssn = '*****' and n = '*****'"
        );
    }
}
