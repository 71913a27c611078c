//! PostgreSQL statements → the policy core's [`Statement`] model, with
//! PostgreSQL's own parser (`pg_query`).
//!
//! Classification is by effect. The top-level node decides the kind; a
//! complete walk of the tree ([`crate::walk`]) adds what nested parts do:
//! DML in CTEs, SELECT … INTO, FOR UPDATE, and the functions called.
//! Anything that fails to parse, and any statement node not mapped here, is
//! `unknown`.

use std::collections::HashMap;

use airlock_policy::{Effect, Effects, Statement, StatementKind, TimeoutChange};
use pg_query::protobuf::{self, a_const, node::Node as N};

use crate::walk::Facts;

/// Functions that read or write server files, signal or reconfigure the
/// server, or run SQL text the analyzer cannot see. Matched on the last
/// name part, whatever the schema; entries ending in `*` match a prefix.
pub const DEFAULT_UNSAFE_FUNCTIONS: &[&str] = &[
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_ls_logdir",
    "pg_ls_waldir",
    "pg_ls_tmpdir",
    "pg_ls_archive_statusdir",
    "pg_stat_file",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "pg_file_sync",
    "pg_logdir_ls",
    "lo_import",
    "lo_export",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_start_backup",
    "pg_stop_backup",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "pg_create_physical_replication_slot",
    "pg_create_logical_replication_slot",
    "pg_drop_replication_slot",
    "pg_copy_physical_replication_slot",
    "pg_copy_logical_replication_slot",
    "pg_replication_slot_advance",
    "pg_logical_emit_message",
    "pg_replication_origin_*",
    "pg_log_backend_memory_contexts",
    "pg_stat_reset*",
    "ts_rewrite",
    "ts_stat",
    "dblink*",
    "query_to_xml*",
    "query_to_xmlschema",
    "cursor_to_xml*",
    "table_to_xml*",
    "schema_to_xml*",
    "database_to_xml*",
];

/// Functions that run SQL text: calling them is dynamic SQL as well as
/// unsafe.
const DYNAMIC_SQL_FUNCTIONS: &[&str] = &[
    "query_to_xml*",
    "query_to_xmlschema",
    "dblink*",
    "cursor_to_xml*",
    "ts_rewrite",
    "ts_stat",
];

/// Functions that change data although they appear in a SELECT.
const WRITING_FUNCTIONS: &[&str] = &[
    "nextval",
    "setval",
    "pg_notify",
    "lo_create",
    "lo_creat",
    "lo_unlink",
    "lo_put",
    "lo_from_bytea",
    "lowrite",
    "lo_truncate",
    "pg_advisory_*",
    "pg_try_advisory_*",
];

/// Functions that change session settings.
const CONFIG_FUNCTIONS: &[&str] = &["set_config"];

/// Session settings a read-only principal may change with `SET`, `RESET`
/// or `set_config()`: they change how results are presented, how long
/// statements may run, or how they are planned, never what airlock
/// enforces or what the statement it judged does. `search_path` only while
/// `pg_catalog` stays first (or unnamed, which searches it first), so that
/// no user function can shadow a built-in the analyzer and lineage trust.
/// Everything else, custom `app.*` settings (which row security policies
/// may read) and `transaction_read_only`/`default_transaction_read_only`,
/// `role` and `session_authorization` included, stays refused. Entries
/// ending in `*` match a prefix. docs/policy.md lists them.
pub const HARMLESS_SETTINGS: &[&str] = &[
    "application_name",
    "extra_float_digits",
    "search_path",
    "timezone",
    "datestyle",
    "intervalstyle",
    "statement_timeout",
    "lock_timeout",
    "idle_in_transaction_session_timeout",
    "idle_session_timeout",
    "client_min_messages",
    "bytea_output",
    "lc_monetary",
    "lc_numeric",
    "lc_time",
    "xmlbinary",
    "xmloption",
    "transaction_isolation",
    "default_transaction_isolation",
    "transaction_deferrable",
    "default_transaction_deferrable",
    "jit*",
    "enable_*",
    "geqo*",
    "plan_cache_mode",
    "work_mem",
    "hash_mem_multiplier",
    "random_page_cost",
    "seq_page_cost",
    "cpu_tuple_cost",
    "cpu_index_tuple_cost",
    "cpu_operator_cost",
    "effective_cache_size",
    "effective_io_concurrency",
    "join_collapse_limit",
    "from_collapse_limit",
    "cursor_tuple_fraction",
    "max_parallel_workers_per_gather",
    "parallel_setup_cost",
    "parallel_tuple_cost",
    "default_statistics_target",
];

/// Whether setting `name` (lower case) to `value` (`None`: its default)
/// is harmless ([`HARMLESS_SETTINGS`]).
fn harmless_setting(name: &str, value: Option<&[String]>) -> bool {
    // A dotted name is a custom setting (`jit.tenant`), whatever prefix it
    // shares with a harmless one.
    if name.contains('.') || !matches(HARMLESS_SETTINGS, name) {
        return false;
    }
    name != "search_path"
        || value.is_none_or(|schemas| {
            schemas
                .iter()
                .position(|s| s == "pg_catalog")
                .is_none_or(|i| i == 0)
        })
}

/// Whether a `search_path` given as text (a startup parameter, a
/// `set_config` value) keeps `pg_catalog` first or leaves it out.
pub fn harmless_search_path(value: &str) -> bool {
    identifier_list(value).is_some_and(|schemas| harmless_setting("search_path", Some(&schemas)))
}

/// PostgreSQL's reading of a list of identifiers in one string
/// (`SplitIdentifierString`): comma-separated, unquoted names folded to
/// lower case, `"…"` kept as written. `None` when malformed (PostgreSQL
/// refuses it too).
fn identifier_list(text: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut name = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next()? {
                    '"' if chars.peek() == Some(&'"') => {
                        chars.next();
                        name.push('"');
                    }
                    '"' => break,
                    c => name.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' || c.is_whitespace() {
                    break;
                }
                name.extend(c.to_lowercase());
                chars.next();
            }
            if name.is_empty() {
                return None;
            }
        }
        out.push(name);
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        match chars.next() {
            None => return Some(out),
            Some(',') => {}
            Some(_) => return None,
        }
    }
}

pub(crate) fn matches(list: &[impl AsRef<str>], name: &str) -> bool {
    list.iter().any(|p| {
        let p = p.as_ref();
        match p.strip_suffix('*') {
            Some(prefix) => name.starts_with(prefix),
            None => name == p,
        }
    })
}

/// The session state an analysis needs and updates: SQL-level prepared
/// statements, by name.
#[derive(Debug, Default, Clone)]
pub struct SessionState {
    pub prepared: HashMap<String, Statement>,
}

/// Analyzes PostgreSQL statements.
#[derive(Debug, Clone)]
pub struct Analyzer {
    /// Tells analyzers apart, for the parse cache.
    id: u64,
    unsafe_functions: Vec<String>,
}

impl Default for Analyzer {
    fn default() -> Self {
        Analyzer::new(&[])
    }
}

impl Analyzer {
    /// The default unsafe-function list plus `extra` (lower case names;
    /// `prefix*` matches a prefix).
    pub fn new(extra: &[String]) -> Analyzer {
        let mut unsafe_functions: Vec<String> = DEFAULT_UNSAFE_FUNCTIONS
            .iter()
            .map(|s| s.to_string())
            .collect();
        unsafe_functions.extend(extra.iter().map(|s| s.to_lowercase()));
        Analyzer {
            id: crate::next_analyzer_id(),
            unsafe_functions,
        }
    }

    /// Unique per analyzer built in this process.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The statements of one message (a simple Query's text or a Parse's
    /// query), each classified. Never empty: empty text is one `empty`
    /// statement. `EXECUTE` statements are not resolved here (see
    /// [`resolve`]), so the result can be cached by text.
    pub fn analyze(&self, sql: &str) -> Vec<Statement> {
        self.analyze_reporting(sql).0
    }

    /// [`Analyzer::analyze`], and whether a literal's value steered the
    /// classification (`EXPLAIN (ANALYZE 0)` and `(ANALYZE 1)` differ), in
    /// which case the analysis must not be shared by statements of the same
    /// shape.
    pub fn analyze_reporting(&self, sql: &str) -> (Vec<Statement>, bool) {
        READ_LITERAL.set(false);
        let statements = self.analyze_uncached(sql);
        // Whether a text parses can depend on a literal's value (`ALTER
        // INDEX i ALTER COLUMN 0` does not parse, `… COLUMN 2` does), and
        // so can what statements other than plain DML and queries do (`SET
        // x = …`, options): only those are shared by shape, and only when
        // they parsed.
        let by_shape = statements.iter().all(|s| shareable_by_shape(s.kind));
        (statements, READ_LITERAL.get() || !by_shape)
    }

    fn analyze_uncached(&self, sql: &str) -> Vec<Statement> {
        let parsed = match pg_query::parse(sql) {
            Ok(p) => p,
            // pg_query decodes its tree with prost, whose depth limit (100)
            // refuses expressions nested more than about 45 levels. Lifting
            // it would let a deeply nested statement overflow the stack, so
            // such statements stay unknown.
            Err(e) if e.to_string().contains("recursion limit") => {
                return vec![Statement::unknown(
                    "it nests deeper than airlock's parser allows (about 45 levels)",
                    (0, sql.len()),
                )];
            }
            Err(e) => {
                let syntax_error = match &e {
                    pg_query::Error::Parse(message) => {
                        crate::syntax::of(sql, message).map(Box::new)
                    }
                    _ => None,
                };
                return vec![Statement {
                    syntax_error,
                    ..Statement::unknown(format!("it does not parse: {e}"), (0, sql.len()))
                }];
            }
        };
        let stmts = &parsed.protobuf.stmts;
        if stmts.is_empty() {
            return vec![empty((0, sql.len()))];
        }
        stmts
            .iter()
            .map(|raw| {
                let start = raw.stmt_location.max(0) as usize;
                let end = if raw.stmt_len == 0 {
                    sql.len()
                } else {
                    start + raw.stmt_len as usize
                };
                let span = (start.min(sql.len()), end.min(sql.len()));
                match raw.stmt.as_ref().and_then(|s| s.node.as_ref()) {
                    Some(node) => self.statement(node, span),
                    None => empty(span),
                }
            })
            .collect()
    }

    fn statement(&self, node: &N, span: (usize, usize)) -> Statement {
        use Effect::*;
        use StatementKind as K;
        let facts = Facts::collect(node);
        let mut effects = Effects::EMPTY;
        // Set by every source of `session_config` that is not a harmless
        // setting change.
        let mut config_unsafe = false;
        let mut explain_analyze_flag = false;
        let mut inner = None;
        let mut transaction = None;
        // The lineage of a DECLARE's query.
        let mut declared = None;
        let kind = match node {
            N::SelectStmt(_) | N::SetOperationStmt(_) => {
                effects.insert(Read);
                K::Select
            }
            N::InsertStmt(_) => {
                effects.insert(Write);
                K::Insert
            }
            N::UpdateStmt(_) => {
                effects.extend(Effects::of(&[Read, Write]));
                K::Update
            }
            N::DeleteStmt(_) => {
                effects.extend(Effects::of(&[Read, Write]));
                K::Delete
            }
            N::MergeStmt(_) => {
                effects.extend(Effects::of(&[Read, Write]));
                K::Merge
            }
            N::CopyStmt(c) => self.copy(c, &mut effects, &mut inner),
            N::VariableSetStmt(v) => {
                // A value can decide (`search_path`): never shared by shape.
                READ_LITERAL.set(true);
                config_unsafe |= !harmless_set(v);
                variable_set(v, &mut effects)
            }
            N::VariableShowStmt(_) => {
                effects.insert(Read);
                K::Show
            }
            N::TransactionStmt(t) => {
                effects.insert(TransactionControl);
                transaction = Some(transaction_op(t));
                if begins_read_write(t) {
                    effects.insert(SessionConfig);
                    config_unsafe = true;
                }
                // Two-phase commit persists or commits a transaction, maybe
                // another session's: that is a write.
                use protobuf::TransactionStmtKind as T;
                if [
                    T::TransStmtPrepare,
                    T::TransStmtCommitPrepared,
                    T::TransStmtRollbackPrepared,
                ]
                .iter()
                .any(|k| *k as i32 == t.kind)
                {
                    effects.insert(Write);
                }
                K::Transaction
            }
            N::ExplainStmt(e) => {
                explain_analyze_flag = explain_analyze(e);
                effects.insert(Read);
                if let Some(q) = e.query.as_ref().and_then(|q| q.node.as_ref()) {
                    let s = self.statement(q, span);
                    if explain_analyze(e) {
                        effects.extend(s.effects);
                    }
                    inner = Some(Box::new(s));
                }
                K::Explain
            }
            N::PrepareStmt(p) => {
                let Some(q) = p.query.as_ref().and_then(|q| q.node.as_ref()) else {
                    return Statement::unknown("PREPARE without a statement", span);
                };
                let s = self.statement(q, span);
                // Preparing is harmless by itself, but a policy that refuses
                // a statement refuses preparing it too.
                effects.extend(s.effects);
                inner = Some(Box::new(s));
                K::Prepare
            }
            N::ExecuteStmt(_) => K::Execute,
            N::DeallocateStmt(_) => K::Deallocate,
            N::DeclareCursorStmt(d) => {
                effects.insert(Read);
                if let Some(q) = d.query.as_ref().and_then(|q| q.node.as_ref()) {
                    let s = self.statement(q, span);
                    effects.extend(s.effects);
                    declared = Some(s.lineage);
                }
                K::Cursor
            }
            N::FetchStmt(_) | N::ClosePortalStmt(_) => {
                effects.insert(Read);
                K::Cursor
            }
            N::ListenStmt(_) | N::UnlistenStmt(_) => {
                effects.insert(Read);
                K::Listen
            }
            N::NotifyStmt(_) => {
                effects.insert(Write);
                K::Notify
            }
            N::LockStmt(_) => {
                effects.insert(Write);
                K::Lock
            }
            N::VacuumStmt(_)
            | N::ClusterStmt(_)
            | N::ReindexStmt(_)
            | N::CheckPointStmt(_)
            | N::RefreshMatViewStmt(_) => {
                effects.insert(Write);
                K::Maintenance
            }
            N::LoadStmt(_) => {
                effects.extend(Effects::of(&[UnsafeFunction, DynamicSql]));
                K::Maintenance
            }
            N::TruncateStmt(_) => {
                effects.extend(Effects::of(&[Truncate, Write]));
                K::Truncate
            }
            N::DoStmt(_) => {
                effects.insert(DynamicSql);
                K::Do
            }
            N::CallStmt(_) => {
                effects.extend(Effects::of(&[Write, DynamicSql]));
                K::Call
            }
            N::DiscardStmt(_) => {
                effects.insert(SessionConfig);
                config_unsafe = true;
                K::SetConfig
            }
            N::AlterSystemStmt(_) => {
                effects.extend(Effects::of(&[AlterSystem, SessionConfig]));
                config_unsafe = true;
                K::SetConfig
            }
            N::GrantStmt(_)
            | N::GrantRoleStmt(_)
            | N::AlterDefaultPrivilegesStmt(_)
            | N::AlterRoleStmt(_)
            | N::AlterRoleSetStmt(_)
            | N::ReassignOwnedStmt(_) => {
                effects.insert(Privilege);
                K::Grant
            }
            N::CreateRoleStmt(_) => {
                effects.extend(Effects::of(&[Privilege, Ddl]));
                K::Grant
            }
            N::DropRoleStmt(_) | N::DropOwnedStmt(_) => {
                effects.extend(Effects::of(&[Privilege, Ddl, Drop]));
                K::Grant
            }
            N::DropdbStmt(_) => {
                effects.extend(Effects::of(&[Ddl, Drop, DropDatabase]));
                K::Ddl
            }
            N::DropStmt(_)
            | N::DropTableSpaceStmt(_)
            | N::DropUserMappingStmt(_)
            | N::DropSubscriptionStmt(_) => {
                effects.extend(Effects::of(&[Ddl, Drop]));
                K::Ddl
            }
            N::CreateFunctionStmt(_)
            | N::AlterFunctionStmt(_)
            | N::CreateTrigStmt(_)
            | N::CreateEventTrigStmt(_)
            | N::CreatePlangStmt(_)
            | N::CreateExtensionStmt(_)
            | N::AlterExtensionStmt(_)
            | N::AlterExtensionContentsStmt(_)
            | N::RuleStmt(_)
            | N::CreateTransformStmt(_)
            | N::CreateCastStmt(_) => {
                // Their bodies run later, out of the analyzer's sight.
                effects.extend(Effects::of(&[Ddl, DynamicSql]));
                K::Ddl
            }
            N::CreateTableAsStmt(_) | N::CreateUserMappingStmt(_) | N::AlterUserMappingStmt(_) => {
                effects.extend(Effects::of(&[Ddl, Write]));
                K::Ddl
            }
            N::CreateSchemaStmt(_)
            | N::AlterTableStmt(_)
            | N::ReplicaIdentityStmt(_)
            | N::AlterCollationStmt(_)
            | N::AlterDomainStmt(_)
            | N::CreateStmt(_)
            | N::CreateTableSpaceStmt(_)
            | N::AlterTableSpaceOptionsStmt(_)
            | N::AlterTableMoveAllStmt(_)
            | N::CreateFdwStmt(_)
            | N::AlterFdwStmt(_)
            | N::CreateForeignServerStmt(_)
            | N::AlterForeignServerStmt(_)
            | N::CreateForeignTableStmt(_)
            | N::ImportForeignSchemaStmt(_)
            | N::CreatePolicyStmt(_)
            | N::AlterPolicyStmt(_)
            | N::CreateAmStmt(_)
            | N::AlterEventTrigStmt(_)
            | N::CreateSeqStmt(_)
            | N::AlterSeqStmt(_)
            | N::DefineStmt(_)
            | N::CreateDomainStmt(_)
            | N::CreateOpClassStmt(_)
            | N::CreateOpFamilyStmt(_)
            | N::AlterOpFamilyStmt(_)
            | N::CommentStmt(_)
            | N::SecLabelStmt(_)
            | N::IndexStmt(_)
            | N::CreateStatsStmt(_)
            | N::AlterStatsStmt(_)
            | N::RenameStmt(_)
            | N::AlterObjectDependsStmt(_)
            | N::AlterObjectSchemaStmt(_)
            | N::AlterOwnerStmt(_)
            | N::AlterOperatorStmt(_)
            | N::AlterTypeStmt(_)
            | N::CompositeTypeStmt(_)
            | N::CreateEnumStmt(_)
            | N::CreateRangeStmt(_)
            | N::AlterEnumStmt(_)
            | N::ViewStmt(_)
            | N::CreatedbStmt(_)
            | N::AlterDatabaseStmt(_)
            | N::AlterDatabaseRefreshCollStmt(_)
            | N::AlterDatabaseSetStmt(_)
            | N::CreateConversionStmt(_)
            | N::AlterTsdictionaryStmt(_)
            | N::AlterTsconfigurationStmt(_)
            | N::CreatePublicationStmt(_)
            | N::AlterPublicationStmt(_)
            | N::CreateSubscriptionStmt(_)
            | N::AlterSubscriptionStmt(_) => {
                effects.insert(Ddl);
                K::Ddl
            }
            N::ConstraintsSetStmt(_) => {
                effects.insert(TransactionControl);
                K::Transaction
            }
            other => {
                // Rare and refused: the Debug text's first word names the node.
                let name = format!("{other:?}");
                let name = name.split('(').next().unwrap_or("?").to_string();
                return Statement::unknown(
                    format!("statement type {name} is not classified"),
                    span,
                );
            }
        };

        // What nested parts add. EXPLAIN's query has been analyzed on its
        // own above, and only runs with ANALYZE.
        let facts = if kind == K::Explain {
            Facts {
                relations: facts.relations,
                functions: facts.functions,
                ..Facts::default()
            }
        } else {
            facts
        };
        if facts
            .dml
            .iter()
            .any(|k| matches!(k, K::Insert | K::Update | K::Delete | K::Merge))
        {
            effects.insert(Write);
        }
        if facts.select_into {
            effects.extend(Effects::of(&[Write, Ddl]));
        }
        if facts.locking {
            effects.insert(Write);
        }
        let called = facts
            .functions
            .iter()
            .map(|f| f.rsplit('.').next().unwrap_or(f));
        // Attribute notation may call a function: judge those names as calls.
        let attributes = facts.attributes.iter().map(String::as_str);
        if !facts.config_calls.is_empty() {
            // The setting's name is a literal that decides.
            READ_LITERAL.set(true);
        }
        for [name, value] in &facts.config_calls {
            let harmless = match (name.as_deref(), value) {
                (Some("search_path"), Some(v)) => harmless_search_path(v),
                (Some("search_path"), None) => false,
                (Some(name), _) => harmless_setting(&name.to_lowercase(), None),
                (None, _) => false,
            };
            config_unsafe |= !harmless;
        }
        for base in called.chain(attributes).filter(|_| kind != K::Explain) {
            if matches(&self.unsafe_functions, base) {
                effects.insert(UnsafeFunction);
            }
            if matches(DYNAMIC_SQL_FUNCTIONS, base) {
                effects.insert(DynamicSql);
            }
            if matches(WRITING_FUNCTIONS, base) {
                effects.insert(Write);
            }
            if matches(CONFIG_FUNCTIONS, base) {
                effects.insert(SessionConfig);
            }
        }
        // Attribute notation can call a function but shows no arguments.
        config_unsafe |= facts
            .attributes
            .iter()
            .any(|a| matches(CONFIG_FUNCTIONS, a));
        if let Some(s) = &inner {
            config_unsafe |= !s.config_is_harmless();
        }
        // Nested statement kinds: DML other than the top-level one, plus
        // what EXPLAIN ANALYZE runs.
        let mut nested: Vec<StatementKind> = Vec::new();
        let mut own = Some(kind);
        for k in &facts.dml {
            if own == Some(*k) {
                own = None;
            } else if !nested.contains(k) {
                nested.push(*k);
            }
        }
        if kind == K::Explain
            && let Some(s) = &inner
            && (effects.contains(Write) || (s.kind == K::Execute && explain_analyze_flag))
        {
            for k in std::iter::once(s.kind).chain(s.nested.iter().copied()) {
                if !nested.contains(&k) {
                    nested.push(k);
                }
            }
        }
        // EXPLAIN ANALYZE runs its statement, WHERE clause and all.
        let has_where = match &inner {
            Some(s) if kind == K::Explain && effects.contains(Write) => s.has_where,
            _ => facts.has_where,
        };
        let lineage = crate::lineage::of(
            node,
            inner.as_deref().map(|s| &s.lineage).or(declared.as_ref()),
            explain_analyze_flag,
            &facts.functions,
        );
        let pinned = match node {
            N::UpdateStmt(u) if u.with_clause.is_none() => {
                pinned(u.relation.as_ref(), u.where_clause.as_deref())
            }
            N::DeleteStmt(d) if d.with_clause.is_none() => {
                pinned(d.relation.as_ref(), d.where_clause.as_deref())
            }
            _ => None,
        };
        // How it changes the statement timeout: a SET or RESET, or the
        // `set_config('statement_timeout', …)` calls it makes (the most
        // permissive of them counts).
        let statement_timeout = match node {
            N::VariableSetStmt(v) => timeout_set(v),
            // Only ANALYZE runs the statement.
            N::ExplainStmt(_) => inner
                .as_ref()
                .and_then(|s| s.statement_timeout)
                .filter(|_| explain_analyze_flag),
            // pg_settings' update rule calls set_config.
            _ if effects.contains(Write)
                && facts.relations.iter().any(|r| {
                    r.name == "pg_settings" && r.schema.as_deref().is_none_or(|s| s == "pg_catalog")
                }) =>
            {
                Some(TimeoutChange::Unknown)
            }
            _ => facts
                .config_calls
                .iter()
                .filter(|[name, _]| {
                    name.as_deref()
                        .is_none_or(|n| n.eq_ignore_ascii_case("statement_timeout"))
                })
                .map(|[name, value]| match (name, value) {
                    (Some(_), Some(v)) => timeout_change(v),
                    _ => TimeoutChange::Unknown,
                })
                .reduce(|a, b| {
                    use TimeoutChange::{Reset, To, Unknown};
                    match (a, b) {
                        (Unknown, _) | (_, Unknown) => Unknown,
                        (To(x), _) | (_, To(x)) if x.is_zero() => To(x),
                        (To(x), To(y)) => To(x.max(y)),
                        (To(x), Reset) | (Reset, To(x)) => To(x),
                        (Reset, Reset) => Reset,
                    }
                }),
        };
        let disclosure = crate::disclosure::of(
            node,
            kind,
            &facts,
            explain_analyze_flag,
            !lineage.outputs.is_empty(),
        );
        // What changes how the planner costs what comes after it.
        if matches!(node, N::VariableSetStmt(v) if planner_cost_setting(&v.name.to_lowercase()))
            || facts.config_calls.iter().any(|[name, _]| {
                name.as_deref()
                    .is_none_or(|n| planner_cost_setting(&n.to_lowercase()))
            })
            || (effects.contains(Write) && facts.relations.iter().any(|r| r.name == "pg_settings"))
        {
            effects.insert(Effect::PlannerCost);
        }
        Statement {
            kind,
            nested,
            effects,
            pinned,
            disclosure,
            statement_timeout,
            transaction,
            relations: facts.relations,
            functions: facts.functions,
            has_where,
            inner,
            unknown_reason: None,
            syntax_error: None,
            span,
            name: statement_name(node),
            lineage,
            harmless_config: effects.contains(SessionConfig) && !config_unsafe,
        }
    }

    fn copy(
        &self,
        c: &protobuf::CopyStmt,
        effects: &mut Effects,
        inner: &mut Option<Box<Statement>>,
    ) -> StatementKind {
        use Effect::*;
        // Whether a file is named is read from a string literal (`FROM ''`
        // names none): COPY analyses must not be shared by shape.
        READ_LITERAL.set(true);
        if c.is_program {
            effects.insert(CopyProgram);
        } else if !c.filename.is_empty() {
            effects.insert(CopyFile);
        }
        if let Some(q) = c.query.as_ref().and_then(|q| q.node.as_ref()) {
            let s = self.statement(q, (0, 0));
            effects.extend(s.effects);
            *inner = Some(Box::new(s));
        }
        if c.is_from {
            effects.insert(Write);
            StatementKind::CopyIn
        } else {
            effects.extend(Effects::of(&[Read, Export]));
            StatementKind::CopyOut
        }
    }
}

/// What an UPDATE's or DELETE's WHERE clause pins: the columns of the
/// target compared with `=` to a constant or a parameter (possibly cast),
/// in a top-level AND.
fn pinned(
    relation: Option<&protobuf::RangeVar>,
    where_clause: Option<&protobuf::Node>,
) -> Option<Box<airlock_policy::Pinned>> {
    let relation = relation?;
    let target = relation
        .alias
        .as_ref()
        .map_or(relation.relname.as_str(), |a| a.aliasname.as_str());
    let mut columns = Vec::new();
    let mut pending = vec![where_clause?];
    while let Some(node) = pending.pop() {
        match node.node.as_ref()? {
            N::BoolExpr(b) if b.boolop == protobuf::BoolExprType::AndExpr as i32 => {
                pending.extend(b.args.iter());
            }
            N::AExpr(e) if e.kind == protobuf::AExprKind::AexprOp as i32 => {
                let is_eq = matches!(&e.name[..], [op] if matches!(op.node.as_ref(), Some(N::String(s)) if s.sval == "="));
                if !is_eq {
                    continue;
                }
                let (l, r) = (e.lexpr.as_deref(), e.rexpr.as_deref());
                let column = match (column_of(l, target), column_of(r, target)) {
                    (Some(c), None) if is_value(r) => c,
                    (None, Some(c)) if is_value(l) => c,
                    _ => continue,
                };
                columns.push(column);
            }
            // Anything else narrows the rows further without pinning.
            _ => {}
        }
    }
    Some(Box::new(airlock_policy::Pinned {
        relation: airlock_policy::Relation {
            schema: (!relation.schemaname.is_empty()).then(|| relation.schemaname.clone()),
            name: relation.relname.clone(),
        },
        columns,
    }))
}

/// The target's column a node references: `col`, or `target.col`.
fn column_of(node: Option<&protobuf::Node>, target: &str) -> Option<String> {
    let N::ColumnRef(c) = node?.node.as_ref()? else {
        return None;
    };
    let names: Vec<&str> = c
        .fields
        .iter()
        .map(|f| match f.node.as_ref() {
            Some(N::String(s)) => Some(s.sval.as_str()),
            _ => None,
        })
        .collect::<Option<_>>()?;
    match names[..] {
        [column] => Some(column.to_string()),
        [qualifier, column] if qualifier == target => Some(column.to_string()),
        _ => None,
    }
}

/// A constant or a parameter, possibly cast: one value. Not one cast to a
/// floating-point type: many integers compare equal to one float.
fn is_value(node: Option<&protobuf::Node>) -> bool {
    match node.and_then(|n| n.node.as_ref()) {
        Some(N::AConst(_) | N::ParamRef(_)) => true,
        Some(N::TypeCast(t)) => {
            let lossy = t.type_name.as_ref().is_some_and(|tn| {
                tn.names.iter().any(|n| {
                    matches!(n.node.as_ref(), Some(N::String(s))
                        if matches!(s.sval.to_lowercase().as_str(), "float4" | "float8" | "real" | "double precision" | "float"))
                })
            });
            !lossy && is_value(t.arg.as_deref())
        }
        _ => false,
    }
}

/// Statement kinds whose analyses may be shared by texts of the same shape
/// (the hot path's): in these the grammar checks no literal's value beyond
/// its token type (an integer or another number), which the shape keeps.
fn shareable_by_shape(kind: StatementKind) -> bool {
    use StatementKind as K;
    matches!(
        kind,
        K::Select
            | K::Insert
            | K::Update
            | K::Delete
            | K::Merge
            | K::Transaction
            | K::Show
            | K::Explain
            | K::Prepare
            | K::Execute
            | K::Cursor
            | K::Call
            | K::Listen
            | K::Notify
            | K::Lock
            | K::CopyIn
            | K::CopyOut
    )
}

fn empty(span: (usize, usize)) -> Statement {
    Statement {
        kind: StatementKind::Empty,
        unknown_reason: None,
        disclosure: airlock_policy::Disclosure::Nothing,
        ..Statement::unknown("", span)
    }
}

/// Settings that scale the planner's cost estimates (or choose which plan a
/// prepared statement runs).
fn planner_cost_setting(name: &str) -> bool {
    name.ends_with("_cost")
        || matches!(
            name,
            "effective_cache_size"
                | "cursor_tuple_fraction"
                | "plan_cache_mode"
                | "min_parallel_table_scan_size"
                | "min_parallel_index_scan_size"
        )
}

/// The prepared-statement name of PREPARE, EXECUTE and DEALLOCATE.
fn statement_name(node: &N) -> Option<String> {
    match node {
        N::PrepareStmt(p) => Some(p.name.clone()),
        N::ExecuteStmt(e) => Some(e.name.clone()),
        N::DeallocateStmt(d) if !d.isall => Some(d.name.clone()),
        _ => None,
    }
}

fn variable_set(v: &protobuf::VariableSetStmt, effects: &mut Effects) -> StatementKind {
    use protobuf::VariableSetKind as V;
    let name = v.name.to_lowercase();
    if (name == "role" || name == "session_authorization") && v.kind != V::VarResetAll as i32 {
        effects.insert(Effect::Privilege);
        return StatementKind::SetRole;
    }
    effects.insert(Effect::SessionConfig);
    StatementKind::SetConfig
}

/// Whether a SET/RESET changes only harmless settings
/// ([`HARMLESS_SETTINGS`]). `SET TRANSACTION` and `SET SESSION
/// CHARACTERISTICS AS TRANSACTION` are harmless unless they make
/// transactions read-write.
fn harmless_set(v: &protobuf::VariableSetStmt) -> bool {
    use protobuf::VariableSetKind as V;
    let name = v.name.to_lowercase();
    let kind = v.kind;
    if kind == V::VarSetMulti as i32 {
        return v.args.iter().all(|a| match a.node.as_ref() {
            Some(N::DefElem(d)) => match d.defname.as_str() {
                "transaction_isolation" | "transaction_deferrable" => true,
                "transaction_read_only" => const_truthy(d.arg.as_deref()),
                _ => false,
            },
            _ => false,
        });
    }
    if kind == V::VarSetValue as i32 {
        let values: Vec<String> = v
            .args
            .iter()
            .map(|a| match a.node.as_ref() {
                Some(N::AConst(c)) => match &c.val {
                    Some(a_const::Val::Sval(s)) => s.sval.clone(),
                    _ => String::new(),
                },
                _ => String::new(),
            })
            .collect();
        return harmless_setting(&name, Some(&values));
    }
    (kind == V::VarSetDefault as i32 || kind == V::VarReset as i32) && harmless_setting(&name, None)
}

/// How a SET or RESET changes `statement_timeout`, if it names it.
fn timeout_set(v: &protobuf::VariableSetStmt) -> Option<TimeoutChange> {
    use protobuf::VariableSetKind as V;
    if v.kind == V::VarResetAll as i32 {
        return Some(TimeoutChange::Reset);
    }
    if !v.name.eq_ignore_ascii_case("statement_timeout") {
        return None;
    }
    Some(match v.kind {
        k if k == V::VarSetDefault as i32 || k == V::VarReset as i32 => TimeoutChange::Reset,
        k if k == V::VarSetValue as i32 => match v.args.as_slice() {
            [a] => match a.node.as_ref() {
                Some(N::AConst(c)) => match &c.val {
                    Some(a_const::Val::Ival(i)) => timeout_change(&i.ival.to_string()),
                    Some(a_const::Val::Fval(f)) => timeout_change(&f.fval),
                    Some(a_const::Val::Sval(s)) => timeout_change(&s.sval),
                    _ => TimeoutChange::Unknown,
                },
                _ => TimeoutChange::Unknown,
            },
            _ => TimeoutChange::Unknown,
        },
        _ => TimeoutChange::Unknown,
    })
}

/// A `statement_timeout` value as a change of it ([`timeout`]).
pub fn timeout_change(text: &str) -> TimeoutChange {
    timeout(text).map_or(TimeoutChange::Unknown, TimeoutChange::To)
}

/// A `statement_timeout` value that PostgreSQL reads as the same number of
/// milliseconds: a whole number of milliseconds, or a whole number and a
/// unit (`ms`, `s`, `min`, `h`, `d`, or `us` in whole milliseconds).
/// `None` for anything else: a fraction (PostgreSQL rounds it its own way,
/// `0.5` to 0, no limit), a sign, hexadecimal. (A leading zero is octal to
/// PostgreSQL, which reads `010` as 8: less than it looks, never more.)
pub fn timeout(text: &str) -> Option<std::time::Duration> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let ms = match unit.trim_start() {
        "" | "ms" => n,
        "us" if n.is_multiple_of(1_000) => n / 1_000,
        "s" => n.checked_mul(1_000)?,
        "min" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        "d" => n.checked_mul(86_400_000)?,
        _ => return None,
    };
    (ms <= i32::MAX as u64).then(|| std::time::Duration::from_millis(ms))
}

/// What a transaction-control statement does to the transaction.
fn transaction_op(t: &protobuf::TransactionStmt) -> airlock_policy::Transaction {
    use airlock_policy::Transaction as O;
    use protobuf::TransactionStmtKind as T;
    match T::try_from(t.kind) {
        Ok(T::TransStmtBegin | T::TransStmtStart) => O::Begin,
        Ok(T::TransStmtCommit) => O::Commit,
        Ok(T::TransStmtRollback) => O::Rollback,
        Ok(T::TransStmtSavepoint | T::TransStmtRelease | T::TransStmtRollbackTo) => O::Savepoint,
        Ok(T::TransStmtPrepare) => O::Prepare,
        Ok(T::TransStmtCommitPrepared | T::TransStmtRollbackPrepared) => O::Prepared,
        // A kind this parser version does not name: counted as the one
        // commit review watches for.
        _ => O::Commit,
    }
}

/// BEGIN/START TRANSACTION … READ WRITE.
fn begins_read_write(t: &protobuf::TransactionStmt) -> bool {
    use protobuf::TransactionStmtKind as T;
    (t.kind == T::TransStmtBegin as i32 || t.kind == T::TransStmtStart as i32)
        && t.options.iter().any(|o| match o.node.as_ref() {
            Some(N::DefElem(d)) => {
                d.defname == "transaction_read_only" && !const_truthy(d.arg.as_deref())
            }
            _ => false,
        })
}

/// Whether EXPLAIN's options include ANALYZE (without `false`/`off`/`0`).
fn explain_analyze(e: &protobuf::ExplainStmt) -> bool {
    e.options.iter().any(|o| match o.node.as_ref() {
        Some(N::DefElem(d)) => {
            d.defname.eq_ignore_ascii_case("analyze")
                && d.arg.as_ref().is_none_or(|a| const_truthy(Some(a)))
        }
        _ => false,
    })
}

thread_local! {
    /// Set when an analysis lets a literal's value steer a classification.
    static READ_LITERAL: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Records that a literal's value steered the analysis (its lineage
/// included): it must not be shared by shape.
pub(crate) fn read_literal() {
    READ_LITERAL.set(true);
}

/// The truth of a DefElem argument: absent means true.
fn const_truthy(arg: Option<&protobuf::Node>) -> bool {
    let Some(node) = arg.and_then(|a| a.node.as_ref()) else {
        return true;
    };
    READ_LITERAL.set(true);
    match node {
        N::AConst(c) => match &c.val {
            Some(a_const::Val::Ival(i)) => i.ival != 0,
            Some(a_const::Val::Boolval(b)) => b.boolval,
            Some(a_const::Val::Sval(s)) => {
                !matches!(s.sval.to_lowercase().as_str(), "false" | "off" | "no" | "0")
            }
            _ => true,
        },
        N::Integer(i) => i.ival != 0,
        N::Boolean(b) => b.boolval,
        N::String(s) => !matches!(s.sval.to_lowercase().as_str(), "false" | "off" | "no" | "0"),
        _ => true,
    }
}

/// Resolves EXECUTE statements against the session's SQL-level prepared
/// statements, and records PREPARE and DEALLOCATE. Returns the statements
/// to decide on.
pub fn resolve(statements: &[Statement], session: &mut SessionState) -> Vec<Statement> {
    statements
        .iter()
        .map(|s| match s.kind {
            StatementKind::Prepare => {
                match (&s.name, &s.inner) {
                    (Some(name), Some(inner)) => {
                        session.prepared.insert(name.clone(), (**inner).clone());
                    }
                    // A PREPARE whose text airlock cannot see (MySQL's
                    // `PREPARE s FROM @var`) replaces any statement of that
                    // name: a later EXECUTE of it is unknown, never the
                    // statement prepared before.
                    (Some(name), None) => {
                        session.prepared.remove(name);
                    }
                    _ => {}
                }
                s.clone()
            }
            StatementKind::Deallocate => {
                match &s.name {
                    Some(name) => session.prepared.remove(name),
                    None => {
                        session.prepared.clear();
                        None
                    }
                };
                s.clone()
            }
            // EXPLAIN ANALYZE EXECUTE runs the prepared statement.
            StatementKind::Explain if s.nested.contains(&StatementKind::Execute) => {
                let Some(inner) = &s.inner else { return s.clone() };
                let executed = resolve(std::slice::from_ref(inner), session).remove(0);
                if executed.kind == StatementKind::Unknown {
                    return Statement { span: s.span, ..executed };
                }
                let mut out = s.clone();
                out.harmless_config = s.config_is_harmless() && executed.config_is_harmless();
                out.effects.extend(executed.effects);
                out.has_where = executed.has_where;
                out.nested.extend(executed.nested.iter().copied());
                out.lineage = crate::lineage::explain_execute(&s.lineage, &executed.lineage);
                out.inner = Some(Box::new(executed));
                out
            }
            StatementKind::Execute => match s.name.as_ref().and_then(|n| session.prepared.get(n)) {
                Some(prepared) => {
                    let mut nested = vec![prepared.kind];
                    nested.extend(prepared.nested.iter().copied());
                    // The EXECUTE's own parameters run too: what they call
                    // counts with what the prepared statement does.
                    let mut effects = prepared.effects;
                    effects.extend(s.effects);
                    let mut relations = prepared.relations.clone();
                    relations.extend(s.relations.iter().filter(|r| !prepared.relations.contains(r)).cloned());
                    let mut functions = prepared.functions.clone();
                    functions.extend(s.functions.iter().filter(|f| !prepared.functions.contains(f)).cloned());
                    Statement {
                        nested,
                        effects,
                        harmless_config: s.config_is_harmless() && prepared.config_is_harmless(),
                        relations,
                        functions,
                        has_where: prepared.has_where,
                        inner: Some(Box::new(prepared.clone())),
                        lineage: crate::lineage::execute(&prepared.lineage, &s.lineage),
                        ..s.clone()
                    }
                }
                None => Statement::unknown(
                    "it EXECUTEs a prepared statement airlock has not seen prepared in this session",
                    s.span,
                ),
            },
            _ => s.clone(),
        })
        .collect()
}
