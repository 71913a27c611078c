//! The upstream's catalog, as masking needs it, and its unique keys, which
//! bound the rows an UPDATE or DELETE changes without a planner estimate.
//!
//! Read once per connection and policy on a new session's own upstream
//! connection, right after login and before the client is let in (so the
//! catalog is read with the session's role, and nothing else is in flight),
//! then shared by the connection's sessions. It goes stale when a statement
//! run through airlock changes the schema, when a result names a relation
//! it does not know, and after [`MAX_AGE`]; the next session reads it again.
//! A session keeps the catalog it started with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use airlock_pgwire::codec;
use airlock_policy::UniqueKeys;
use airlock_policy::masking::{
    CatalogFacts, CatalogRelation, MaskingPolicy, RelationKind, SensitiveCatalog,
};
use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::stream::UpstreamStream;

/// How long a catalog is trusted before it is read again, so schema changes
/// made outside airlock are picked up.
pub const MAX_AGE: Duration = Duration::from_secs(60);

/// The largest catalog answer read (a few million columns).
const MAX_ANSWER: usize = 256 << 20;

struct Entry<T> {
    catalog: Arc<T>,
    read_at: Instant,
    stale: bool,
}

/// One kind of catalog facts by connection name, for one policy snapshot.
pub struct CatalogCache<T> {
    entries: Mutex<HashMap<String, Entry<T>>>,
}

impl<T> Default for CatalogCache<T> {
    fn default() -> Self {
        CatalogCache {
            entries: Mutex::default(),
        }
    }
}

impl<T> CatalogCache<T> {
    /// The connection's catalog if it is fresh.
    pub fn fresh(&self, connection: &str) -> Option<Arc<T>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries
            .get(connection)
            .filter(|e| !e.stale && e.read_at.elapsed() < MAX_AGE)
            .map(|e| Arc::clone(&e.catalog))
    }

    pub fn insert(&self, connection: &str, catalog: Arc<T>) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.insert(
            connection.to_string(),
            Entry {
                catalog,
                read_at: Instant::now(),
                stale: false,
            },
        );
    }

    /// Makes the next session on `connection` read the catalog again.
    pub fn invalidate(&self, connection: &str) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(e) = entries.get_mut(connection) {
            e.stale = true;
        }
    }
    /// The connection's catalog if it is fresh; otherwise `read` (within
    /// `timeout`), cached for the connection's next sessions.
    pub async fn get_or_read(
        &self,
        connection: &str,
        timeout: Duration,
        read: impl Future<Output = Result<T, CatalogError>>,
    ) -> Result<Arc<T>, CatalogError> {
        if let Some(c) = self.fresh(connection) {
            return Ok(c);
        }
        let c = tokio::time::timeout(timeout, read)
            .await
            .unwrap_or(Err(CatalogError::TimedOut))?;
        let c = Arc::new(c);
        self.insert(connection, Arc::clone(&c));
        Ok(c)
    }
}

/// What the gateway reads of each connection's catalog: what masking needs
/// (masked sessions), and the unique keys that bound an UPDATE's or
/// DELETE's rows without a planner estimate (sessions whose guardrails
/// have `estimated_rows_over`).
#[derive(Default)]
pub struct Catalogs {
    pub masking: CatalogCache<SensitiveCatalog>,
    pub keys: CatalogCache<UniqueKeys>,
}

impl Catalogs {
    /// A schema change: the next session on `connection` reads both again.
    pub fn invalidate(&self, connection: &str) {
        self.masking.invalidate(connection);
        self.keys.invalidate(connection);
    }
}

/// The masking catalog a route needs: `None` for a route exempt from
/// masking (or when nothing is masked) unless it is schema-only (its
/// errors are scrubbed all the same); otherwise the connection's, read
/// with `read` on the route's own upstream when the cache has none fresh.
pub async fn for_masking(
    snapshot: &crate::Snapshot,
    route: &airlock_policy::Route,
    read: impl Future<Output = Result<SensitiveCatalog, CatalogError>>,
) -> Result<Option<Arc<SensitiveCatalog>>, CatalogError> {
    if (!snapshot.masking.reads_results() || route.unmask) && route.schema_only.is_none() {
        return Ok(None);
    }
    let timeout = snapshot.limits.upstream_connect_timeout;
    let catalog = snapshot
        .catalogs
        .masking
        .get_or_read(&route.connection, timeout, read)
        .await;
    if let Err(e) = &catalog {
        tracing::warn!(error = %e, "cannot read the upstream catalog for masking");
    }
    catalog.map(Some)
}

/// The unique keys a read-write route whose guardrails use row estimates
/// reads (PostgreSQL), to spare it most of them; `None` otherwise, and when
/// the upstream refuses the query (estimates are then fetched). `Err` only
/// for an upstream left mid-answer.
pub async fn for_bounds(
    snapshot: &crate::Snapshot,
    route: &airlock_policy::Route,
    read: impl Future<Output = Result<UniqueKeys, CatalogError>>,
) -> Result<Option<Arc<UniqueKeys>>, CatalogError> {
    if !snapshot.guardrails.use_estimates() || route.mode == airlock_policy::AccessMode::ReadOnly {
        return Ok(None);
    }
    let timeout = snapshot.limits.upstream_connect_timeout;
    match snapshot
        .catalogs
        .keys
        .get_or_read(&route.connection, timeout, read)
        .await
    {
        Ok(k) => Ok(Some(k)),
        Err(e @ CatalogError::Refused(_)) => {
            tracing::warn!(error = %e, "cannot read the upstream's unique keys; estimates are fetched");
            Ok(None)
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the upstream's unique keys");
            Err(e)
        }
    }
}

/// Why the catalog could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("the upstream refused the catalog query (SQLSTATE {0})")]
    Refused(String),
    #[error("the upstream's answer was malformed: {0}")]
    Malformed(&'static str),
    #[error("reading the catalog timed out")]
    TimedOut,
}

/// PostgreSQL's first OID for objects created after initdb: lower OIDs are
/// built in.
const FIRST_NORMAL_OID: u32 = 16384;

/// Built-in relations that hold values copied from other relations, masked
/// whole (`None`) or in one column whatever the policy says: the planner's
/// statistics hold sampled column values, and `pg_stat_activity.query`
/// holds other sessions' statements with their literals. All in
/// `pg_catalog`.
const SYSTEM_SENSITIVE: &[(&str, Option<&str>)] = &[
    ("pg_stats", None),
    ("pg_stats_ext", None),
    ("pg_stats_ext_exprs", None),
    ("pg_statistic", None),
    ("pg_statistic_ext_data", None),
    ("pg_stat_activity", Some("query")),
];

/// Extension relations of the same kind, in whatever schema the extension
/// was installed.
const EXTENSION_SENSITIVE: &[(&str, Option<&str>)] = &[("pg_stat_statements", Some("query"))];

/// What the masking policy needs to know of a PostgreSQL relation.
fn kind(oid: u32, schema: &str, name: &str) -> RelationKind {
    let built_in = oid < FIRST_NORMAL_OID;
    let exposes = if built_in {
        SYSTEM_SENSITIVE
            .iter()
            .find(|(n, _)| schema == "pg_catalog" && *n == name)
    } else {
        EXTENSION_SENSITIVE.iter().find(|(n, _)| *n == name)
    };
    match exposes {
        Some((_, column)) => RelationKind::Exposes {
            column: column.map(str::to_string),
            built_in,
        },
        None if built_in => RelationKind::BuiltIn,
        None => RelationKind::User,
    }
}

/// The catalog query: relations and their columns, views' column reads,
/// views over user functions, inheritance, user functions. Each is one
/// statement of one simple Query, which runs as one implicit transaction:
/// its first statement pins `search_path` to `pg_catalog` (so no operator or
/// function a client created can stand in for the built-in ones) and the
/// client encoding to UTF8 (so names compare with the policy's), both for
/// that transaction only.
fn query() -> String {
    let system: Vec<String> = SYSTEM_SENSITIVE
        .iter()
        .map(|(r, _)| format!("'{r}'"))
        .collect();
    let rewrite = "'pg_catalog.pg_rewrite'::pg_catalog.regclass::pg_catalog.oid";
    format!(
        "SELECT pg_catalog.set_config('search_path', 'pg_catalog', true), \
                pg_catalog.set_config('client_encoding', 'UTF8', true); \
         SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname, a.attgenerated <> '' \
         FROM pg_catalog.pg_class c \
         JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
         JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
         WHERE (c.oid >= 16384::pg_catalog.oid AND c.relkind IN ('r', 'v', 'm', 'f', 'p')) \
            OR (n.nspname = 'pg_catalog' AND c.relname IN ({})) \
         ORDER BY c.oid, a.attnum; \
         SELECT DISTINCT r.ev_class, d.refobjid, d.refobjsubid \
         FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite r ON d.objid = r.oid \
         WHERE d.classid = {rewrite} \
           AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass::pg_catalog.oid \
           AND d.refobjid <> r.ev_class; \
         SELECT DISTINCT r.ev_class \
         FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_rewrite r ON d.objid = r.oid \
         WHERE d.classid = {rewrite} \
           AND d.refclassid = 'pg_catalog.pg_proc'::pg_catalog.regclass::pg_catalog.oid \
           AND d.refobjid >= 16384::pg_catalog.oid; \
         SELECT inhrelid, inhparent FROM pg_catalog.pg_inherits; \
         SELECT n.nspname, p.proname FROM pg_catalog.pg_proc p \
         JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace \
         WHERE p.oid >= 16384::pg_catalog.oid AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d \
           WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass::pg_catalog.oid \
             AND d.objid = p.oid AND d.deptype = 'e')",
        system.join(", ")
    )
}

type Rows = Vec<Vec<Option<String>>>;

/// Reads the catalog on an idle upstream session (after login, before the
/// client's first message) and compiles it against `policy`.
pub async fn read(
    upstream: &mut UpstreamStream,
    policy: &MaskingPolicy,
) -> Result<SensitiveCatalog, CatalogError> {
    let results = run(upstream, &query()).await?;
    let [
        _settings,
        relations,
        views,
        view_functions,
        inherits,
        functions,
    ] = <[Rows; 6]>::try_from(results)
        .map_err(|_| CatalogError::Malformed("expected six results"))?;
    Ok(SensitiveCatalog::build(
        policy,
        facts(relations, views, view_functions, inherits, functions)?,
    ))
}

/// The unique-key query: every relation's name (whatever its kind, so that
/// an unqualified name known in several schemas is known to be ambiguous)
/// and the columns of each unique key that bounds rows: of a plain table
/// without inheritance children or of a partitioned table, enforced
/// immediately (a deferred one may hold duplicates inside a transaction),
/// valid, on plain columns, without a predicate, each column compared in
/// its own collation, on a relation without rules. `search_path` is pinned
/// as for the masking catalog.
const KEYS: &str = "SELECT pg_catalog.set_config('search_path', 'pg_catalog', true), \
        pg_catalog.set_config('client_encoding', 'UTF8', true); \
    SELECT n.nspname, c.relname, NULL::pg_catalog.oid, NULL::pg_catalog.name \
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') \
    UNION ALL \
    SELECT n.nspname, c.relname, i.indexrelid, a.attname \
    FROM pg_catalog.pg_index i \
    JOIN pg_catalog.pg_class c ON c.oid = i.indrelid \
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = ANY (i.indkey) \
    WHERE i.indisunique AND i.indimmediate AND i.indisvalid \
      AND i.indpred IS NULL AND i.indexprs IS NULL AND NOT c.relhasrules \
      AND (c.relkind = 'p' OR (c.relkind = 'r' AND NOT c.relhassubclass)) \
      AND NOT EXISTS (SELECT 1 FROM pg_catalog.generate_subscripts(i.indkey, 1) k \
        JOIN pg_catalog.pg_attribute ka ON ka.attrelid = i.indrelid AND ka.attnum = i.indkey[k] \
        WHERE i.indcollation[k] <> ka.attcollation) \
    ORDER BY 1, 2, 3";

/// Reads the unique keys on an idle upstream session, like [`read`].
pub async fn read_keys(upstream: &mut UpstreamStream) -> Result<UniqueKeys, CatalogError> {
    let results = run(upstream, KEYS).await?;
    let [_settings, rows] = <[Rows; 2]>::try_from(results)
        .map_err(|_| CatalogError::Malformed("expected two results"))?;
    let mut keys = UniqueKeys::default();
    // Rows come ordered by relation and index: each index's columns are
    // consecutive.
    let mut indexes: Vec<([String; 3], Vec<String>)> = Vec::new();
    for row in rows {
        let [Some(schema), Some(name), index, column] = <[Option<String>; 4]>::try_from(row)
            .map_err(|_| CatalogError::Malformed("expected four columns"))?
        else {
            return Err(CatalogError::Malformed("a relation without a name"));
        };
        match (index, column) {
            (Some(index), Some(column)) => {
                let id = [schema, name, index];
                match indexes.last_mut() {
                    Some((last, columns)) if *last == id => columns.push(column),
                    _ => indexes.push((id, vec![column])),
                }
            }
            _ => keys.add_relation(&schema, &name),
        }
    }
    for ([schema, name, _], columns) in indexes {
        keys.add_key(&schema, &name, columns);
    }
    Ok(keys)
}

/// Runs `sql` as one simple Query and returns each statement's rows.
async fn run(upstream: &mut UpstreamStream, sql: &str) -> Result<Vec<Rows>, CatalogError> {
    let mut out = BytesMut::new();
    codec::query(sql, &mut out);
    upstream.write_all(&out).await?;
    upstream.flush().await?;
    answers(upstream).await
}

/// The rows of each statement's result, until ReadyForQuery.
async fn answers(upstream: &mut UpstreamStream) -> Result<Vec<Rows>, CatalogError> {
    let mut buf = BytesMut::with_capacity(64 << 10);
    let mut results: Vec<Rows> = Vec::new();
    let mut current: Rows = Vec::new();
    let mut error = None;
    loop {
        while let Some(msg) = codec::parse_message(&mut buf, MAX_ANSWER)
            .map_err(|_| CatalogError::Malformed("bad message"))?
        {
            match msg.tag {
                b'D' => current.push(data_row(&msg.body)?),
                b'C' => results.push(std::mem::take(&mut current)),
                b'E' => {
                    let fields = codec::notice_fields(&msg.body);
                    let code = fields
                        .iter()
                        .find(|(f, _)| *f == b'C')
                        .map(|(_, v)| v.clone());
                    error = Some(code.unwrap_or_default());
                }
                b'Z' => {
                    return match error {
                        Some(code) => Err(CatalogError::Refused(code)),
                        None => Ok(results),
                    };
                }
                _ => {}
            }
        }
        if upstream.read_buf(&mut buf).await? == 0 {
            return Err(CatalogError::Malformed(
                "the upstream closed the connection",
            ));
        }
    }
}

fn data_row(body: &[u8]) -> Result<Vec<Option<String>>, CatalogError> {
    let mut values = codec::data_row_values(body);
    let row = values
        .by_ref()
        .map(|v| v.map(|v| String::from_utf8_lossy(v).into_owned()))
        .collect();
    if !values.is_complete() {
        return Err(CatalogError::Malformed("bad DataRow"));
    }
    Ok(row)
}

fn facts(
    relations: Rows,
    views: Rows,
    view_functions: Rows,
    inherits: Rows,
    functions: Rows,
) -> Result<CatalogFacts, CatalogError> {
    fn col<T: std::str::FromStr>(row: &[Option<String>], i: usize) -> Result<T, CatalogError> {
        row.get(i)
            .and_then(|v| v.as_deref())
            .and_then(|v| v.parse().ok())
            .ok_or(CatalogError::Malformed("unexpected catalog value"))
    }
    let mut out = CatalogFacts {
        first_user_id: FIRST_NORMAL_OID,
        ..CatalogFacts::default()
    };
    for row in relations {
        let oid: u32 = col(&row, 0)?;
        let attnum: i16 = col(&row, 3)?;
        let column = (attnum, col(&row, 4)?);
        let generated = col::<String>(&row, 5)? == "t";
        if !matches!(out.relations.last(), Some(r) if r.oid == oid) {
            let (schema, name): (String, String) = (col(&row, 1)?, col(&row, 2)?);
            out.relations.push(CatalogRelation {
                oid,
                kind: kind(oid, &schema, &name),
                schema,
                name,
                columns: Vec::new(),
                generated: Vec::new(),
            });
        }
        let r = out.relations.last_mut().expect("pushed above");
        r.columns.push(column);
        if generated {
            r.generated.push(attnum);
        }
    }
    for row in views {
        out.view_reads
            .push((col(&row, 0)?, col(&row, 1)?, col(&row, 2)?));
    }
    for row in view_functions {
        out.view_functions.push(col(&row, 0)?);
    }
    for row in inherits {
        out.inherits.push((col(&row, 0)?, col(&row, 1)?));
    }
    for row in functions {
        out.user_functions.push((col(&row, 0)?, col(&row, 1)?));
    }
    Ok(out)
}
