//! MySQL and MariaDB statements → the policy core's [`Statement`] model.
//!
//! # Why a pre-lexer
//!
//! sqlparser's `MySqlDialect` does not read a text exactly as the server
//! does, and the places where they differ are exactly where an attacker
//! hides code: executable comments (`/*!50000 DROP DATABASE x*/` runs on
//! the server, sqlparser sees a comment), `-- ` comments (`--1` is minus
//! minus one to the server), backslash escapes and `NO_BACKSLASH_ESCAPES`,
//! `ANSI_QUOTES`, introducers. So [`lex`] reads the text first, as the
//! server's lexer does, splits it into statements, and hands sqlparser
//! each statement rewritten into a token language the two read alike.
//!
//! What the pre-lexer handles:
//! - statements split on `;` outside strings, quoted names and comments;
//! - `'…'` strings, and `"…"` strings unless `ANSI_QUOTES` (then `"…"` is
//!   a name); doubled quotes; backslash escapes unless
//!   `NO_BACKSLASH_ESCAPES`; adjacent strings concatenated (`'a' 'b'`);
//!   `N'…'`, `_charset'…'` and `_charset 0x…` (known character sets only:
//!   another `_word` is a name), `X'…'`, `0x…`, `B'…'`, `0b…`. Every
//!   literal reaches sqlparser as a plain placeholder string; its decoded
//!   value is kept aside (for `PREPARE … FROM '…'` and `SET`);
//! - `` `…` `` names (doubled backquotes), rewritten backquoted; words
//!   that are not plain ASCII are backquoted too;
//! - comments: `#…` and `-- …` to the next `\n` (`--` only when followed
//!   by whitespace, a control character or the end: `--1` is code),
//!   `/* … */` (not nested);
//! - executable comments `/*! … */`, `/*!NNNNN … */`, `/*!NNNNNN … */`,
//!   `/*M! … */`, `/*M!NNNNNN … */`: their contents are code, whatever
//!   the version (a version the server is older than would make them a
//!   comment there: airlock judges the code anyway, failing closed);
//! - `/*+ … */` optimizer hints are comments (as MariaDB reads them),
//!   except a hint that names `SET_VAR` (MySQL 8 runs it), which is refused;
//! - `\N` outside strings is `NULL`; `@name`, `@'name'`, `` @`name` ``,
//!   `@@name`, `@@scope.name`; `?` parameters; MySQL's multi-character
//!   operators (`<=>`, `:=`, `->>`…).
//!
//! Refused (the whole text is `unknown`): an unterminated string, name or
//! comment; a `;`, a comment or another executable comment inside an
//! executable comment; a version of other than 5 or 6 digits; a number run
//! into identifier characters (`1e`, `0x1g`, `2abc`: names to the server,
//! which sqlparser would read otherwise); a backslash outside a string;
//! control characters outside strings and comments.
//!
//! The text must be in a character set in which no byte of a multibyte
//! character is ASCII (utf8mb4, utf8mb3, latin1, ascii, binary): in big5,
//! sjis, cp932, gbk or gb18030 a `\` or `'` byte can hide in a character.
//! The door keeps the session's character set to those ([`tracked`] tells
//! it when a statement changes it).
//!
//! # Classification
//!
//! The statement's leading words decide the kind (a table in
//! docs/policy.md); statements whose effects are fixed by their first words
//! (administration, privileges, transaction control) are classified from
//! the tokens; queries, DML and `CREATE TABLE … SELECT` are parsed by
//! sqlparser for their relations, functions, WHERE clauses and lineage,
//! and the parse must agree with the leading words. Whatever is not mapped
//! is `unknown`.

mod ast;
mod lex;
#[cfg(test)]
mod tests;

use airlock_policy::{Disclosure, Effect, Effects, Statement, StatementKind, Transaction};

use lex::{Kind, Token};

/// The parts of a session's `sql_mode` that change how a text lexes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Mode {
    pub ansi_quotes: bool,
    pub no_backslash_escapes: bool,
}

impl Mode {
    /// From a `sql_mode` value such as `"STRICT_TRANS_TABLES,ANSI_QUOTES"`
    /// (case-insensitive; `ANSI` implies `ANSI_QUOTES`).
    pub fn from_sql_mode(sql_mode: &str) -> Mode {
        let mut mode = Mode::default();
        for part in sql_mode.split(',') {
            match part.trim().to_ascii_uppercase().as_str() {
                "ANSI_QUOTES" | "ANSI" => mode.ansi_quotes = true,
                "NO_BACKSLASH_ESCAPES" => mode.no_backslash_escapes = true,
                _ => {}
            }
        }
        mode
    }
}

/// MySQL and MariaDB functions that read server files or state, wait on or
/// signal other sessions, run code outside SQL, or only serve to stall the
/// server. Matched on the last name part, lower case; `*` ends a prefix.
/// `sleep` and `benchmark` are here as denial of service: a read-only
/// principal must not hold a connection or a core for as long as it likes.
pub const DEFAULT_UNSAFE_FUNCTIONS: &[&str] = &[
    "load_file",
    "sys_exec",
    "sys_eval",
    "sys_bineval",
    "sys_get",
    "sys_set",
    "lib_mysqludf_*",
    "http_get",
    "http_post",
    "sleep",
    "benchmark",
    "master_pos_wait",
    "source_pos_wait",
    "master_gtid_wait",
    "wait_for_executed_gtid_set",
    "wait_until_sql_thread_after_gtids",
    "binlog_gtid_pos",
    "des_encrypt",
    "des_decrypt",
];

/// Functions that change state although they appear in a query: named
/// locks held across sessions (as PostgreSQL's advisory locks) and
/// MariaDB's sequences.
const WRITING_FUNCTIONS: &[&str] = &[
    "get_lock",
    "release_lock",
    "release_all_locks",
    "nextval",
    "setval",
    "lastval",
];

/// Session variables a read-only principal may set: how results are
/// presented, how long statements may run, how they are planned. Never
/// `sql_mode` (it changes how airlock must lex) and never a character set
/// in which airlock cannot lex (see [`SAFE_CHARSETS`]).
pub const HARMLESS_VARIABLES: &[&str] = &[
    "autocommit",
    "time_zone",
    "sql_select_limit",
    "net_read_timeout",
    "net_write_timeout",
    "wait_timeout",
    "interactive_timeout",
    "max_execution_time",
    "max_statement_time",
    "lock_wait_timeout",
    "innodb_lock_wait_timeout",
    "group_concat_max_len",
    "div_precision_increment",
    "lc_time_names",
    "lc_messages",
    "sql_notes",
    "sql_warnings",
    "sql_quote_show_create",
    "sql_big_selects",
    "max_join_size",
    "transaction_isolation",
    "tx_isolation",
    "optimizer_switch",
    "optimizer_search_depth",
    "optimizer_prune_level",
    "join_buffer_size",
    "sort_buffer_size",
    "max_sort_length",
    "cte_max_recursion_depth",
    "default_week_format",
    "collation_connection",
    "character_set_results",
    "character_set_connection",
    "character_set_client",
    "transaction_read_only",
    "tx_read_only",
];

/// Character sets whose multibyte characters never contain an ASCII byte,
/// so that airlock and the server split a text alike.
pub const SAFE_CHARSETS: &[&str] = &[
    "utf8mb4", "utf8mb3", "utf8", "latin1", "ascii", "binary", "default",
];

/// Settings whose value must be checked, not just their name.
const CHARSET_VARIABLES: &[&str] = &[
    "character_set_results",
    "character_set_connection",
    "character_set_client",
];

fn matches(list: &[impl AsRef<str>], name: &str) -> bool {
    crate::pg::matches(list, name)
}

/// Whether a `sql_mode` value visibly leaves lexing alone: built only of
/// string literals naming no mode that changes it (`ANSI_QUOTES`,
/// `NO_BACKSLASH_ESCAPES`, `ANSI`), the current `@@sql_mode`, `CONCAT` and
/// punctuation. Connector/J's `concat(@@sql_mode, ',STRICT_TRANS_TABLES')`
/// is such a value; `@x` or a function of anything else is not.
fn sql_mode_keeps_lexing(value: &[Token]) -> bool {
    !value.is_empty()
        && value.iter().all(|t| match t.kind {
            // A character string's text is `'` and its value; hex and bit
            // literals are not read.
            Kind::Str => t.text.strip_prefix('\'').is_some_and(|v| {
                !v.split(',')
                    .map(|m| m.trim().to_ascii_uppercase())
                    .any(|m| matches!(m.as_str(), "ANSI_QUOTES" | "NO_BACKSLASH_ESCAPES" | "ANSI"))
            }),
            Kind::SysVar => matches!(t.text.as_str(), "sql_mode" | "session.sql_mode"),
            Kind::Word => t.is("concat"),
            Kind::Punct => t.is_punct("(") || t.is_punct(")") || t.is_punct(","),
            _ => false,
        })
}

/// What a statement changes in the session that the door must follow.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tracked {
    /// It may change `sql_mode`: the door re-reads `@@sql_mode` after it
    /// ran (and computes the next [`Mode`] from it), or refuses it.
    pub sql_mode: bool,
    /// It may change the client character set (`SET NAMES`, `SET
    /// CHARACTER SET`, `character_set_client`): the door re-reads it and
    /// ends the session if it is not one of [`SAFE_CHARSETS`].
    pub charset: bool,
}

/// What the statement text `sql` (one statement, as [`Statement::span`]
/// cuts it from its message) changes in the session that the door must
/// follow. Fails closed: a `SET` it cannot read, or a text that does not
/// lex, may change both.
pub fn tracked(sql: &str, mode: Mode) -> Tracked {
    let all = Tracked {
        sql_mode: true,
        charset: true,
    };
    let Ok(lexed) = lex::lex(sql, mode) else {
        return all;
    };
    let mut out = Tracked::default();
    for piece in &lexed.pieces {
        let t = &piece.tokens;
        if !t.first().is_some_and(|t| t.is("set")) {
            continue;
        }
        match set_targets(&t[1..]) {
            Some(targets) => {
                for target in targets {
                    let name = target.name.as_str();
                    out.sql_mode |= name == "sql_mode";
                    out.charset |= matches!(
                        name,
                        "names"
                            | "character set"
                            | "character_set_client"
                            | "character_set_connection"
                            | "character_set_results"
                    );
                }
            }
            None => return all,
        }
    }
    out
}

/// Byte spans of the literals (strings, numbers, hex/bit literals) and
/// comments in `sql`, in order, for redacting recorded text; `None` when it
/// cannot lex. Executable comments are code: only the literals in them are
/// listed.
pub fn value_spans(sql: &str, mode: Mode) -> Option<Vec<(usize, usize)>> {
    let lexed = lex::lex(sql, mode).ok()?;
    let mut spans = lexed.literals;
    spans.extend(lexed.comments);
    spans.sort_unstable();
    Some(spans)
}

/// Analyzes MySQL and MariaDB statements.
#[derive(Debug, Clone)]
pub struct Analyzer {
    /// Tells analyzers apart, for the analysis cache.
    id: u64,
    unsafe_functions: Vec<String>,
}

impl Default for Analyzer {
    fn default() -> Self {
        Analyzer::new(&[])
    }
}

impl Analyzer {
    /// `extra_unsafe`: the configuration's extra unsafe function names
    /// (compared in lower case; `prefix*` matches a prefix), added to
    /// [`DEFAULT_UNSAFE_FUNCTIONS`].
    pub fn new(extra_unsafe: &[String]) -> Analyzer {
        let mut unsafe_functions: Vec<String> = DEFAULT_UNSAFE_FUNCTIONS
            .iter()
            .map(|s| s.to_string())
            .collect();
        unsafe_functions.extend(extra_unsafe.iter().map(|s| s.to_lowercase()));
        Analyzer {
            id: crate::next_analyzer_id(),
            unsafe_functions,
        }
    }

    /// This analyzer's identity, for caches.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Every statement of a COM_QUERY text (multi-statements included), in
    /// order, each with its byte span in `sql`. Never empty: an empty text
    /// is one `empty` statement. `EXECUTE` is not resolved here: see
    /// [`crate::resolve`].
    pub fn analyze(&self, sql: &str, mode: Mode) -> Vec<Statement> {
        let lexed = match lex::lex(sql, mode) {
            Ok(l) => l,
            Err(e) => {
                return vec![Statement::unknown(
                    format!(
                        "it does not lex as MySQL would: {} at byte {}",
                        e.reason, e.at
                    ),
                    (0, sql.len()),
                )];
            }
        };
        let n = lexed.pieces.len();
        let mut statements: Vec<Statement> = lexed
            .pieces
            .iter()
            .enumerate()
            // A trailing `;` leaves an empty piece behind: not a statement.
            .filter(|(i, p)| !(p.tokens.is_empty() && *i + 1 == n && n > 1))
            .map(|(_, p)| self.statement(&p.tokens, p.span, mode))
            .collect();
        // The server lexes what follows a change of sql_mode or of the
        // character set in the new way, which this analysis did not: such
        // a SET must come last in its message.
        if let Some(at) = statements.iter().position(|st| {
            // Only a SET (or what could not be read) changes lexing.
            matches!(st.kind, StatementKind::SetConfig | StatementKind::Unknown) && {
                let t = tracked(sql.get(st.span.0..st.span.1).unwrap_or(sql), mode);
                t.sql_mode || t.charset
            }
        }) {
            for st in statements.iter_mut().skip(at + 1) {
                if st.kind != StatementKind::Empty {
                    *st = Statement::unknown(
                        "it follows, in the same message, a statement that may change how the server lexes (sql_mode or the character set); send such a SET on its own",
                        st.span,
                    );
                }
            }
        }
        statements
    }

    /// One statement from its tokens.
    pub(crate) fn statement(&self, t: &[Token], span: (usize, usize), mode: Mode) -> Statement {
        if t.is_empty() {
            return empty(span);
        }
        let mut s = self.classify(t, span, mode);
        if s.kind != StatementKind::Unknown {
            self.scan_calls(t, &mut s);
            s.disclosure = disclosure(&s, t);
        }
        s
    }

    /// A safety net under every classification: any `word (` is a call to
    /// judge, whatever the parse made of it; and `NEXT VALUE FOR` writes.
    fn scan_calls(&self, t: &[Token], s: &mut Statement) {
        let explained = s.kind == StatementKind::Explain && !s.effects.contains(Effect::Write);
        for (i, tok) in t.iter().enumerate() {
            if tok.kind != Kind::Word || !t.get(i + 1).is_some_and(|n| n.is_punct("(")) {
                continue;
            }
            let name = tok.text.to_lowercase();
            let unsafe_ = matches(&self.unsafe_functions, &name);
            let writes = matches(WRITING_FUNCTIONS, &name);
            if (unsafe_ || writes) && !s.functions.contains(&name) {
                s.functions.push(name);
            }
            if explained {
                // EXPLAIN without ANALYZE calls nothing.
                continue;
            }
            if unsafe_ {
                s.effects.insert(Effect::UnsafeFunction);
            }
            if writes {
                s.effects.insert(Effect::Write);
            }
        }
        if !explained
            && t.windows(3).any(|w| {
                (w[0].is("next") || w[0].is("previous")) && w[1].is("value") && w[2].is("for")
            })
        {
            s.effects.insert(Effect::Write);
        }
    }

    fn classify(&self, t: &[Token], span: (usize, usize), mode: Mode) -> Statement {
        use Effect::*;
        use StatementKind as K;
        let first = &t[0];
        let word = |i: usize| {
            t.get(i)
                .filter(|t| t.kind == Kind::Word)
                .map(|t| t.text.to_ascii_lowercase())
        };
        let w0 = word(0).unwrap_or_default();
        let w1 = word(1).unwrap_or_default();
        let fixed = |kind: K, effects: &[Effect]| fixed(kind, effects, span);
        if first.is_punct("(") {
            return self.parsed(t, span, mode);
        }
        match w0.as_str() {
            "select" | "with" | "table" | "values" | "insert" | "replace" | "update" | "delete" => {
                self.parsed(t, span, mode)
            }
            "explain" | "describe" | "desc" => self.explain(t, span, mode),
            "analyze" if !matches!(w1.as_str(), "table" | "local" | "no_write_to_binlog") => {
                // MariaDB's ANALYZE <statement> runs it.
                self.explain(t, span, mode)
            }
            "analyze" | "optimize" | "repair" => fixed(K::Maintenance, &[Write]),
            "check" | "checksum" => fixed(K::Maintenance, &[Read]),
            "show" => self.show(t, span),
            "help" => fixed(K::Show, &[Read]),
            "use" => match &t[1..] {
                // The door checks the database against the route (and
                // refuses another): only then is it harmless.
                [db] if db.ident().is_some() => Statement {
                    name: db.ident().map(str::to_string),
                    harmless_config: true,
                    ..fixed(K::SetConfig, &[SessionConfig])
                },
                _ => Statement::unknown("USE takes one database name", span),
            },
            "begin" => match &t[1..] {
                [] => begin(fixed(K::Transaction, &[TransactionControl])),
                [w] if w.is("work") => begin(fixed(K::Transaction, &[TransactionControl])),
                // MariaDB's `BEGIN NOT ATOMIC … END` is a block of code.
                _ => Statement::unknown(
                    "BEGIN that is not a transaction (a compound statement)",
                    span,
                ),
            },
            "start" if w1 == "transaction" => {
                let mut s = begin(fixed(K::Transaction, &[TransactionControl]));
                if t.windows(2).any(|w| w[0].is("read") && w[1].is("write")) {
                    s.effects.insert(SessionConfig);
                }
                s
            }
            "commit" | "rollback" | "savepoint" | "release" => {
                // ROLLBACK [WORK] TO [SAVEPOINT] x undoes part of it.
                let to = t.iter().take(3).any(|w| w.is("to"));
                Statement {
                    transaction: Some(match w0.as_str() {
                        "commit" => Transaction::Commit,
                        "rollback" if !to => Transaction::Rollback,
                        _ => Transaction::Savepoint,
                    }),
                    ..fixed(K::Transaction, &[TransactionControl])
                }
            }
            "xa" => {
                // Finishing a prepared XA transaction, maybe another
                // session's, persists it: a write.
                let effects: &[Effect] = if matches!(w1.as_str(), "prepare" | "commit" | "rollback")
                {
                    &[TransactionControl, Write]
                } else {
                    &[TransactionControl]
                };
                // Its work is held apart from the session's transaction.
                Statement {
                    transaction: Some(Transaction::Prepare),
                    ..fixed(K::Transaction, effects)
                }
            }
            "set" => self.set(t, span, mode),
            "prepare" => self.prepare(t, span, mode),
            "execute" => match &t[1..] {
                [w, ..] if w.is("immediate") => Statement::unknown(
                    "EXECUTE IMMEDIATE runs dynamic SQL airlock does not follow",
                    span,
                ),
                [name, rest @ ..] if name.ident().is_some() && using_variables(rest) => Statement {
                    name: name.ident().map(str::to_string),
                    ..fixed(K::Execute, &[])
                },
                _ => {
                    Statement::unknown("EXECUTE takes a statement name and USING @variables", span)
                }
            },
            "deallocate" | "drop" if w1 == "prepare" => match &t[2..] {
                [name] if name.ident().is_some() => Statement {
                    name: name.ident().map(str::to_string),
                    ..fixed(K::Deallocate, &[])
                },
                _ => Statement::unknown("DEALLOCATE PREPARE takes one name", span),
            },
            "call" => {
                let mut s = self.parsed(t, span, mode);
                if s.kind == K::Call {
                    s.effects.extend(Effects::of(&[Write, DynamicSql]));
                }
                s
            }
            "do" => self.do_(t, span, mode),
            "handler" => self.handler(t, span),
            "lock" => match w1.as_str() {
                "table" | "tables" => {
                    let writes = t.iter().any(|t| t.is("write"));
                    Statement {
                        relations: lock_relations(&t[2..]),
                        ..fixed(K::Lock, if writes { &[Write] } else { &[Read] })
                    }
                }
                // LOCK INSTANCE FOR BACKUP blocks the server's DDL.
                _ => fixed(K::Maintenance, &[AlterSystem]),
            },
            "unlock" => match w1.as_str() {
                "table" | "tables" => fixed(K::Lock, &[TransactionControl]),
                _ => fixed(K::Maintenance, &[AlterSystem]),
            },
            "load" => match w1.as_str() {
                "data" | "xml" => self.load_data(t, span),
                // LOAD INDEX INTO CACHE
                _ => fixed(K::Maintenance, &[Write]),
            },
            "cache" => fixed(K::Maintenance, &[Write]),
            "truncate" => {
                let name = if t.get(1).is_some_and(|t| t.is("table")) {
                    &t[2..]
                } else {
                    &t[1..]
                };
                Statement {
                    relations: qualified(name).into_iter().collect(),
                    ..fixed(K::Truncate, &[Truncate, Write])
                }
            }
            "create" => self.create(t, span, mode),
            "alter" => self.alter(t, span),
            "drop" => self.drop(t, span),
            "rename" => match w1.as_str() {
                "user" => fixed(K::Grant, &[Privilege]),
                "table" | "tables" => fixed(K::Ddl, &[Ddl]),
                _ => Statement::unknown("RENAME of something other than tables or users", span),
            },
            "grant" | "revoke" => fixed(K::Grant, &[Privilege]),
            "kill" => self.kill(t, span),
            "flush" | "reset" | "purge" | "shutdown" | "restart" | "install" | "uninstall"
            | "binlog" | "backup" | "clone" => {
                let mut s = fixed(K::Maintenance, &[AlterSystem]);
                if w0 == "binlog" {
                    // BINLOG '…' applies raw row events.
                    s.effects.extend(Effects::of(&[Write, DynamicSql]));
                }
                if w0 == "clone" {
                    s.effects.insert(CopyFile);
                }
                s
            }
            "change" if matches!(w1.as_str(), "master" | "replication") => {
                fixed(K::Maintenance, &[AlterSystem])
            }
            "start" | "stop"
                if matches!(
                    w1.as_str(),
                    "slave" | "replica" | "all" | "group_replication"
                ) =>
            {
                fixed(K::Maintenance, &[AlterSystem])
            }
            "import" if w1 == "table" => fixed(K::Ddl, &[Ddl, Write, CopyFile]),
            _ => Statement::unknown(
                format!(
                    "statement type {} is not classified",
                    first.text.to_uppercase()
                ),
                span,
            ),
        }
    }

    /// Queries and DML, through sqlparser.
    fn parsed(&self, t: &[Token], span: (usize, usize), mode: Mode) -> Statement {
        ast::analyze(self, t, span, mode)
    }

    /// EXPLAIN/DESCRIBE/DESC: of a table (`show`), or of a statement:
    /// `explain` with the statement in `inner`; `EXPLAIN ANALYZE` (MySQL)
    /// and MariaDB's `ANALYZE <statement>` run it.
    fn explain(&self, t: &[Token], span: (usize, usize), mode: Mode) -> Statement {
        use StatementKind as K;
        let mut i = 1;
        let mut runs = t[0].is("analyze");
        loop {
            match t.get(i) {
                Some(w) if w.is("analyze") => {
                    runs = true;
                    i += 1;
                }
                Some(w) if w.is("extended") || w.is("partitions") => i += 1,
                Some(w) if w.is("format") => {
                    // FORMAT = name
                    if t.get(i + 1).is_some_and(|t| t.is_punct("=")) && t.get(i + 2).is_some() {
                        i += 3;
                    } else {
                        return Statement::unknown("EXPLAIN FORMAT without a value", span);
                    }
                }
                _ => break,
            }
        }
        let rest = &t[i..];
        let Some(head) = rest.first() else {
            return Statement::unknown("EXPLAIN of nothing", span);
        };
        let is_statement = head.is_punct("(")
            || [
                "select", "with", "table", "values", "insert", "replace", "update", "delete",
            ]
            .iter()
            .any(|w| head.is(w));
        if !is_statement {
            if runs {
                return Statement::unknown("ANALYZE of something other than a statement", span);
            }
            // EXPLAIN tbl [col], EXPLAIN FOR CONNECTION n.
            let relations = if head.is("for") {
                Vec::new()
            } else {
                qualified(rest).into_iter().collect()
            };
            return Statement {
                relations,
                ..fixed(K::Show, &[Effect::Read], span)
            };
        }
        let inner = self.statement(rest, span, mode);
        if inner.kind == K::Unknown {
            return Statement { span, ..inner };
        }
        let mut s = fixed(K::Explain, &[Effect::Read], span);
        s.relations = inner.relations.clone();
        s.functions = inner.functions.clone();
        if runs {
            s.effects.extend(inner.effects);
            s.nested = std::iter::once(inner.kind)
                .chain(inner.nested.iter().copied())
                .collect();
            s.has_where = inner.has_where;
            s.harmless_config = inner.harmless_config;
        }
        s.inner = Some(Box::new(inner));
        s
    }

    fn show(&self, t: &[Token], span: (usize, usize)) -> Statement {
        let mut s = fixed(StatementKind::Show, &[Effect::Read], span);
        // The binary and relay logs hold every statement's values,
        // unmasked: reading them is reading the server's files.
        if t.windows(2)
            .any(|w| (w[0].is("binlog") || w[0].is("relaylog")) && w[1].is("events"))
        {
            s.effects.insert(Effect::UnsafeFunction);
        }
        s
    }

    fn set(&self, t: &[Token], span: (usize, usize), mode: Mode) -> Statement {
        use Effect::*;
        use StatementKind as K;
        let w1 = t
            .get(1)
            .map(|t| t.text.to_ascii_lowercase())
            .unwrap_or_default();
        match w1.as_str() {
            "password" => return fixed(K::Grant, &[Privilege], span),
            "role" => return fixed(K::SetRole, &[Privilege], span),
            "default" if t.get(2).is_some_and(|t| t.is("role")) => {
                return fixed(K::Grant, &[Privilege], span);
            }
            "statement" => {
                return Statement::unknown("SET STATEMENT … FOR is not followed by airlock", span);
            }
            _ => {}
        }
        let Some(targets) = set_targets(&t[1..]) else {
            return Statement::unknown("a SET airlock cannot read", span);
        };
        let mut s = fixed(K::SetConfig, &[SessionConfig], span);
        let mut harmless = true;
        for target in &targets {
            if target.global {
                s.effects.insert(AlterSystem);
                harmless = false;
            }
            // Turning autocommit on commits the open transaction (and
            // anything but a literal off may be on).
            if !target.user
                && target.name == "autocommit"
                && !matches!(target.value, [v] if v.is("off") || v.is("false") || v.text == "0")
            {
                s.effects.insert(TransactionControl);
                s.transaction = Some(Transaction::Commit);
            }
            if target.user {
                // User variables: the session's scratch space. What they
                // are set from is `written` (below).
            } else if target.name == "transaction" {
                // SET [SESSION] TRANSACTION …: harmless unless READ WRITE.
                if target
                    .value
                    .windows(2)
                    .any(|w| w[0].is("read") && w[1].is("write"))
                {
                    harmless = false;
                }
            } else if matches!(target.name.as_str(), "names" | "character set") {
                harmless &= target.value.first().is_some_and(safe_charset);
            } else if CHARSET_VARIABLES.contains(&target.name.as_str()) {
                harmless &= matches!(target.value, [v] if safe_charset(v));
            } else if target.name == "sql_mode" {
                harmless &= sql_mode_keeps_lexing(target.value);
            } else if matches!(
                target.name.as_str(),
                "transaction_read_only" | "tx_read_only"
            ) {
                harmless &=
                    matches!(target.value, [v] if v.is("on") || v.is("true") || v.text == "1");
            } else {
                harmless &= HARMLESS_VARIABLES.contains(&target.name.as_str());
            }
            // The value: a single word, literal or variable needs no parse;
            // an expression is read as `SELECT expr`.
            let keywords = matches!(
                target.name.as_str(),
                "names" | "character set" | "transaction"
            ) && !target.user;
            let simple = keywords
                || matches!(target.value, [v] if matches!(v.kind, Kind::Word | Kind::Str | Kind::Number | Kind::UserVar | Kind::SysVar | Kind::Quoted))
                || target.value.is_empty()
                || matches!(target.value, [sign, v] if sign.is_punct("-") && v.kind == Kind::Number);
            if simple {
                continue;
            }
            let value = ast::expression(self, target.value, span, mode);
            if value.kind == K::Unknown {
                return value;
            }
            s.effects
                .extend(value.effects.minus(Effects::of(&[SessionConfig])));
            for r in value.relations {
                if !s.relations.contains(&r) {
                    s.relations.push(r);
                }
            }
            for f in value.functions {
                if !s.functions.contains(&f) {
                    s.functions.push(f);
                }
            }
            // The value goes into a variable, not into the result.
            for o in value.lineage.outputs {
                let (airlock_policy::lineage::Output::Column(src)
                | airlock_policy::lineage::Output::Star(src)) = o;
                s.lineage.written.extend(src);
            }
            s.lineage.predicates.extend(value.lineage.predicates);
            s.lineage.written.extend(value.lineage.written);
        }
        s.harmless_config = harmless;
        s
    }

    /// `PREPARE s FROM 'text'` (the text analysed in `inner`) or `PREPARE
    /// s FROM @var` (dynamic SQL).
    fn prepare(&self, t: &[Token], span: (usize, usize), mode: Mode) -> Statement {
        use StatementKind as K;
        let [_, name, from, source] = t else {
            return Statement::unknown(
                "PREPARE takes a name and FROM 'text' or FROM @variable",
                span,
            );
        };
        let Some(name) = name.ident().filter(|_| from.is("from")) else {
            return Statement::unknown(
                "PREPARE takes a name and FROM 'text' or FROM @variable",
                span,
            );
        };
        let mut s = fixed(K::Prepare, &[], span);
        s.name = Some(name.to_string());
        match source.kind {
            Kind::UserVar => {
                s.effects.insert(Effect::DynamicSql);
                s.lineage = airlock_policy::lineage::Lineage::opaque();
                s
            }
            Kind::Str if source.text.starts_with('\'') => {
                let text = &source.text[1..];
                let inner = self.analyze(text, mode);
                let [inner] = &inner[..] else {
                    return Statement::unknown("PREPARE of more than one statement", span);
                };
                if matches!(
                    inner.kind,
                    K::Unknown | K::Empty | K::Prepare | K::Execute | K::Deallocate
                ) {
                    let why = inner
                        .unknown_reason
                        .clone()
                        .unwrap_or_else(|| format!("PREPARE of {}", inner.kind));
                    return Statement::unknown(format!("the prepared text: {why}"), span);
                }
                let mut inner = inner.clone();
                inner.span = (0, 0);
                s.effects = inner.effects;
                s.relations = inner.relations.clone();
                s.functions = inner.functions.clone();
                s.harmless_config = inner.harmless_config;
                s.inner = Some(Box::new(inner));
                s
            }
            _ => Statement::unknown("PREPARE takes FROM 'text' or FROM @variable", span),
        }
    }

    /// `DO expr, …`: the expressions are evaluated as a SELECT would, and
    /// their values go nowhere but into variables they assign.
    fn do_(&self, t: &[Token], span: (usize, usize), mode: Mode) -> Statement {
        let s = ast::expression(self, &t[1..], span, mode);
        if s.kind == StatementKind::Unknown {
            return s;
        }
        let mut lineage = airlock_policy::lineage::Lineage::default();
        for o in s.lineage.outputs {
            let (airlock_policy::lineage::Output::Column(src)
            | airlock_policy::lineage::Output::Star(src)) = o;
            lineage.written.extend(src);
        }
        lineage.predicates = s.lineage.predicates;
        lineage.written.extend(s.lineage.written);
        Statement {
            kind: StatementKind::Do,
            lineage,
            ..s
        }
    }

    /// `HANDLER t OPEN|READ|CLOSE …`: reads the table's rows, every
    /// column, bypassing SQL. A READ names the table or the alias it was
    /// opened as: its rows are every column of that name, and of nothing
    /// airlock can trace otherwise.
    fn handler(&self, t: &[Token], span: (usize, usize)) -> Statement {
        use airlock_policy::lineage::{Output, Source};
        let verb = t
            .iter()
            .position(|t| t.is("open") || t.is("read") || t.is("close"))
            .filter(|&i| i >= 2);
        let Some(v) = verb else {
            return Statement::unknown("HANDLER without OPEN, READ or CLOSE after a table", span);
        };
        let Some(rel) = qualified(&t[1..v]) else {
            return Statement::unknown("HANDLER names no table", span);
        };
        let mut s = fixed(StatementKind::Cursor, &[Effect::Read], span);
        s.kind = StatementKind::Handler;
        s.relations = vec![rel.clone()];
        if t[v].is("read") {
            s.lineage.outputs = vec![Output::Star(vec![
                Source::WholeRow(rel.clone()),
                Source::Opaque,
            ])];
            // Its WHERE clause and key values filter.
            s.lineage.predicates = vec![Source::WholeRow(rel)];
        }
        s
    }

    /// `LOAD DATA [LOCAL] INFILE 'f' … INTO TABLE t …`, `LOAD XML …`: a
    /// write from a file, on the server or (LOCAL) on the client, which the
    /// server asks the client for and airlock cannot see either way.
    fn load_data(&self, t: &[Token], span: (usize, usize)) -> Statement {
        let mut s = fixed(
            StatementKind::LoadData,
            &[Effect::Write, Effect::CopyFile],
            span,
        );
        if let Some(i) = t
            .windows(2)
            .position(|w| w[0].is("into") && w[1].is("table"))
        {
            let end = t[i + 2..]
                .iter()
                .position(|t| t.kind != Kind::Word && t.kind != Kind::Quoted && !t.is_punct("."))
                .map_or(t.len(), |n| i + 2 + n);
            // The name is the first one or two parts; words after it
            // (CHARACTER SET, FIELDS…) are not.
            let name = &t[i + 2..end];
            let take = if name.get(1).is_some_and(|t| t.is_punct(".")) {
                3
            } else {
                1
            };
            s.relations = qualified(&name[..take.min(name.len())])
                .into_iter()
                .collect();
        }
        s
    }

    fn create(&self, t: &[Token], span: (usize, usize), mode: Mode) -> Statement {
        use Effect::*;
        use StatementKind as K;
        let mut i = 1;
        // Modifiers before the object type.
        loop {
            let Some(w) = t.get(i) else {
                return Statement::unknown("CREATE of nothing", span);
            };
            if w.is("or") && t.get(i + 1).is_some_and(|t| t.is("replace")) {
                i += 2;
            } else if (w.is("algorithm") || w.is("definer"))
                && t.get(i + 1).is_some_and(|t| t.is_punct("="))
            {
                i += 2;
                // A value, or a user: name [@host], or CURRENT_USER[()].
                match skip_user(t, i) {
                    Some(next) => i = next,
                    None => {
                        return Statement::unknown(
                            "CREATE with a DEFINER airlock cannot read",
                            span,
                        );
                    }
                }
            } else if w.is("sql") && t.get(i + 1).is_some_and(|t| t.is("security")) {
                i += 3;
            } else if [
                "temporary",
                "unique",
                "fulltext",
                "spatial",
                "aggregate",
                "online",
                "offline",
                "if",
                "not",
                "exists",
            ]
            .iter()
            .any(|m| w.is(m))
            {
                i += 1;
            } else {
                break;
            }
        }
        let object = t[i].text.to_ascii_lowercase();
        let ddl = fixed(K::Ddl, &[Ddl], span);
        match object.as_str() {
            "table" => {
                let file = touches_files(t);
                let queries = t
                    .iter()
                    .any(|t| t.is("select") || t.is("with") || t.is("values") || t.is("table"));
                let mut s = if t[i + 1..]
                    .iter()
                    .any(|t| t.is("select") || t.is("with") || t.is("values"))
                    || (queries && t[i + 1..].iter().skip(1).any(|t| t.is("table")))
                {
                    // CREATE TABLE … [AS] SELECT: parsed for what it reads.
                    let mut s = self.parsed(t, span, mode);
                    if s.kind != K::Unknown {
                        s.kind = K::Ddl;
                        s.effects.extend(Effects::of(&[Ddl, Write]));
                    }
                    s
                } else {
                    let mut j = i + 1;
                    while t
                        .get(j)
                        .is_some_and(|t| t.is("if") || t.is("not") || t.is("exists"))
                    {
                        j += 1;
                    }
                    Statement {
                        relations: qualified(&t[j..t.len().min(j + 3)]).into_iter().collect(),
                        ..ddl
                    }
                };
                if file {
                    s.effects.insert(CopyFile);
                }
                s
            }
            "database" | "schema" | "index" | "view" | "tablespace" | "sequence" | "spatial"
            | "logfile" => ddl,
            "user" | "role" => fixed(K::Grant, &[Privilege, Ddl], span),
            "function" | "procedure" | "trigger" | "event" | "package" => {
                let mut s = fixed(K::Ddl, &[Ddl, DynamicSql], span);
                // CREATE FUNCTION f RETURNS … SONAME 'lib.so' loads a
                // shared library into the server.
                if t.iter().any(|t| t.is("soname")) {
                    s.effects
                        .extend(Effects::of(&[AlterSystem, UnsafeFunction]));
                }
                s
            }
            "server" => fixed(K::Ddl, &[Ddl, AlterSystem], span),
            "resource" => fixed(K::Maintenance, &[AlterSystem], span),
            _ => Statement::unknown(
                format!("CREATE {} is not classified", object.to_uppercase()),
                span,
            ),
        }
    }

    fn alter(&self, t: &[Token], span: (usize, usize)) -> Statement {
        use Effect::*;
        use StatementKind as K;
        let mut i = 1;
        while t
            .get(i)
            .is_some_and(|w| ["online", "offline", "ignore"].iter().any(|m| w.is(m)))
        {
            i += 1;
        }
        if (t
            .get(i)
            .is_some_and(|w| w.is("algorithm") || w.is("definer")))
            && t.get(i + 1).is_some_and(|t| t.is_punct("="))
        {
            match skip_user(t, i + 2) {
                Some(next) => i = next,
                None => {
                    return Statement::unknown("ALTER with a DEFINER airlock cannot read", span);
                }
            }
            if t.get(i).is_some_and(|w| w.is("definer"))
                && t.get(i + 1).is_some_and(|t| t.is_punct("="))
            {
                match skip_user(t, i + 2) {
                    Some(next) => i = next,
                    None => {
                        return Statement::unknown(
                            "ALTER with a DEFINER airlock cannot read",
                            span,
                        );
                    }
                }
            }
        }
        if t.get(i).is_some_and(|w| w.is("sql")) && t.get(i + 1).is_some_and(|w| w.is("security")) {
            i += 3;
        }
        let object = t
            .get(i)
            .map(|t| t.text.to_ascii_lowercase())
            .unwrap_or_default();
        let mut s = match object.as_str() {
            "table" => Statement {
                relations: qualified(&t[i + 1..t.len().min(i + 4)])
                    .into_iter()
                    .collect(),
                ..fixed(K::Ddl, &[Ddl], span)
            },
            "database" | "schema" | "view" | "tablespace" | "sequence" | "logfile" => {
                fixed(K::Ddl, &[Ddl], span)
            }
            "user" | "role" => fixed(K::Grant, &[Privilege], span),
            "function" | "procedure" | "event" | "package" => {
                fixed(K::Ddl, &[Ddl, DynamicSql], span)
            }
            "instance" | "server" | "resource" => fixed(K::Maintenance, &[AlterSystem], span),
            _ => {
                return Statement::unknown(
                    format!("ALTER {} is not classified", object.to_uppercase()),
                    span,
                );
            }
        };
        if touches_files(t) {
            s.effects.insert(CopyFile);
        }
        if t.iter().any(|t| t.is("drop")) {
            s.effects.insert(Drop);
        }
        s
    }

    fn drop(&self, t: &[Token], span: (usize, usize)) -> Statement {
        use Effect::*;
        use StatementKind as K;
        let mut i = 1;
        while t
            .get(i)
            .is_some_and(|w| w.is("temporary") || w.is("online") || w.is("offline"))
        {
            i += 1;
        }
        let object = t
            .get(i)
            .map(|t| t.text.to_ascii_lowercase())
            .unwrap_or_default();
        match object.as_str() {
            "database" | "schema" => fixed(K::Ddl, &[Ddl, Drop, DropDatabase], span),
            "table" | "tables" => {
                let mut j = i + 1;
                if t.get(j).is_some_and(|t| t.is("if"))
                    && t.get(j + 1).is_some_and(|t| t.is("exists"))
                {
                    j += 2;
                }
                Statement {
                    relations: t[j..]
                        .split(|t| t.is_punct(","))
                        .filter_map(|name| qualified(&name[..name.len().min(3)]))
                        .collect(),
                    ..fixed(K::Ddl, &[Ddl, Drop], span)
                }
            }
            "view" | "index" | "function" | "procedure" | "trigger" | "event" | "tablespace"
            | "sequence" | "package" | "logfile" | "spatial" => fixed(K::Ddl, &[Ddl, Drop], span),
            "user" | "role" => fixed(K::Grant, &[Privilege, Ddl, Drop], span),
            "server" => fixed(K::Ddl, &[Ddl, Drop, AlterSystem], span),
            "resource" => fixed(K::Maintenance, &[AlterSystem], span),
            _ => Statement::unknown(
                format!("DROP {} is not classified", object.to_uppercase()),
                span,
            ),
        }
    }

    /// `KILL [HARD|SOFT] [CONNECTION|QUERY [ID]] n` and `KILL … USER u`:
    /// kind `kill`, effect `privilege`; `name` is `query N` or
    /// `connection N` (see [`kill_target`]), `None` for other forms.
    fn kill(&self, t: &[Token], span: (usize, usize)) -> Statement {
        let mut s = fixed(StatementKind::Kill, &[Effect::Privilege], span);
        let mut i = 1;
        while t.get(i).is_some_and(|w| w.is("hard") || w.is("soft")) {
            i += 1;
        }
        let mut query = false;
        if t.get(i).is_some_and(|w| w.is("connection")) {
            i += 1;
        } else if t.get(i).is_some_and(|w| w.is("query")) {
            query = true;
            i += 1;
            // MariaDB: KILL QUERY ID n (a query id, not a connection).
            if t.get(i).is_some_and(|w| w.is("id")) {
                return s;
            }
        }
        if let [n] = &t[i..]
            && n.kind == Kind::Number
            && let Ok(id) = n.text.parse::<u64>()
        {
            s.name = Some(format!(
                "{} {id}",
                if query { "query" } else { "connection" }
            ));
        }
        s
    }
}

/// What a `KILL` statement targets, when it names one connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KillTarget {
    /// `KILL QUERY n`: the statement connection `n` runs.
    Query(u64),
    /// `KILL [CONNECTION] n`.
    Connection(u64),
}

/// The connection a `kill` statement names (`None` for any other
/// statement, and for `KILL … USER` or `KILL QUERY ID`).
pub fn kill_target(s: &Statement) -> Option<KillTarget> {
    if s.kind != StatementKind::Kill {
        return None;
    }
    let (what, id) = s.name.as_deref()?.split_once(' ')?;
    let id = id.parse().ok()?;
    match what {
        "query" => Some(KillTarget::Query(id)),
        "connection" => Some(KillTarget::Connection(id)),
        _ => None,
    }
}

/// A statement that begins a transaction.
fn begin(s: Statement) -> Statement {
    Statement {
        transaction: Some(Transaction::Begin),
        ..s
    }
}

fn fixed(kind: StatementKind, effects: &[Effect], span: (usize, usize)) -> Statement {
    Statement {
        kind,
        effects: Effects::of(effects),
        unknown_reason: None,
        ..Statement::unknown("", span)
    }
}

fn empty(span: (usize, usize)) -> Statement {
    Statement {
        disclosure: Disclosure::Nothing,
        ..fixed(StatementKind::Empty, &[], span)
    }
}

/// Functions a schema-only query may call on MySQL: what clients ask on
/// connecting, and catalog helpers.
const MYSQL_KNOWN_FUNCTIONS: &[&str] = &[
    "database",
    "schema",
    "version",
    "user",
    "current_user",
    "session_user",
    "system_user",
    "connection_id",
    "count",
    "lower",
    "upper",
    "concat",
    "ifnull",
    "coalesce",
    "now",
];

/// The `information_schema` tables a schema-only query may read: the
/// schema's own description (others hold statements, transactions, or
/// column histograms).
const MYSQL_CATALOG: &[&str] = &[
    "schemata",
    "tables",
    "columns",
    "statistics",
    "views",
    "routines",
    "parameters",
    "triggers",
    "key_column_usage",
    "table_constraints",
    "referential_constraints",
    "check_constraints",
    "partitions",
    "character_sets",
    "collations",
    "collation_character_set_applicability",
    "engines",
    "keywords",
    "column_privileges",
    "table_privileges",
    "schema_privileges",
    "user_privileges",
];

/// What `SHOW` may show a schema-only session (its first word after
/// `FULL`, `SESSION` or `GLOBAL`): the schema, and settings.
const MYSQL_SHOW: &[&str] = &[
    "tables",
    "columns",
    "fields",
    "index",
    "indexes",
    "keys",
    "databases",
    "schemas",
    "table",
    "variables",
    "collation",
    "character",
    "charset",
    "engines",
    "triggers",
];

/// Whether the statement is `DESCRIBE t` (`DESC`, `EXPLAIN t`): a table's
/// columns, as `SHOW COLUMNS`.
fn describes_table(t: &[Token]) -> bool {
    const STATEMENTS: &[&str] = &[
        "select",
        "insert",
        "update",
        "delete",
        "replace",
        "with",
        "table",
        "values",
        "format",
        "extended",
        "partitions",
        "analyze",
        "for",
    ];
    let [first, second, ..] = t else {
        return false;
    };
    (first.is("describe") || first.is("desc") || first.is("explain"))
        && second.ident().is_some()
        && !STATEMENTS.iter().any(|w| second.is(w))
        && t.len() <= 3
}

/// Whether a `SHOW` shows only the schema or settings: [`MYSQL_SHOW`], or
/// `SHOW CREATE TABLE`/`VIEW` (not `CREATE USER`, which shows a password
/// hash).
fn shows_schema(t: &[Token]) -> bool {
    let mut words = t[1..]
        .iter()
        .skip_while(|w| w.is("full") || w.is("session") || w.is("global"));
    match words.next() {
        Some(w) if w.is("create") => words.next().is_some_and(|w| w.is("table") || w.is("view")),
        Some(w) => MYSQL_SHOW.iter().any(|s| w.is(s)),
        None => false,
    }
}

/// What a MySQL statement's result can show of the data. Only the catalog
/// (the `information_schema` tables that describe the schema), `SHOW` of
/// the schema and settings, and `EXPLAIN` of such queries pass on this door
/// for now; aggregates over tables are PostgreSQL's (docs/agents.md). A
/// plain `EXPLAIN` of a query over a table is refused too: MySQL reads
/// const tables while it plans ("Impossible WHERE noticed after reading
/// const tables" answers a guess about a row).
fn disclosure(s: &Statement, t: &[Token]) -> Disclosure {
    use StatementKind as K;
    // Worked out only for the queries that need them.
    let calls_unknown = || {
        t.iter().enumerate().any(|(i, tok)| {
            tok.kind == Kind::Word
                && t.get(i + 1).is_some_and(|n| n.is_punct("("))
                && !matches(MYSQL_KNOWN_FUNCTIONS, &tok.text.to_lowercase())
        })
    };
    let catalog_only = || {
        s.relations.iter().all(|r| {
            r.schema
                .as_deref()
                .is_some_and(|db| db.eq_ignore_ascii_case("information_schema"))
                && MYSQL_CATALOG.iter().any(|c| r.name.eq_ignore_ascii_case(c))
        })
    };
    if describes_table(t) {
        return Disclosure::Nothing;
    }
    match s.kind {
        K::Select | K::Explain if calls_unknown() => {
            Disclosure::Rows("it calls a function airlock does not know as one that reads no data")
        }
        K::Explain if t.iter().take(3).any(|w| w.is("analyze")) => {
            Disclosure::Rows("ANALYZE runs the statement")
        }
        K::Select | K::Explain if catalog_only() => Disclosure::Catalog,
        // `LIMIT 0`: a result's columns and no row.
        K::Select
            if matches!(t, [.., limit, zero]
                if limit.is("limit") && zero.kind == Kind::Number && zero.text == "0") =>
        {
            Disclosure::Nothing
        }
        K::Select | K::Explain => Disclosure::Rows(
            "on MySQL, schema-only access reads information_schema's description of the schema (and SHOW) only; aggregates and EXPLAIN over tables are not supported there yet",
        ),
        K::Show if shows_schema(t) => Disclosure::Nothing,
        K::Show => Disclosure::Rows("this SHOW can show other sessions' statements or data"),
        K::Insert | K::Update | K::Delete | K::Merge if !s.lineage.outputs.is_empty() => {
            Disclosure::Rows("RETURNING returns the rows")
        }
        K::Insert
        | K::Update
        | K::Delete
        | K::Merge
        | K::Transaction
        | K::SetConfig
        | K::Ddl
        | K::Truncate
        | K::Grant
        | K::Lock
        | K::Maintenance
        | K::Deallocate
        | K::Empty => Disclosure::Nothing,
        _ => Disclosure::Rows("the statement may return rows"),
    }
}

fn safe_charset(t: &Token) -> bool {
    let name = if t.kind == Kind::Str && t.text.starts_with('\'') {
        &t.text[1..]
    } else {
        t.text.as_str()
    };
    matches!(t.kind, Kind::Word | Kind::Str | Kind::Quoted)
        && SAFE_CHARSETS.contains(&name.to_ascii_lowercase().as_str())
}

/// `USING @a, @b` or nothing.
fn using_variables(t: &[Token]) -> bool {
    match t {
        [] => true,
        [using, vars @ ..] if using.is("using") => vars
            .split(|t| t.is_punct(","))
            .all(|v| matches!(v, [var] if var.kind == Kind::UserVar)),
        _ => false,
    }
}

/// `name` or `db . name` at the start of `t` (the rest ignored).
fn qualified(t: &[Token]) -> Option<airlock_policy::Relation> {
    match t {
        [db, dot, name, ..] if dot.is_punct(".") => Some(airlock_policy::Relation {
            schema: Some(db.ident()?.to_string()),
            name: name.ident()?.to_string(),
        }),
        [name, ..] => Some(airlock_policy::Relation {
            schema: None,
            name: name.ident()?.to_string(),
        }),
        [] => None,
    }
}

/// The tables of `LOCK TABLES t [AS a] READ, db.u WRITE`.
fn lock_relations(t: &[Token]) -> Vec<airlock_policy::Relation> {
    t.split(|t| t.is_punct(",")).filter_map(qualified).collect()
}

/// After `DEFINER =` (or `ALGORITHM =`) at `i`: the index past the value.
fn skip_user(t: &[Token], i: usize) -> Option<usize> {
    let first = t.get(i)?;
    if first.is("current_user") {
        if t.get(i + 1).is_some_and(|t| t.is_punct("("))
            && t.get(i + 2).is_some_and(|t| t.is_punct(")"))
        {
            return Some(i + 3);
        }
        return Some(i + 1);
    }
    if !matches!(first.kind, Kind::Word | Kind::Quoted | Kind::Str) {
        return None;
    }
    match t.get(i + 1) {
        Some(host) if host.kind == Kind::UserVar => Some(i + 2),
        _ => Some(i + 1),
    }
}

/// Table options that put files on the server or reach other servers:
/// `DATA DIRECTORY`, `INDEX DIRECTORY`, the CONNECT engine's `FILE_NAME`,
/// and the CONNECT, FEDERATED(X) and SPIDER engines.
fn touches_files(t: &[Token]) -> bool {
    t.iter()
        .any(|t| t.is("directory") || t.is("file_name") || t.is("connection"))
        || t.windows(3).any(|w| {
            w[0].is("engine")
                && ["connect", "federated", "federatedx", "spider"]
                    .iter()
                    .any(|e| {
                        w[1].is(e)
                            || w[2].is(e)
                            || (w[2].kind == Kind::Str && w[2].text[1..].eq_ignore_ascii_case(e))
                    })
        })
}

/// One assignment of a SET statement.
struct Target<'a> {
    /// Lower case: a variable's name without scope; `names`, `character
    /// set`, `transaction` for those forms.
    name: String,
    /// GLOBAL, PERSIST, PERSIST_ONLY or `@@global.`/`@@persist.`.
    global: bool,
    /// A user variable (`@x`).
    user: bool,
    value: &'a [Token],
}

/// The assignments of `SET …` (the tokens after SET), or `None` when they
/// do not read as MySQL's.
fn set_targets(t: &[Token]) -> Option<Vec<Target<'_>>> {
    let mut out = Vec::new();
    // A scope keyword applies to the assignments after it.
    let mut scope_global = false;
    for part in split_top(t, ",") {
        let mut p = part;
        let scope = p.first().map(|t| t.text.to_ascii_lowercase());
        match scope.as_deref() {
            Some("global" | "persist" | "persist_only")
                if p[0].kind == Kind::Word && p.len() > 1 =>
            {
                scope_global = true;
                p = &p[1..];
            }
            Some("session" | "local") if p[0].kind == Kind::Word && p.len() > 1 => {
                scope_global = false;
                p = &p[1..];
            }
            _ => {}
        }
        let first = p.first()?;
        if first.is("names") {
            out.push(Target {
                name: "names".into(),
                global: false,
                user: false,
                value: &p[1..],
            });
            continue;
        }
        if (first.is("character") && p.get(1).is_some_and(|t| t.is("set"))) || first.is("charset") {
            let skip = if first.is("charset") { 1 } else { 2 };
            out.push(Target {
                name: "character set".into(),
                global: false,
                user: false,
                value: &p[skip..],
            });
            continue;
        }
        if first.is("transaction") {
            out.push(Target {
                name: "transaction".into(),
                global: scope_global,
                user: false,
                value: &p[1..],
            });
            continue;
        }
        let eq = p.iter().position(|t| t.is_punct("=") || t.is_punct(":="))?;
        let (lhs, value) = (&p[..eq], &p[eq + 1..]);
        let target = match lhs {
            [v] if v.kind == Kind::UserVar => Target {
                name: v.text.to_lowercase(),
                global: false,
                user: true,
                value,
            },
            [v] if v.kind == Kind::SysVar => {
                let (scope, name) = match v.text.split_once('.') {
                    Some((s, n)) => (s.to_string(), n.to_string()),
                    None => (String::new(), v.text.clone()),
                };
                let global = match scope.as_str() {
                    "global" | "persist" | "persist_only" => true,
                    "" | "session" | "local" => false,
                    _ => return None,
                };
                Target {
                    name,
                    global,
                    user: false,
                    value,
                }
            }
            [v] if v.kind == Kind::Word || v.kind == Kind::Quoted => Target {
                name: v.text.to_ascii_lowercase(),
                global: scope_global,
                user: false,
                value,
            },
            // A structured variable (`default.key_buffer_size`): server-wide.
            [_, dot, _] if dot.is_punct(".") => Target {
                name: "structured".into(),
                global: true,
                user: false,
                value,
            },
            _ => return None,
        };
        if target.value.is_empty() {
            return None;
        }
        out.push(target);
    }
    (!out.is_empty()).then_some(out)
}

/// `t` split on `sep` outside parentheses.
fn split_top<'a>(t: &'a [Token], sep: &str) -> Vec<&'a [Token]> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, tok) in t.iter().enumerate() {
        if tok.is_punct("(") {
            depth += 1;
        } else if tok.is_punct(")") {
            depth -= 1;
        } else if depth == 0 && tok.is_punct(sep) {
            out.push(&t[start..i]);
            start = i + 1;
        }
    }
    out.push(&t[start..]);
    out
}
