//! The shape cache must never let two statements that classify differently
//! share an analysis. Checked over the policy evasion corpus, for the texts
//! the cache would share (those with a shape whose analysis read no literal
//! value): every such text is mutated (numbers and string contents changed),
//! and the mutation must keep its shape and its classification; and any two
//! corpus texts of the same shape must classify the same.

use std::collections::HashMap;

use airlock_sql::Analyzer;
use airlock_sql::shape::shape;

const CORPUS: &str = include_str!("../../airlock/tests/corpus/policy.txt");

/// The SQL of each case (header lines dropped; repeat markers left as is,
/// which gives them no shape).
fn texts() -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in CORPUS.lines() {
        if line.starts_with("-- case:") {
            out.extend(current.take());
            current = Some(String::new());
        } else if let Some(sql) = current.as_mut() {
            let header = [
                "-- as:",
                "-- expect:",
                "-- scs:",
                "-- pipelined:",
                "-- escapes:",
                "-- gateway:",
                "-- changes:",
                "-- note:",
            ]
            .iter()
            .any(|h| line.starts_with(h));
            if !header {
                sql.push_str(line);
                sql.push('\n');
            }
        }
    }
    out.extend(current);
    out.into_iter().map(|s| s.trim_end().to_string()).collect()
}

/// Numbers get other digits; string contents get other letters.
fn mutate(sql: &str) -> String {
    let mut out = String::new();
    let mut in_string = false;
    for c in sql.chars() {
        out.push(match c {
            '\'' => {
                in_string = !in_string;
                c
            }
            '0'..='8' if !in_string => ((c as u8) + 1) as char,
            'a'..='y' if in_string => ((c as u8) + 1) as char,
            _ => c,
        });
    }
    out
}

/// What the policy decides on: kinds, effects, WHERE facts, per statement.
fn classification(a: &Analyzer, sql: &str) -> Vec<String> {
    a.analyze(sql)
        .iter()
        .map(|s| format!("{} {:?} {} {:?}", s.kind, s.nested, s.effects, s.has_where))
        .collect()
}

#[test]
fn same_shape_same_classification() {
    let a = Analyzer::default();
    let mut by_shape: HashMap<String, (String, Vec<String>)> = HashMap::new();
    let mut shaped = 0;
    for sql in texts() {
        let Some(key) = shape(&sql) else { continue };
        if a.analyze_reporting(&sql).1 {
            continue; // a literal decided: the cache does not share it
        }
        shaped += 1;
        let class = classification(&a, &sql);
        let variant = mutate(&sql);
        if shape(&variant).as_ref() == Some(&key) {
            assert_eq!(
                classification(&a, &variant),
                class,
                "{sql:?} vs {variant:?}"
            );
        }
        if let Some((other, other_class)) = by_shape.get(&key) {
            assert_eq!(other_class, &class, "{sql:?} and {other:?} share a shape");
        }
        by_shape.insert(key, (sql, class));
    }
    assert!(shaped > 50, "only {shaped} corpus texts have a shape");
}
