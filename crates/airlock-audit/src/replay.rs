//! A recorded session as a psql-like transcript (`airlock sessions replay`);
//! a session of the MySQL door reads like the mysql CLI instead (prompt
//! `mysql [conn]>`, bordered tables, `N rows in set`, `Query OK, N rows
//! affected`, `ERROR <errno>: …`).
//!
//! The transcript reads like the terminal of someone who ran the session's
//! statements in `psql`, with what only airlock knows written as SQL
//! comments:
//!
//! ```text
//! -- airlock session 01900000-0000-7000-8000-000000000001
//! -- principal: alice@example.com (via ci-bot)
//! -- connection: app, role: readonly
//! -- access rule: "agents", read-only
//! -- client: 10.0.0.5:51234, application_name: psql, TLS: on
//! -- started: 2024-05-01T12:00:00.000Z
//!
//! app=> select id, email from users;
//!  id |      email
//! ----+----------------
//!   1 | a***@example.com
//! (120 rows)
//! (sample: first 1 rows)
//! -- 0.8 ms
//!
//! app=> drop table users;
//! -- denied by rule "no-drops" (42501)
//! ERROR:  statement denied by airlock
//!
//! -- session ended: client closed
//! ```
//!
//! Rules, and why:
//!
//! - Results are printed under their statement (matched by `seq`, then in
//!   `index` order), not in recording order: with pipelining a client may
//!   send several statements before the first answer.
//! - As psql does, a result with rows is a table with a `(N rows)` footer
//!   (the real count, not the sample's), followed by the command tag only
//!   for `INSERT`/`UPDATE`/`DELETE`/`MERGE … RETURNING`; a result without
//!   rows is its command tag. Columns whose every value looks like a number
//!   are right-aligned (psql aligns by type, which the record does not keep).
//! - Every recorded string is untrusted (it came from a client or the
//!   upstream), so control characters are escaped (`\n`, `\x1b`…): a replay
//!   must not be able to drive the auditor's terminal. Multi-line statement
//!   text is the exception: its lines are kept, after psql's `->`
//!   continuation prompt.
//! - Values that are not UTF-8 print as psql prints `bytea`: `\x` and hex.

use std::collections::BTreeMap;
use std::fmt::{self, Write};

use crate::Event;
use crate::event::{
    Approval, Body, Decision, Door, ErrorInfo, Protocol, Sample, SessionEnd, SessionStart,
    Statement, StatementResult, Value,
};

/// Whose terminal the transcript imitates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Psql,
    Mysql,
}

/// Writes `events` (one session's, in recording order) as a transcript.
pub fn transcript(events: &[Event], out: &mut impl Write) -> fmt::Result {
    let start = events.iter().find_map(|e| match &e.body {
        Body::SessionStart(s) => Some((e, s)),
        _ => None,
    });
    let prompt = start.map_or("?", |(_, s)| s.connection.as_str());
    let style = match start.map(|(_, s)| s.door) {
        Some(Door::Mysql) => Style::Mysql,
        _ => Style::Psql,
    };
    match start {
        Some((e, s)) => header(e, s, out)?,
        None => {
            match events.iter().find_map(Event::session) {
                Some(id) => writeln!(out, "-- airlock session {id}")?,
                None => writeln!(out, "-- airlock session")?,
            }
            writeln!(out, "-- (the session's start was not recorded)")?;
        }
    }

    // Results by statement, in index order.
    let mut results: BTreeMap<u64, Vec<&StatementResult>> = BTreeMap::new();
    for e in events {
        if let Body::Result(r) = &e.body {
            results.entry(r.seq).or_default().push(r);
        }
    }
    for list in results.values_mut() {
        list.sort_by_key(|r| r.index);
    }

    // Approval events of a statement recorded before its hold (extended
    // protocol) are shown with it, before its results.
    let mut approvals: BTreeMap<u64, Vec<&Approval>> = BTreeMap::new();
    for e in events {
        if let Body::Approval(a @ Approval { seq: Some(seq), .. }) = &e.body {
            approvals.entry(*seq).or_default().push(a);
        }
    }

    let mut end: Option<&SessionEnd> = None;
    for e in events {
        match &e.body {
            Body::Statement(s) => {
                writeln!(out)?;
                let held = approvals.remove(&s.seq).unwrap_or_default();
                let results = results.remove(&s.seq).unwrap_or_default();
                statement(style, prompt, s, &held, results, out)?;
            }
            Body::Approval(a) if a.seq.is_none() => {
                writeln!(out)?;
                approval(a, out)?;
            }
            Body::SessionEnd(s) => end = Some(s),
            _ => {}
        }
    }
    // Results whose statement event is missing (pruned, or a gap).
    for (seq, list) in results {
        writeln!(out)?;
        writeln!(
            out,
            "-- result of statement #{seq}, whose text was not recorded"
        )?;
        for r in list {
            result(style, r, out)?;
        }
    }

    writeln!(out)?;
    match end {
        Some(end) => writeln!(out, "-- session ended: {}", Clean(&end.reason)),
        None => writeln!(
            out,
            "-- session end not recorded (still running, or cut off)"
        ),
    }
}

fn header(e: &Event, s: &SessionStart, out: &mut impl Write) -> fmt::Result {
    writeln!(out, "-- airlock session {}", s.session)?;
    write!(out, "-- principal: {}", Clean(&s.principal))?;
    // RFC 8693: the principal is who the request is for; `act` who acts.
    let chain: Vec<&str> = if s.act_chain.is_empty() {
        s.act.iter().map(String::as_str).collect()
    } else {
        s.act_chain.iter().map(String::as_str).collect()
    };
    if !chain.is_empty() {
        let actors: Vec<String> = chain.iter().map(|a| Clean(a).to_string()).collect();
        write!(out, " (via {})", actors.join(", then "))?;
    }
    writeln!(out)?;
    write!(out, "-- issuer: {}", Clean(&s.issuer))?;
    if !s.groups.is_empty() {
        write!(out, ", groups: ")?;
        for (i, g) in s.groups.iter().enumerate() {
            if i > 0 {
                write!(out, ", ")?;
            }
            write!(out, "{}", Clean(g))?;
        }
    }
    writeln!(out)?;
    writeln!(
        out,
        "-- connection: {}, role: {}",
        Clean(&s.connection),
        Clean(&s.role)
    )?;
    write!(
        out,
        "-- access rule: \"{}\", {}",
        Clean(&s.access_rule),
        Clean(&s.mode)
    )?;
    if s.unmask {
        write!(out, ", unmasked")?;
    }
    writeln!(out)?;
    write!(out, "-- client: {}", Clean(&s.client_addr))?;
    if let Some(app) = &s.application_name {
        write!(out, ", application_name: {}", Clean(app))?;
    }
    writeln!(out, ", TLS: {}", if s.tls { "on" } else { "off" })?;
    if let Some(grant) = &s.grant {
        writeln!(out, "-- just-in-time grant: {}", Clean(grant))?;
    }
    writeln!(out, "-- started: {}", Clean(&e.at))
}

/// One approval event, as a comment line.
fn approval(a: &Approval, out: &mut impl Write) -> fmt::Result {
    let what = if a.request == "access" {
        "access request"
    } else {
        "approval"
    };
    write!(
        out,
        "-- {what} {}: {}",
        a.id,
        Clean(&a.action.replace('_', " "))
    )?;
    if let Some(by) = &a.by {
        write!(out, " by {}", Clean(by))?;
    }
    if a.action == "requested" {
        write!(out, " (rule \"{}\"", Clean(&a.rule))?;
        if !a.approvers.is_empty() {
            write!(out, ", approvers: {}", Clean(&a.approvers.join(", ")))?;
        }
        if let Some(n) = a.min_approvals.filter(|n| *n > 1) {
            write!(out, ", {n} needed")?;
        }
        if let Some(rows) = a.estimate {
            write!(out, ", estimated rows: {rows}")?;
        }
        write!(out, ")")?;
    }
    if let Some(reason) = &a.reason {
        write!(out, ": {}", Clean(reason))?;
    }
    if let Some(until) = &a.until {
        write!(out, " (until {})", Clean(until))?;
    }
    writeln!(out)
}

fn statement(
    style: Style,
    prompt: &str,
    s: &Statement,
    held: &[&Approval],
    results: Vec<&StatementResult>,
    out: &mut impl Write,
) -> fmt::Result {
    let prompt = Clean(prompt);
    let text = s.text.trim_end();
    for (i, line) in text.split('\n').enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        match (style, i) {
            (Style::Psql, 0) => writeln!(out, "{prompt}=> {}", Clean(line))?,
            (Style::Psql, _) => writeln!(out, "{prompt}-> {}", Clean(line))?,
            (Style::Mysql, 0) => writeln!(out, "mysql [{prompt}]> {}", Clean(line))?,
            (Style::Mysql, _) => writeln!(out, "    -> {}", Clean(line))?,
        }
    }
    if let Some(t) = &s.truncated {
        writeln!(
            out,
            "-- (statement cut: {} bytes in all, sha256 {})",
            t.bytes,
            Clean(&t.sha256)
        )?;
    }
    if s.protocol == Protocol::Extended && !s.params.is_empty() {
        write!(out, "-- parameters: ")?;
        for (i, p) in s.params.iter().enumerate() {
            if i > 0 {
                write!(out, ", ")?;
            }
            write!(out, "${} = ", i + 1)?;
            match p {
                Value::Null => write!(out, "NULL")?,
                Value::Text(t) => write!(out, "'{}'", Clean(&t.replace('\'', "''")))?,
                Value::Bytes { hex } => write!(out, "'\\x{}'", Clean(hex))?,
            }
        }
        writeln!(out)?;
    }
    decision(s, out)?;
    for a in held {
        approval(a, out)?;
    }
    if let Some(refusal) = &s.refusal {
        error(style, refusal, out)?;
    }
    for r in results {
        result(style, r, out)?;
    }
    Ok(())
}

fn decision(s: &Statement, out: &mut impl Write) -> fmt::Result {
    let rule = |out: &mut dyn Write| match &s.rule {
        Some(r) => write!(out, " by rule \"{}\"", Clean(r)),
        None => Ok(()),
    };
    match s.decision {
        Decision::Allow => {
            if s.rule.is_some() || s.approval.is_some() {
                write!(out, "-- allowed")?;
                rule(out)?;
                if let Some(id) = &s.approval {
                    write!(out, ", approval {}", Clean(id))?;
                }
                writeln!(out)?;
            }
        }
        Decision::Deny => {
            write!(out, "-- denied")?;
            rule(out)?;
            if let Some(r) = &s.refusal {
                write!(out, " ({})", Clean(&r.code))?;
            }
            writeln!(out)?;
        }
        Decision::Approve => {
            write!(out, "-- held for approval")?;
            rule(out)?;
            match (&s.approval, &s.refusal) {
                (_, Some(r)) => {
                    write!(out, ", not approved")?;
                    if let Some(id) = &s.approval {
                        write!(out, " (approval {})", Clean(id))?;
                    }
                    write!(out, " ({})", Clean(&r.code))?;
                }
                (Some(id), None) => write!(out, ", approved (approval {})", Clean(id))?,
                (None, None) => {}
            }
            writeln!(out)?;
        }
    }
    Ok(())
}

fn error(style: Style, e: &ErrorInfo, out: &mut impl Write) -> fmt::Result {
    match style {
        Style::Psql => writeln!(
            out,
            "ERROR:  {}  (SQLSTATE {})",
            Clean(&e.message),
            Clean(&e.code)
        ),
        Style::Mysql => writeln!(out, "ERROR {}: {}", Clean(&e.code), Clean(&e.message)),
    }
}

fn result(style: Style, r: &StatementResult, out: &mut impl Write) -> fmt::Result {
    if let Some(e) = &r.error {
        error(style, e, out)?;
    } else if style == Style::Mysql {
        mysql_result(r, out)?;
    } else {
        let tag = r.tag.as_deref().unwrap_or("");
        let returns_rows = returns_rows(tag);
        match &r.sample {
            Some(sample) => {
                table(sample, out)?;
                footer(r.rows, out)?;
                if let Some(why) = &sample.withheld {
                    writeln!(out, "(values withheld: {})", Clean(why))?;
                } else if sample.truncated {
                    writeln!(out, "(sample: first {} rows)", sample.rows.len())?;
                }
                if ["INSERT", "UPDATE", "DELETE", "MERGE"]
                    .iter()
                    .any(|p| tag.starts_with(p))
                {
                    writeln!(out, "{}", Clean(tag))?;
                }
            }
            None if r.suspended => {}
            None if returns_rows || (tag.is_empty() && r.rows > 0) => {
                footer(r.rows, out)?;
                writeln!(out, "(no sample recorded)")?;
            }
            None => {
                if !tag.is_empty() {
                    writeln!(out, "{}", Clean(tag))?;
                }
            }
        }
        if r.suspended {
            writeln!(
                out,
                "-- portal suspended after {} rows (the client fetches more)",
                r.rows
            )?;
        }
    }
    writeln!(out, "-- {} ms", Millis(r.duration_us))
}

/// A result as the mysql CLI prints it: a bordered table and `N rows in
/// set`, or `Query OK, N rows affected` (the door records an OK as `OK N`).
fn mysql_result(r: &StatementResult, out: &mut impl Write) -> fmt::Result {
    let tag = r.tag.as_deref().unwrap_or("");
    if let Some(affected) = tag.strip_prefix("OK ") {
        let n: u64 = affected.parse().unwrap_or(0);
        let s = if n == 1 { "" } else { "s" };
        return writeln!(out, "Query OK, {n} row{s} affected");
    }
    if let Some(sample) = &r.sample {
        bordered(sample, out)?;
    }
    match r.rows {
        0 => writeln!(out, "Empty set")?,
        1 => writeln!(out, "1 row in set")?,
        n => writeln!(out, "{n} rows in set")?,
    }
    match &r.sample {
        Some(sample) if sample.withheld.is_some() => {
            writeln!(
                out,
                "(values withheld: {})",
                Clean(sample.withheld.as_deref().unwrap_or(""))
            )
        }
        Some(sample) if sample.truncated => {
            writeln!(out, "(sample: first {} rows)", sample.rows.len())
        }
        None if r.rows > 0 => writeln!(out, "(no sample recorded)"),
        _ => Ok(()),
    }
}

/// A sample laid out for a terminal: header and cells cleaned, each
/// column's width, and whether it is numeric (right-aligned: every value
/// looks like a number, and there is at least one row).
struct Grid {
    header: Vec<String>,
    cells: Vec<Vec<String>>,
    width: Vec<usize>,
    numeric: Vec<bool>,
}

impl Grid {
    /// `None` for a sample without columns; `null` is how NULL prints.
    fn of(sample: &Sample, null: &str) -> Option<Grid> {
        let cols = sample.columns.len();
        if cols == 0 {
            return None;
        }
        let header: Vec<String> = sample.columns.iter().map(|c| clean(c)).collect();
        let cells: Vec<Vec<String>> = sample
            .rows
            .iter()
            .map(|row| {
                (0..cols)
                    .map(|i| match row.get(i) {
                        None | Some(Value::Null) => null.to_string(),
                        v => cell(v),
                    })
                    .collect()
            })
            .collect();
        let mut width: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
        let mut numeric = vec![!cells.is_empty(); cols];
        for (row, raw) in cells.iter().zip(&sample.rows) {
            for (i, c) in row.iter().enumerate() {
                width[i] = width[i].max(c.chars().count());
                match raw.get(i) {
                    Some(Value::Text(t)) if is_number(t) => {}
                    Some(Value::Null) | None => {}
                    _ => numeric[i] = false,
                }
            }
        }
        Some(Grid {
            header,
            cells,
            width,
            numeric,
        })
    }
}

/// A mysql-CLI table: `+---+` rules above, below the header and at the end,
/// `| a | b |` rows, numbers right-aligned, NULL as `NULL`.
fn bordered(sample: &Sample, out: &mut impl Write) -> fmt::Result {
    let Some(Grid {
        header,
        cells,
        width,
        numeric,
    }) = Grid::of(sample, "NULL")
    else {
        return Ok(());
    };
    let cols = header.len();
    let mut rule = String::from("+");
    for w in &width {
        rule.extend(std::iter::repeat_n('-', w + 2));
        rule.push('+');
    }
    let row_line = |cells: &[String], right: &[bool]| {
        let mut line = String::from("|");
        for (i, c) in cells.iter().enumerate() {
            let pad = width[i] - c.chars().count();
            line.push(' ');
            if right[i] {
                push_spaces(&mut line, pad);
                line.push_str(c);
            } else {
                line.push_str(c);
                push_spaces(&mut line, pad);
            }
            line.push_str(" |");
        }
        line
    };
    writeln!(out, "{rule}")?;
    writeln!(out, "{}", row_line(&header, &vec![false; cols]))?;
    writeln!(out, "{rule}")?;
    for row in &cells {
        writeln!(out, "{}", row_line(row, &numeric))?;
    }
    writeln!(out, "{rule}")
}

/// Tags of commands whose rows psql prints as a table.
fn returns_rows(tag: &str) -> bool {
    ["SELECT", "FETCH", "SHOW", "EXPLAIN"].iter().any(|p| {
        tag.strip_prefix(p)
            .is_some_and(|r| r.is_empty() || r.starts_with(' '))
    })
}

fn footer(rows: u64, out: &mut impl Write) -> fmt::Result {
    if rows == 1 {
        writeln!(out, "(1 row)")
    } else {
        writeln!(out, "({rows} rows)")
    }
}

/// A psql-aligned table: centered header, `-` rule with `+` joints, cells
/// padded with one space, numbers right-aligned, trailing spaces trimmed.
fn table(sample: &Sample, out: &mut impl Write) -> fmt::Result {
    let Some(Grid {
        header,
        cells,
        width,
        numeric,
    }) = Grid::of(sample, "")
    else {
        return Ok(());
    };

    let mut line = String::new();
    for (i, h) in header.iter().enumerate() {
        let pad = width[i] - h.chars().count();
        if i > 0 {
            line.push('|');
        }
        line.push(' ');
        push_spaces(&mut line, pad / 2);
        line.push_str(h);
        push_spaces(&mut line, pad - pad / 2);
        line.push(' ');
    }
    writeln!(out, "{}", line.trim_end())?;

    line.clear();
    for (i, w) in width.iter().enumerate() {
        if i > 0 {
            line.push('+');
        }
        line.extend(std::iter::repeat_n('-', w + 2));
    }
    writeln!(out, "{line}")?;

    for row in &cells {
        line.clear();
        for (i, c) in row.iter().enumerate() {
            let pad = width[i] - c.chars().count();
            if i > 0 {
                line.push('|');
            }
            line.push(' ');
            if numeric[i] {
                push_spaces(&mut line, pad);
                line.push_str(c);
            } else {
                line.push_str(c);
                push_spaces(&mut line, pad);
            }
            line.push(' ');
        }
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn push_spaces(s: &mut String, n: usize) {
    s.extend(std::iter::repeat_n(' ', n));
}

fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::Text(t)) => clean(t),
        Some(Value::Bytes { hex }) => format!("\\x{}", clean(hex)),
    }
}

/// An optional sign, digits, at most one dot, an optional exponent: what
/// PostgreSQL prints for its numeric types (plus `NaN`/`Infinity`).
fn is_number(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    if matches!(s, "NaN" | "Infinity") {
        return true;
    }
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut digits = 0;
    let mut dots = 0;
    for c in mantissa.chars() {
        match c {
            '0'..='9' => digits += 1,
            '.' => dots += 1,
            _ => return false,
        }
    }
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit())
    });
    digits > 0 && dots <= 1 && exponent_ok
}

/// `s` with control characters escaped.
fn clean(s: &str) -> String {
    Clean(s).to_string()
}

/// Displays a string with every control character escaped (`\n`, `\t`,
/// `\r`, `\\xNN`), so recorded text cannot move the cursor, recolour or
/// retitle the auditor's terminal.
struct Clean<'a>(&'a str);

impl fmt::Display for Clean<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(|c: char| c.is_control()) {
            f.write_str(&rest[..i])?;
            let c = rest[i..].chars().next().expect("found a char");
            match c {
                '\n' => f.write_str("\\n")?,
                '\r' => f.write_str("\\r")?,
                '\t' => f.write_str("\\t")?,
                c if (c as u32) < 0x100 => write!(f, "\\x{:02x}", c as u32)?,
                c => write!(f, "\\u{{{:x}}}", c as u32)?,
            }
            rest = &rest[i + c.len_utf8()..];
        }
        f.write_str(rest)
    }
}

/// Microseconds as milliseconds with one decimal (`0.8`, `1234.5`).
struct Millis(u64);

impl fmt::Display for Millis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Round to the nearest tenth of a millisecond.
        let tenths = (self.0 + 50) / 100;
        write!(f, "{}.{}", tenths / 10, tenths % 10)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use uuid::Uuid;

    use super::*;
    use crate::event::{Truncated, hex};

    fn id() -> Uuid {
        Uuid::parse_str("01900000-0000-7000-8000-000000000001").unwrap()
    }

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_714_564_800_000 + ms)
    }

    fn start() -> Event {
        Event::at(
            at(0),
            Body::SessionStart(SessionStart {
                session: id(),
                principal: "ci-bot".into(),
                issuer: "https://issuer.example".into(),
                groups: vec!["agents".into(), "ci".into()],
                act: Some("alice@example.com".into()),
                act_chain: Vec::new(),
                connection: "app".into(),
                role: "readonly".into(),
                access_rule: "agents".into(),
                mode: "read-only".into(),
                unmask: false,
                client_addr: "10.0.0.5:51234".into(),
                grant: None,
                application_name: Some("psql".into()),
                tls: true,
                door: crate::event::Door::Postgres,
            }),
        )
    }

    fn stmt(seq: u64, text: &str) -> Statement {
        Statement {
            session: id(),
            seq,
            protocol: Protocol::Simple,
            text: text.into(),
            truncated: None,
            params: vec![],
            kinds: vec!["select".into()],
            effects: vec!["read".into()],
            decision: Decision::Allow,
            rule: None,
            refusal: None,
            approval: None,
        }
    }

    fn res(seq: u64, index: u32, rows: u64, tag: Option<&str>) -> StatementResult {
        StatementResult {
            session: id(),
            seq,
            index,
            duration_us: 812,
            rows,
            tag: tag.map(Into::into),
            suspended: false,
            error: None,
            flags: Vec::new(),
            sample: None,
        }
    }

    fn text(v: &str) -> Value {
        Value::Text(v.into())
    }

    fn render(events: &[Event]) -> String {
        let mut s = String::new();
        transcript(events, &mut s).unwrap();
        s
    }

    #[test]
    fn a_mysql_session_reads_like_the_mysql_cli() {
        let mut start = start();
        if let Body::SessionStart(s) = &mut start.body {
            s.door = crate::event::Door::Mysql;
        }
        let mut sample_result = res(1, 0, 2, None);
        sample_result.sample = Some(Sample {
            columns: vec!["id".into(), "email".into()],
            rows: vec![
                vec![text("1"), text("a***@example.com")],
                vec![text("10"), Value::Null],
            ],
            truncated: false,
            withheld: None,
        });
        let mut denied = stmt(3, "drop table t");
        denied.decision = Decision::Deny;
        denied.rule = Some("no-drops".into());
        denied.refusal = Some(ErrorInfo {
            code: "1227".into(),
            message: "airlock: statement denied by rule \"no-drops\"".into(),
        });
        let events = vec![
            start,
            Event::at(
                at(1),
                Body::Statement(stmt(1, "select id, email from users")),
            ),
            Event::at(at(2), Body::Result(sample_result)),
            Event::at(
                at(3),
                Body::Statement(stmt(2, "delete from t where id = 1")),
            ),
            Event::at(at(4), Body::Result(res(2, 0, 0, Some("OK 1")))),
            Event::at(at(5), Body::Statement(denied)),
        ];
        let got = render(&events);
        for want in [
            "mysql [app]> select id, email from users",
            "+----+------------------+",
            "| id | email            |",
            "|  1 | a***@example.com |",
            "| 10 | NULL             |",
            "2 rows in set",
            "Query OK, 1 row affected",
            "ERROR 1227: airlock: statement denied by rule \"no-drops\"",
        ] {
            assert!(got.contains(want), "{want:?} missing in:\n{got}");
        }
    }

    #[test]
    fn a_small_session_reads_like_psql() {
        let mut select = res(1, 0, 120, Some("SELECT 120"));
        select.sample = Some(Sample {
            columns: vec!["id".into(), "email".into(), "blob".into()],
            rows: vec![
                vec![
                    text("1"),
                    text("a***@example.com"),
                    Value::from_bytes(Some(&[0xff, 0])),
                ],
                vec![text("10"), Value::Null, text("x")],
            ],
            truncated: true,
            withheld: None,
        });
        let mut update = stmt(2, "update accounts\n   set active = false\n where id = $1");
        update.protocol = Protocol::Extended;
        update.params = vec![
            text("it's"),
            Value::Null,
            Value::from_bytes(Some(&[0xff, 0xad])),
        ];
        update.kinds = vec!["update".into()];
        let mut denied = stmt(3, "drop table users;");
        denied.decision = Decision::Deny;
        denied.rule = Some("no-drops".into());
        denied.refusal = Some(ErrorInfo {
            code: "42501".into(),
            message: "airlock: statement denied by rule \"no-drops\"".into(),
        });
        let mut held = stmt(4, "delete from sessions");
        held.decision = Decision::Approve;
        held.rule = Some("deletes-need-approval".into());
        held.approval = Some("apr-7".into());
        let mut failed = res(5, 0, 0, None);
        failed.error = Some(ErrorInfo {
            code: "42P01".into(),
            message: "relation \"nope\" does not exist".into(),
        });
        let mut withheld = res(6, 0, 2, Some("SELECT 2"));
        withheld.sample = Some(Sample {
            columns: vec!["secret".into()],
            rows: vec![],
            truncated: true,
            withheld: Some("unmasked session".into()),
        });
        let events = vec![
            start(),
            Event::at(
                at(1),
                Body::Statement(stmt(1, "select id, email, blob from users;")),
            ),
            Event::at(at(2), Body::Statement(update)),
            Event::at(at(3), Body::Result(select)),
            Event::at(at(4), Body::Result(res(2, 0, 3, Some("UPDATE 3")))),
            Event::at(at(5), Body::Statement(denied)),
            Event::at(at(6), Body::Statement(held)),
            Event::at(at(7), Body::Result(res(4, 0, 1, Some("DELETE 1")))),
            Event::at(at(8), Body::Statement(stmt(5, "select * from nope"))),
            Event::at(at(9), Body::Result(failed)),
            Event::at(at(10), Body::Statement(stmt(6, "select secret from vault"))),
            Event::at(at(11), Body::Result(withheld)),
            Event::at(
                at(12),
                Body::SessionEnd(SessionEnd {
                    session: id(),
                    reason: "client closed".into(),
                    statements: 6,
                }),
            ),
        ];
        let expected = r#"-- airlock session 01900000-0000-7000-8000-000000000001
-- principal: ci-bot (via alice@example.com)
-- issuer: https://issuer.example, groups: agents, ci
-- connection: app, role: readonly
-- access rule: "agents", read-only
-- client: 10.0.0.5:51234, application_name: psql, TLS: on
-- started: 2024-05-01T12:00:00.000Z

app=> select id, email, blob from users;
 id |      email       |  blob
----+------------------+--------
  1 | a***@example.com | \xff00
 10 |                  | x
(120 rows)
(sample: first 2 rows)
-- 0.8 ms

app=> update accounts
app->    set active = false
app->  where id = $1
-- parameters: $1 = 'it''s', $2 = NULL, $3 = '\xffad'
UPDATE 3
-- 0.8 ms

app=> drop table users;
-- denied by rule "no-drops" (42501)
ERROR:  airlock: statement denied by rule "no-drops"  (SQLSTATE 42501)

app=> delete from sessions
-- held for approval by rule "deletes-need-approval", approved (approval apr-7)
DELETE 1
-- 0.8 ms

app=> select * from nope
ERROR:  relation "nope" does not exist  (SQLSTATE 42P01)
-- 0.8 ms

app=> select secret from vault
 secret
--------
(2 rows)
(values withheld: unmasked session)
-- 0.8 ms

-- session ended: client closed
"#;
        assert_eq!(render(&events), expected);
    }

    #[test]
    fn multi_statement_queries_print_each_result_in_index_order() {
        let mut s = stmt(1, "begin; insert into t values (1) returning id; commit;");
        s.kinds = vec!["transaction".into(), "insert".into(), "transaction".into()];
        let mut insert = res(1, 1, 1, Some("INSERT 0 1"));
        insert.sample = Some(Sample {
            columns: vec!["id".into()],
            rows: vec![vec![text("1")]],
            truncated: false,
            withheld: None,
        });
        let events = vec![
            start(),
            Event::at(at(1), Body::Statement(s)),
            Event::at(at(3), Body::Result(res(1, 2, 0, Some("COMMIT")))),
            Event::at(at(2), Body::Result(insert)),
            Event::at(at(2), Body::Result(res(1, 0, 0, Some("BEGIN")))),
        ];
        let out = render(&events);
        let body = out.split_once("\n\n").unwrap().1;
        assert_eq!(
            body,
            "app=> begin; insert into t values (1) returning id; commit;\n\
             BEGIN\n-- 0.8 ms\n\
             \x20id\n----\n  1\n(1 row)\nINSERT 0 1\n-- 0.8 ms\n\
             COMMIT\n-- 0.8 ms\n\n\
             -- session end not recorded (still running, or cut off)\n"
        );
    }

    #[test]
    fn recorded_text_cannot_drive_the_terminal() {
        let mut s = stmt(1, "select '\x1b]0;pwned\x07'");
        s.truncated = Some(Truncated {
            bytes: 70000,
            sha256: hex(&[0xab; 4]),
        });
        let mut r = res(1, 0, 1, Some("SELECT 1"));
        r.sample = Some(Sample {
            columns: vec!["?column?\x1b[2J".into()],
            rows: vec![vec![text("a\nb\u{9b}c")]],
            truncated: false,
            withheld: None,
        });
        let out = render(&[
            Event::at(at(1), Body::Statement(s)),
            Event::at(at(2), Body::Result(r)),
        ]);
        assert!(!out.chars().any(|c| c.is_control() && c != '\n'), "{out:?}");
        assert!(out.contains("-- airlock session 01900000-0000-7000-8000-000000000001\n-- (the session's start was not recorded)\n"), "{out}");
        assert!(out.contains("?=> select '\\x1b]0;pwned\\x07'\n"), "{out}");
        assert!(
            out.contains("-- (statement cut: 70000 bytes in all, sha256 abababab)\n"),
            "{out}"
        );
        assert!(out.contains(" ?column?\\x1b[2J\n"), "{out}");
        assert!(out.contains(" a\\nb\\x9bc\n"), "{out}");
    }

    #[test]
    fn results_without_sample_or_statement_still_show() {
        let mut suspended = res(2, 0, 50, None);
        suspended.suspended = true;
        let events = vec![
            start(),
            Event::at(at(1), Body::Statement(stmt(2, "fetch 50 from c"))),
            Event::at(at(2), Body::Result(suspended)),
            Event::at(at(3), Body::Result(res(1, 0, 7, Some("SELECT 7")))),
        ];
        let out = render(&events);
        assert!(
            out.contains(
                "app=> fetch 50 from c\n-- portal suspended after 50 rows (the client fetches more)\n-- 0.8 ms\n"
            ),
            "{out}"
        );
        assert!(
            out.contains(
                "-- result of statement #1, whose text was not recorded\n(7 rows)\n(no sample recorded)\n-- 0.8 ms\n"
            ),
            "{out}"
        );
    }

    #[test]
    fn numbers_and_durations() {
        for n in ["1", "-2.5", "1e10", "3.0E-2", "NaN", "-Infinity", "+7"] {
            assert!(is_number(n), "{n}");
        }
        for n in ["", "-", ".", "1.2.3", "1e", "0x10", "12a", "1 2"] {
            assert!(!is_number(n), "{n}");
        }
        assert_eq!(Millis(812).to_string(), "0.8");
        assert_eq!(Millis(0).to_string(), "0.0");
        assert_eq!(Millis(1_234_549).to_string(), "1234.5");
        assert_eq!(Millis(1_234_550).to_string(), "1234.6");
    }
}
