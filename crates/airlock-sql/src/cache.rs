//! Analyses by query text, per thread.
//!
//! Each runtime thread keeps its own cache, so sessions never contend for a
//! lock. Bounded two ways: texts over [`MAX_TEXT`] are not kept, and each
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

#[derive(Default)]
struct Generations {
    analyzer: u64,
    current: HashMap<Box<str>, Entry>,
    previous: HashMap<Box<str>, Entry>,
}

thread_local! {
    static CACHE: RefCell<Generations> = RefCell::default();
}

/// `analyzer.analyze(sql)`, from this thread's cache when it can be.
pub fn analyze(analyzer: &Analyzer, sql: &str) -> Entry {
    if sql.len() > MAX_TEXT {
        return analyzer.analyze(sql).into();
    }
    CACHE.with_borrow_mut(|g| {
        if g.analyzer != analyzer.id() {
            *g = Generations {
                analyzer: analyzer.id(),
                ..Generations::default()
            };
        }
        if let Some(hit) = g.current.get(sql) {
            return Arc::clone(hit);
        }
        let entry = match g.previous.remove(sql) {
            Some(hit) => hit,
            None => analyzer.analyze(sql).into(),
        };
        if g.current.len() >= CAPACITY {
            g.previous = std::mem::take(&mut g.current);
        }
        g.current.insert(sql.into(), Arc::clone(&entry));
        entry
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_per_analyzer_and_stays_bounded() {
        let a = Analyzer::default();
        let first = analyze(&a, "select 1");
        assert!(Arc::ptr_eq(&first, &analyze(&a, "select 1")));
        // Another analyzer (another policy) does not see the entry.
        let b = Analyzer::new(&["my_fn".into()]);
        assert!(!Arc::ptr_eq(&first, &analyze(&b, "select 1")));
        for i in 0..3 * CAPACITY {
            analyze(&b, &format!("select {i}"));
        }
        CACHE.with_borrow(|g| {
            assert!(g.current.len() <= CAPACITY && g.previous.len() <= CAPACITY);
        });
        let long = format!("select '{}'", "x".repeat(MAX_TEXT));
        assert!(!Arc::ptr_eq(&analyze(&b, &long), &analyze(&b, &long)));
    }
}
