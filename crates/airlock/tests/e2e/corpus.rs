//! The evasion corpora's format (`tests/corpus/policy.txt` for
//! PostgreSQL, `tests/corpus/mysql.txt` for MySQL; the header of each file
//! describes it), and the check of one case through `airlock policy
//! explain`, shared by the corpus suites.

use std::borrow::Cow;
use std::fmt;

use airlock_policy::Decision;

/// The guardrails of SPEC §3, in its order, plus `deny-copy-file`.
pub(crate) const GUARDRAILS: &str = r#"guardrails:
  - name: no-drop-database
    match: {effects: [drop_database, alter_system, copy_program, unsafe_function]}
    action: deny
    message: "not allowed through airlock"
  - name: review-schema-changes
    match: {effects: [ddl, truncate]}
    action: approve
    approvers: [dba]
  - name: review-unbounded-writes
    match: {statements: [update, delete], where: absent}
    action: approve
    approvers: [dba]
  - name: review-large-writes
    match: {statements: [update, delete], estimated_rows_over: 1000}
    action: approve
    approvers: [dba]
  - name: unknown
    match: {statements: [unknown]}
    action: deny
  - name: deny-copy-file
    match: {effects: [copy_file]}
    action: deny
    message: "server-side files are not reachable through airlock"
"#;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Who {
    Agent,
    Dba,
}

impl Who {
    pub(crate) fn sub(self) -> &'static str {
        match self {
            Who::Agent => "agent",
            Who::Dba => "dba",
        }
    }

    pub(crate) fn groups(self) -> &'static [&'static str] {
        match self {
            Who::Agent => &["ai-agents"],
            Who::Dba => &["dba"],
        }
    }

    /// The role profile asked for (`policy explain --role`).
    pub(crate) fn role(self) -> Option<&'static str> {
        match self {
            Who::Agent => None,
            Who::Dba => Some("admin"),
        }
    }

    /// The startup `user`: the role profile the session gets.
    pub(crate) fn user(self) -> &'static str {
        match self {
            Who::Agent => "readonly",
            Who::Dba => "admin",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Expect {
    Allow,
    Deny(String),
    Approve(String),
    /// A clean error with this SQLSTATE.
    Error(String),
}

impl Expect {
    pub(crate) fn parse(s: &str) -> Result<Expect, String> {
        let mut words = s.split_whitespace();
        let (action, arg, rest) = (words.next(), words.next(), words.next());
        match (action, arg, rest) {
            (Some("allow"), None, None) => Ok(Expect::Allow),
            (Some("deny"), Some(rule), None) => Ok(Expect::Deny(rule.into())),
            (Some("approve"), Some(rule), None) => Ok(Expect::Approve(rule.into())),
            (Some("error"), Some(code), None) if code.len() == 5 => Ok(Expect::Error(code.into())),
            _ => Err(format!("bad expectation {s:?}")),
        }
    }

    pub(crate) fn of(d: &Decision) -> Expect {
        match d {
            Decision::Allow => Expect::Allow,
            Decision::Deny { rule, .. } => Expect::Deny(rule.clone()),
            Decision::Approve { rule, .. } | Decision::Review { rule, .. } => {
                Expect::Approve(rule.clone())
            }
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expect::Allow => f.write_str("allow"),
            Expect::Deny(r) => write!(f, "deny {r}"),
            Expect::Approve(r) => write!(f, "approve {r}"),
            Expect::Error(c) => write!(f, "error {c}"),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Case {
    pub(crate) name: String,
    /// The corpus file it is in.
    pub(crate) file: &'static str,
    /// Line of its `-- case:` header in policy.txt.
    pub(crate) line: usize,
    pub(crate) who: Who,
    pub(crate) expect: Expect,
    /// The decision end to end, when the gateway knows more than explain
    /// (the row estimate).
    pub(crate) gateway: Option<Expect>,
    /// The session runs `set standard_conforming_strings = off` first.
    pub(crate) scs_off: bool,
    /// …in the same write as the case.
    pub(crate) pipelined: bool,
    /// An allowed case that may change the database.
    pub(crate) changes: bool,
    /// For MySQL: the session's `sql_mode` parts that change lexing
    /// (`ansi_quotes`, `no_backslash_escapes`).
    pub(crate) mode: airlock_sql::mysql::Mode,
    pub(crate) sql: Vec<u8>,
}

impl Case {
    /// The decision the gateway must reach.
    pub(crate) fn end_to_end(&self) -> &Expect {
        self.gateway.as_ref().unwrap_or(&self.expect)
    }

    /// How failures name the case.
    pub(crate) fn label(&self) -> String {
        let sql = String::from_utf8_lossy(&self.sql);
        let mut short: String = sql.chars().take(100).collect();
        if short.len() < sql.len() {
            short.push('…');
        }
        format!(
            "{} ({}:{}, as {}) {short:?}",
            self.name,
            self.file,
            self.line,
            self.who.sub()
        )
    }
}

/// The SQL dialect of a corpus: which headers it may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// policy.txt: `scs` and `pipelined`.
    Postgres,
    /// mysql.txt: `mode`.
    Mysql,
}

const HEADER_KEYS: &[&str] = &[
    "as",
    "expect",
    "scs",
    "pipelined",
    "mode",
    "escapes",
    "changes",
    "gateway",
    "note",
];

/// The cases of a corpus `file` (for labels) in `dialect`.
pub(crate) fn parse_corpus(
    text: &str,
    file: &'static str,
    dialect: Dialect,
) -> Result<Vec<Case>, String> {
    struct Raw<'a> {
        name: String,
        line: usize,
        headers: Vec<(&'a str, &'a str)>,
        body: Vec<&'a str>,
        in_headers: bool,
    }
    let mut raws: Vec<Raw> = Vec::new();
    // Whether lines belong to the current case (not to a section comment).
    let mut in_case = false;
    // Not `lines()`: a carriage return is part of the SQL.
    for (i, line) in text.split('\n').enumerate() {
        if let Some(name) = line.strip_prefix("-- case:") {
            raws.push(Raw {
                name: name.trim().to_string(),
                line: i + 1,
                headers: Vec::new(),
                body: Vec::new(),
                in_headers: true,
            });
            in_case = true;
            continue;
        }
        if line.starts_with("-- ===") {
            in_case = false;
            continue;
        }
        let Some(raw) = raws.last_mut().filter(|_| in_case) else {
            continue;
        };
        if raw.in_headers {
            let header = line
                .strip_prefix("-- ")
                .and_then(|h| h.split_once(':'))
                .filter(|(k, _)| HEADER_KEYS.contains(k));
            if let Some((key, value)) = header {
                raw.headers.push((key, value.trim()));
                continue;
            }
            raw.in_headers = false;
        }
        raw.body.push(line);
    }

    let mut cases: Vec<Case> = Vec::new();
    for raw in raws {
        let at = format!("line {} (case {})", raw.line, raw.name);
        if raw.name.is_empty() || cases.iter().any(|c| c.name == raw.name) {
            return Err(format!("{at}: a case needs a unique name"));
        }
        let one = |key: &str| -> Result<Option<&str>, String> {
            let mut values = raw.headers.iter().filter(|(k, _)| *k == key);
            match (values.next(), values.next()) {
                (v, None) => Ok(v.map(|(_, v)| *v)),
                _ => Err(format!("{at}: `{key}` given twice")),
            }
        };
        let flag = |key: &str, on: &str| -> Result<bool, String> {
            match one(key)? {
                None => Ok(false),
                Some(v) if v == on => Ok(true),
                Some(v) => Err(format!("{at}: `{key}: {v}` (only `{on}` is known)")),
            }
        };
        let who = match one("as")? {
            Some("agent") => Who::Agent,
            Some("dba") => Who::Dba,
            other => return Err(format!("{at}: `as` must be agent or dba, not {other:?}")),
        };
        let expect = Expect::parse(one("expect")?.ok_or(format!("{at}: no `expect`"))?)
            .map_err(|e| format!("{at}: {e}"))?;
        let gateway = match one("gateway")? {
            Some(g) => Some(Expect::parse(g).map_err(|e| format!("{at}: {e}"))?),
            None => None,
        };
        let text =
            expand(raw.body.join("\n").trim_end_matches('\n')).map_err(|e| format!("{at}: {e}"))?;
        let sql = if flag("escapes", "yes")? {
            unescape(&text).map_err(|e| format!("{at}: {e}"))?
        } else {
            text.into_bytes()
        };
        let allowed = |key: &str| -> Result<(), String> {
            let only_mysql = key == "mode";
            let only_postgres = key == "scs" || key == "pipelined";
            let ok = match dialect {
                Dialect::Postgres => !only_mysql,
                Dialect::Mysql => !only_postgres,
            };
            if ok || one(key)?.is_none() {
                Ok(())
            } else {
                Err(format!("{at}: `{key}` is not a header of this corpus"))
            }
        };
        for key in ["scs", "pipelined", "mode"] {
            allowed(key)?;
        }
        let mut mode = airlock_sql::mysql::Mode::default();
        for part in one("mode")?.into_iter().flat_map(|m| m.split(',')) {
            match part.trim() {
                "ansi_quotes" => mode.ansi_quotes = true,
                "no_backslash_escapes" => mode.no_backslash_escapes = true,
                other => return Err(format!("{at}: unknown mode {other:?}")),
            }
        }
        let case = Case {
            name: raw.name.clone(),
            file,
            mode,
            line: raw.line,
            who,
            expect,
            gateway,
            scs_off: flag("scs", "off")?,
            pipelined: flag("pipelined", "yes")?,
            changes: flag("changes", "yes")?,
            sql,
        };
        if case.pipelined && !case.scs_off {
            return Err(format!("{at}: `pipelined` goes with `scs: off`"));
        }
        if case.changes && (case.who != Who::Dba || case.end_to_end() != &Expect::Allow) {
            return Err(format!(
                "{at}: only an allowed dba case may change the database"
            ));
        }
        cases.push(case);
    }
    Ok(cases)
}

/// Expands `{{repeat:N:TEXT}}`.
pub(crate) fn expand(sql: &str) -> Result<String, String> {
    const OPEN: &str = "{{repeat:";
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let end = after.find("}}").ok_or("unterminated {{repeat:…}}")?;
        let (n, text) = after[..end]
            .split_once(':')
            .ok_or("expected {{repeat:N:TEXT}}")?;
        let n: usize = n.parse().map_err(|_| format!("bad repeat count {n:?}"))?;
        out.push_str(&text.repeat(n));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Decodes `\xHH`, `\u{H…}`, `\n`, `\r`, `\t`, `\f`, `\v`, `\0` and `\\`.
pub(crate) fn unescape(s: &str) -> Result<Vec<u8>, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] != b'\\' {
            out.push(b[i]);
            i += 1;
            continue;
        }
        let simple = match b.get(i + 1) {
            Some(b'n') => Some(b'\n'),
            Some(b'r') => Some(b'\r'),
            Some(b't') => Some(b'\t'),
            Some(b'f') => Some(0x0c),
            Some(b'v') => Some(0x0b),
            Some(b'0') => Some(0),
            Some(b'\\') => Some(b'\\'),
            _ => None,
        };
        if let Some(byte) = simple {
            out.push(byte);
            i += 2;
        } else if b.get(i + 1) == Some(&b'x') {
            let hex = s.get(i + 2..i + 4).ok_or("short \\x escape")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| format!("bad \\x{hex}"))?);
            i += 4;
        } else if s[i..].starts_with("\\u{") {
            let end = s[i..].find('}').ok_or("unterminated \\u{…}")? + i;
            let hex = &s[i + 3..end];
            let c = u32::from_str_radix(hex, 16)
                .ok()
                .and_then(char::from_u32)
                .ok_or(format!("bad \\u{{{hex}}}"))?;
            out.extend_from_slice(c.encode_utf8(&mut [0; 4]).as_bytes());
            i = end + 1;
        } else {
            return Err(format!("unknown escape at byte {i}"));
        }
    }
    Ok(out)
}

/// Checks one case through `airlock::explain` on `connection`.
pub(crate) fn explain_case(
    config: &airlock_config::Config,
    connection: &str,
    case: &Case,
) -> Result<(), String> {
    let Ok(text) = std::str::from_utf8(&case.sql) else {
        // explain takes text: bytes that are not UTF-8 cannot reach it. The
        // gateway answers them with 22021, which the end-to-end test checks.
        return match &case.expect {
            Expect::Error(code) if code == "22021" => Ok(()),
            other => Err(format!(
                "not UTF-8, so it must expect error 22021, not {other}"
            )),
        };
    };
    // explain models no session. In a session with
    // standard_conforming_strings off, the gateway parses the text as
    // `to_conforming` rewrites it, and refuses (rule unknown) what that
    // rewrite cannot handle; explain is asked about the same text.
    let text: Cow<'_, str> = if case.scs_off {
        match airlock_sql::scs::to_conforming(text) {
            Ok(t) => t,
            Err(_) => {
                let got = Expect::Deny("unknown".into());
                return if got == case.expect {
                    Ok(())
                } else {
                    Err(format!("expected {}, got {got}", case.expect))
                };
            }
        }
    } else {
        text.into()
    };
    let groups: Vec<String> = case.who.groups().iter().map(|g| g.to_string()).collect();
    let report = airlock::explain::explain_in_mode(
        config,
        connection,
        &airlock::explain::Asker::new(case.who.sub(), &groups),
        case.who.role(),
        &text,
        case.mode,
    )
    .map_err(|e| format!("explain failed: {e}"))?;
    let got = Expect::of(&report.decision);
    let ok = match &case.expect {
        // A clean error from the gateway or the server: explain must at
        // least not allow the text.
        Expect::Error(_) => got != Expect::Allow,
        want => *want == got,
    };
    if ok {
        return Ok(());
    }
    let statements: Vec<String> = report
        .statements
        .iter()
        .map(|s| {
            let st = &s.statement;
            let mut d = format!("{}[{}]", st.kind, st.effects);
            if !st.nested.is_empty() {
                let nested: Vec<&str> = st.nested.iter().map(|k| k.name()).collect();
                d.push_str(&format!(" runs {}", nested.join(",")));
            }
            if let Some(w) = st.has_where {
                d.push_str(if w { " where:present" } else { " where:absent" });
            }
            d
        })
        .collect();
    Err(format!(
        "expected {}, got {got} (classified as {})",
        case.expect,
        statements.join("; ")
    ))
}

pub(crate) fn finish(what: &str, total: usize, failures: Vec<String>) {
    assert!(
        failures.is_empty(),
        "{} of {total} corpus cases failed {what}:\n  {}",
        failures.len(),
        failures.join("\n  ")
    );
}
