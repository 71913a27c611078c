//! Analyses by query text, per thread.
//!
//! Each runtime thread keeps its own cache, so sessions never contend for a
//! lock. An analysis is kept under the exact text and, when the text has a
//! [`shape`](crate::shape) and no literal value steered the analysis, under
//! its shape too, so statements that differ only in inlined literals are
//! parsed once. A shape hit's statement spans belong to the text first
//! analyzed, not to the caller's: [`Cached::exact`] says which. Bounded two ways: texts over [`MAX_TEXT`] are not kept, and each
//! thread keeps at most 2 × [`CAPACITY`] entries: when the current generation
//! fills up it becomes the previous one and the one before is dropped, and a
//! hit in the previous generation is promoted (an LRU approximation with O(1)
//! work per call).

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use airlock_policy::Statement;

use crate::Analyzer;

/// Entries per generation, per thread.
pub const CAPACITY: usize = 1024;
/// Texts longer than this are analyzed every time.
pub const MAX_TEXT: usize = 4096;

type Entry = Arc<[Statement]>;

/// An analysis from the cache.
pub struct Cached {
    pub statements: Entry,
    /// Whether the analysis is of this very text (its spans are valid), as
    /// opposed to another text of the same shape.
    pub exact: bool,
}

/// Shape keys start with a NUL, which no query text contains.
fn shape_key(sql: &str) -> Option<Box<str>> {
    let mut prefix = String::with_capacity(sql.len() + 1);
    prefix.push('\0');
    crate::shape::shape_after(prefix, sql).map(String::into_boxed_str)
}

#[derive(Default)]
struct Generations {
    analyzer: u64,
    current: HashMap<Box<str>, Entry>,
    previous: HashMap<Box<str>, Entry>,
}

thread_local! {
    static CACHE: RefCell<Generations> = RefCell::default();
    static MYSQL: RefCell<Generations> = RefCell::default();
}

/// `analyzer.analyze(sql, mode)` (MySQL), from this thread's cache when it
/// can be: by exact text and lexing mode only (no shapes: MySQL's lexing
/// depends on the mode, and the shape language is PostgreSQL's).
pub fn analyze_mysql(
    analyzer: &crate::mysql::Analyzer,
    sql: &str,
    mode: crate::mysql::Mode,
) -> Entry {
    if sql.len() > MAX_TEXT {
        return analyzer.analyze(sql, mode).into();
    }
    MYSQL.with_borrow_mut(|g| {
        if g.analyzer != analyzer.id() {
            *g = Generations {
                analyzer: analyzer.id(),
                ..Generations::default()
            };
        }
        // The mode is a one-character prefix no query text collides with:
        // keys of different modes never meet.
        let mut key = String::with_capacity(sql.len() + 1);
        key.push(char::from(
            b'\x01' + u8::from(mode.ansi_quotes) + 2 * u8::from(mode.no_backslash_escapes),
        ));
        key.push_str(sql);
        if let Some(hit) = g.get(&key) {
            return hit;
        }
        let entry: Entry = analyzer.analyze(sql, mode).into();
        g.insert(key.into(), Arc::clone(&entry));
        entry
    })
}

/// `analyzer.analyze(sql)`, from this thread's cache when it can be.
pub fn analyze(analyzer: &Analyzer, sql: &str) -> Cached {
    if sql.len() > MAX_TEXT {
        return Cached {
            statements: analyzer.analyze(sql).into(),
            exact: true,
        };
    }
    CACHE.with_borrow_mut(|g| {
        if g.analyzer != analyzer.id() {
            *g = Generations {
                analyzer: analyzer.id(),
                ..Generations::default()
            };
        }
        if let Some(hit) = g.get(sql) {
            return Cached {
                statements: hit,
                exact: true,
            };
        }
        let shape = shape_key(sql);
        if let Some(hit) = shape.as_deref().and_then(|k| g.get(k)) {
            return Cached {
                statements: hit,
                exact: false,
            };
        }
        let (statements, read_literal) = analyzer.analyze_reporting(sql);
        let entry: Entry = statements.into();
        g.insert(sql.into(), Arc::clone(&entry));
        if let Some(key) = shape.filter(|_| !read_literal) {
            g.insert(key, Arc::clone(&entry));
        }
        Cached {
            statements: entry,
            exact: true,
        }
    })
}

impl Generations {
    fn get(&mut self, key: &str) -> Option<Entry> {
        if let Some(hit) = self.current.get(key) {
            return Some(Arc::clone(hit));
        }
        let (key, hit) = self.previous.remove_entry(key)?;
        self.insert(key, Arc::clone(&hit));
        Some(hit)
    }

    fn insert(&mut self, key: Box<str>, entry: Entry) {
        if self.current.len() >= CAPACITY {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, entry);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_per_analyzer_and_stays_bounded() {
        let a = Analyzer::default();
        let first = analyze(&a, "select 1").statements;
        assert!(Arc::ptr_eq(&first, &analyze(&a, "select 1").statements));
        // Another analyzer (another policy) does not see the entry.
        let b = Analyzer::new(&["my_fn".into()]);
        assert!(!Arc::ptr_eq(&first, &analyze(&b, "select 1").statements));
        for i in 0..3 * CAPACITY {
            analyze(&b, &format!("select {i}"));
        }
        CACHE.with_borrow(|g| {
            assert!(g.current.len() <= CAPACITY && g.previous.len() <= CAPACITY);
        });
        let long = format!("select '{}'", "x".repeat(MAX_TEXT));
        assert!(!Arc::ptr_eq(
            &analyze(&b, &long).statements,
            &analyze(&b, &long).statements
        ));
    }

    #[test]
    fn mysql_analyses_are_kept_per_text_mode_and_analyzer() {
        use crate::mysql::{Analyzer as My, Mode};
        let a = My::default();
        let ansi = Mode {
            ansi_quotes: true,
            no_backslash_escapes: false,
        };
        let first = analyze_mysql(&a, "select \"a\" from t", Mode::default());
        assert!(Arc::ptr_eq(
            &first,
            &analyze_mysql(&a, "select \"a\" from t", Mode::default())
        ));
        // The same text in another mode is analysed again (and differs:
        // a string there, a column here).
        let other = analyze_mysql(&a, "select \"a\" from t", ansi);
        assert!(!Arc::ptr_eq(&first, &other));
        assert_eq!(*other, *a.analyze("select \"a\" from t", ansi));
        let b = My::default();
        assert!(!Arc::ptr_eq(
            &first,
            &analyze_mysql(&b, "select \"a\" from t", Mode::default())
        ));
    }

    #[test]
    fn same_shape_shares_an_analysis_unless_a_literal_decided() {
        let a = Analyzer::default();
        let first = analyze(&a, "select v from t where id = 1");
        let other = analyze(&a, "select v from t where id = 42");
        assert!(first.exact && !other.exact);
        assert!(Arc::ptr_eq(&first.statements, &other.statements));
        let again = analyze(&a, "select v from t where id = 1");
        assert!(again.exact, "the exact text is found first");

        let off = analyze(&a, "explain (analyze 0) delete from t where id = 1");
        let on = analyze(&a, "explain (analyze 1) delete from t where id = 1");
        assert!(on.exact, "not shared: the literal decided");
        let write = airlock_policy::Effect::Write;
        assert!(!off.statements[0].effects.contains(write));
        assert!(on.statements[0].effects.contains(write));

        // `FROM ''` names no file; a real path must not inherit that.
        let copy_file = airlock_policy::Effect::CopyFile;
        let none = analyze(&a, "copy t from ''");
        let file = analyze(&a, "copy t from '/etc/passwd'");
        assert!(file.exact, "COPY analyses are not shared by shape");
        assert!(!none.statements[0].effects.contains(copy_file));
        assert!(file.statements[0].effects.contains(copy_file));
    }
}
