//! The protocol-neutral statement model: what a statement *does*.
//!
//! A door's analyzer (PostgreSQL's own parser for the PostgreSQL door) maps
//! each statement to a [`Statement`]: a kind, the set of [`Effects`] it has
//! (nested statements included), the relations and functions it names, and
//! whether its UPDATE/DELETE parts are bounded by a WHERE clause. Policy is
//! decided on effects, never on keywords.

use std::fmt;

use crate::lineage::Lineage;

/// What kind of statement this is, by its top-level node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatementKind {
    Select,
    Insert,
    Update,
    Delete,
    Merge,
    CopyIn,
    CopyOut,
    Ddl,
    Truncate,
    Grant,
    SetRole,
    SetConfig,
    Show,
    Transaction,
    Explain,
    Call,
    Do,
    Prepare,
    Execute,
    Deallocate,
    Cursor,
    Listen,
    Notify,
    Lock,
    Maintenance,
    /// MySQL's `LOAD DATA` and `LOAD XML`: rows from a file.
    LoadData,
    /// MySQL's `HANDLER`: reads a table's rows bypassing SQL.
    Handler,
    /// MySQL's `KILL`: ends another session or its statement.
    Kill,
    Empty,
    Unknown,
}

impl StatementKind {
    pub const ALL: &'static [StatementKind] = &[
        StatementKind::Select,
        StatementKind::Insert,
        StatementKind::Update,
        StatementKind::Delete,
        StatementKind::Merge,
        StatementKind::CopyIn,
        StatementKind::CopyOut,
        StatementKind::Ddl,
        StatementKind::Truncate,
        StatementKind::Grant,
        StatementKind::SetRole,
        StatementKind::SetConfig,
        StatementKind::Show,
        StatementKind::Transaction,
        StatementKind::Explain,
        StatementKind::Call,
        StatementKind::Do,
        StatementKind::Prepare,
        StatementKind::Execute,
        StatementKind::Deallocate,
        StatementKind::Cursor,
        StatementKind::Listen,
        StatementKind::Notify,
        StatementKind::Lock,
        StatementKind::Maintenance,
        StatementKind::LoadData,
        StatementKind::Handler,
        StatementKind::Kill,
        StatementKind::Empty,
        StatementKind::Unknown,
    ];

    /// The name used in policy files and output (`copy_in`, `set_role`…).
    pub fn name(self) -> &'static str {
        match self {
            StatementKind::Select => "select",
            StatementKind::Insert => "insert",
            StatementKind::Update => "update",
            StatementKind::Delete => "delete",
            StatementKind::Merge => "merge",
            StatementKind::CopyIn => "copy_in",
            StatementKind::CopyOut => "copy_out",
            StatementKind::Ddl => "ddl",
            StatementKind::Truncate => "truncate",
            StatementKind::Grant => "grant",
            StatementKind::SetRole => "set_role",
            StatementKind::SetConfig => "set_config",
            StatementKind::Show => "show",
            StatementKind::Transaction => "transaction",
            StatementKind::Explain => "explain",
            StatementKind::Call => "call",
            StatementKind::Do => "do",
            StatementKind::Prepare => "prepare",
            StatementKind::Execute => "execute",
            StatementKind::Deallocate => "deallocate",
            StatementKind::Cursor => "cursor",
            StatementKind::Listen => "listen",
            StatementKind::Notify => "notify",
            StatementKind::Lock => "lock",
            StatementKind::Maintenance => "maintenance",
            StatementKind::LoadData => "load_data",
            StatementKind::Handler => "handler",
            StatementKind::Kill => "kill",
            StatementKind::Empty => "empty",
            StatementKind::Unknown => "unknown",
        }
    }

    pub fn from_name(name: &str) -> Option<StatementKind> {
        StatementKind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == name)
    }
}

impl fmt::Display for StatementKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One effect a statement can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Effect {
    /// Reads data.
    Read,
    /// Changes data (INSERT/UPDATE/DELETE/MERGE, COPY FROM, SELECT INTO,
    /// nextval…).
    Write,
    /// Changes the schema.
    Ddl,
    /// Drops an object.
    Drop,
    /// Drops a database.
    DropDatabase,
    Truncate,
    /// Changes who may do what, or who the session is (GRANT, SET ROLE…).
    Privilege,
    /// Changes a session or transaction setting (SET, RESET, set_config,
    /// BEGIN READ WRITE…).
    SessionConfig,
    /// ALTER SYSTEM: changes the server's configuration file.
    AlterSystem,
    /// COPY … TO/FROM PROGRAM: runs a shell command on the server.
    CopyProgram,
    /// COPY … TO/FROM 'file': reads or writes a file on the server.
    CopyFile,
    /// Calls a function on the unsafe list (file, server and admin
    /// functions, dynamic SQL).
    UnsafeFunction,
    /// Runs SQL the analyzer cannot see: DO blocks, function bodies,
    /// EXECUTE of dynamic text.
    DynamicSql,
    /// Sends data out of the session in bulk (COPY … TO STDOUT).
    Export,
    /// BEGIN, COMMIT, ROLLBACK, SAVEPOINT…
    TransactionControl,
    /// Changes a planner cost setting (`SET random_page_cost`, a
    /// `set_config` of one or of a name not known, an update of
    /// `pg_settings`): estimates taken after it are not the server's own.
    PlannerCost,
}

impl Effect {
    pub const ALL: &'static [Effect] = &[
        Effect::Read,
        Effect::Write,
        Effect::Ddl,
        Effect::Drop,
        Effect::DropDatabase,
        Effect::Truncate,
        Effect::Privilege,
        Effect::SessionConfig,
        Effect::AlterSystem,
        Effect::CopyProgram,
        Effect::CopyFile,
        Effect::UnsafeFunction,
        Effect::DynamicSql,
        Effect::Export,
        Effect::TransactionControl,
        Effect::PlannerCost,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Effect::Read => "read",
            Effect::Write => "write",
            Effect::Ddl => "ddl",
            Effect::Drop => "drop",
            Effect::DropDatabase => "drop_database",
            Effect::Truncate => "truncate",
            Effect::Privilege => "privilege",
            Effect::SessionConfig => "session_config",
            Effect::AlterSystem => "alter_system",
            Effect::CopyProgram => "copy_program",
            Effect::CopyFile => "copy_file",
            Effect::UnsafeFunction => "unsafe_function",
            Effect::DynamicSql => "dynamic_sql",
            Effect::Export => "export",
            Effect::TransactionControl => "transaction_control",
            Effect::PlannerCost => "planner_cost",
        }
    }

    pub fn from_name(name: &str) -> Option<Effect> {
        Effect::ALL.iter().copied().find(|e| e.name() == name)
    }
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of effects.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Effects(u16);

impl Effects {
    pub const EMPTY: Effects = Effects(0);

    pub fn of(effects: &[Effect]) -> Effects {
        effects.iter().fold(Effects::EMPTY, |s, e| s.with(*e))
    }

    #[must_use]
    pub fn with(self, e: Effect) -> Effects {
        Effects(self.0 | 1 << e as u8)
    }

    pub fn insert(&mut self, e: Effect) {
        *self = self.with(e);
    }

    pub fn extend(&mut self, other: Effects) {
        self.0 |= other.0;
    }

    pub fn contains(self, e: Effect) -> bool {
        self.0 & (1 << e as u8) != 0
    }

    pub fn intersects(self, other: Effects) -> bool {
        self.0 & other.0 != 0
    }

    /// The effects in `self` that are not in `other`.
    pub fn minus(self, other: Effects) -> Effects {
        Effects(self.0 & !other.0)
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn iter(self) -> impl Iterator<Item = Effect> {
        Effect::ALL
            .iter()
            .copied()
            .filter(move |e| self.contains(*e))
    }
}

impl fmt::Debug for Effects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for Effects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Effect::name).collect();
        f.write_str(&names.join(", "))
    }
}

/// A relation a statement names, schema-qualified when written so.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Relation {
    pub schema: Option<String>,
    pub name: String,
}

impl fmt::Display for Relation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.schema {
            Some(s) => write!(f, "{s}.{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// The relation an UPDATE or DELETE changes, and the columns its WHERE
/// clause pins to one value each (`col = constant or parameter`, joined by
/// AND at the top): with a unique key among them it changes at most one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pinned {
    pub relation: Relation,
    pub columns: Vec<String>,
}

/// The dialect's own error for a statement that does not parse, as its
/// server would report it: a door refuses the statement with exactly this,
/// so that a client cannot tell airlock's refusal from the server's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    /// The dialect's error code (a SQLSTATE for PostgreSQL).
    pub code: &'static str,
    pub message: String,
    /// Where the error is, 1-based, in characters of the message text.
    pub position: Option<u32>,
    pub detail: Option<&'static str>,
    pub hint: Option<&'static str>,
}

/// What one statement does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub kind: StatementKind,
    /// The kinds of statements this one runs besides itself: DML in CTEs,
    /// the statement under EXPLAIN ANALYZE, the statement an EXECUTE runs.
    pub nested: Vec<StatementKind>,
    /// Every effect, nested statements included.
    pub effects: Effects,
    /// Relations read or written, in order of first mention, without
    /// duplicates.
    pub relations: Vec<Relation>,
    /// Functions called, as written (schema-qualified when written so),
    /// lower case, without duplicates.
    pub functions: Vec<String>,
    /// For statements that contain UPDATE or DELETE (CTEs included): whether
    /// every one of them has a WHERE clause (or `WHERE CURRENT OF`). `None`
    /// when the statement contains neither.
    pub has_where: Option<bool>,
    /// The inner statement of EXPLAIN, or of EXECUTE when its PREPARE is
    /// known.
    pub inner: Option<Box<Statement>>,
    /// Why the statement is `unknown`, when it is.
    pub unknown_reason: Option<String>,
    /// For an `unknown` statement that does not parse: the error the
    /// server would give.
    pub syntax_error: Option<Box<SyntaxError>>,
    /// For a plain UPDATE or DELETE: what its WHERE clause pins.
    pub pinned: Option<Box<Pinned>>,
    /// The prepared statement a PREPARE, EXECUTE or DEALLOCATE names
    /// (`None` for DEALLOCATE ALL).
    pub name: Option<String>,
    /// Byte range of this statement in the message text.
    pub span: (usize, usize),
    /// Where its result values come from, for masking.
    pub lineage: Lineage,
    /// Whether every setting the statement changes is one its dialect's
    /// analyzer deems harmless to enforcement (how results are presented,
    /// timed or planned). Only then may a read-only route run a statement
    /// with the `session_config` effect. Meaningless without that effect.
    pub harmless_config: bool,
    /// What its result can show of the data, for schema-only access.
    pub disclosure: Disclosure,
    /// How it changes the session's statement timeout, if it does.
    pub statement_timeout: Option<TimeoutChange>,
    /// For transaction control: what it does to the transaction (for
    /// commit review). `None` for other statements, and where the dialect's
    /// analyzer does not tell.
    pub transaction: Option<Transaction>,
}

/// What a transaction-control statement does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transaction {
    /// BEGIN, START TRANSACTION.
    Begin,
    /// COMMIT, END, COMMIT AND CHAIN.
    Commit,
    /// ROLLBACK, ABORT (with or without AND CHAIN).
    Rollback,
    /// SAVEPOINT, RELEASE, ROLLBACK TO SAVEPOINT.
    Savepoint,
    /// PREPARE TRANSACTION: the transaction's work persists, to be
    /// committed by any session.
    Prepare,
    /// COMMIT PREPARED, ROLLBACK PREPARED (of another transaction).
    Prepared,
}

/// A change of the statement timeout (PostgreSQL's `statement_timeout`),
/// for the ceiling an access rule sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimeoutChange {
    /// Set to this (zero: no limit).
    To(std::time::Duration),
    /// Back to the session's default (`RESET`, `DEFAULT`): the value it
    /// started with, which the door keeps within the ceiling.
    Reset,
    /// Set to a value the analyzer cannot read (not a literal, or not a
    /// duration).
    Unknown,
}

/// What a statement's result can show of the data, for schema-only access
/// rules (SPEC §14). The door's analyzer decides it from the parse tree;
/// the judge refuses [`Disclosure::Rows`] on a schema-only route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disclosure {
    /// No table data: settings, transaction control, `SHOW`, `EXPLAIN`
    /// without `ANALYZE`, schema changes, writes without `RETURNING`.
    Nothing,
    /// Only the system catalog (or no relation at all), minus the views
    /// that quote data (`pg_stats`, `pg_stat_activity`…), calling only
    /// built-in functions that read no data.
    Catalog,
    /// Aggregates only (`count`, `sum`, `avg`, `stddev`, `variance`),
    /// over one table, grouped by plain columns if at all: it shows
    /// nothing of a single row once every group holds at least `k` rows,
    /// which the door enforces by rewriting (`HAVING count(*) >= k`).
    Aggregates,
    /// Individual row values, or what the analyzer cannot tell apart from
    /// them: why.
    Rows(&'static str),
}

impl Statement {
    /// A statement the analyzer cannot classify.
    pub fn unknown(reason: impl Into<String>, span: (usize, usize)) -> Statement {
        Statement {
            kind: StatementKind::Unknown,
            nested: Vec::new(),
            effects: Effects::EMPTY,
            relations: Vec::new(),
            functions: Vec::new(),
            has_where: None,
            inner: None,
            unknown_reason: Some(reason.into()),
            syntax_error: None,
            pinned: None,
            name: None,
            span,
            lineage: Lineage::default(),
            harmless_config: false,
            disclosure: Disclosure::Rows("the statement is not understood"),
            statement_timeout: None,
            transaction: None,
        }
    }

    /// The `session_config` effects a read-only route may allow: none,
    /// unless every setting changed is harmless.
    pub fn config_is_harmless(&self) -> bool {
        !self.effects.contains(Effect::SessionConfig) || self.harmless_config
    }

    /// Whether this is an UPDATE/DELETE (possibly nested) statement.
    pub fn modifies_rows(&self) -> bool {
        self.has_where.is_some()
    }
}
