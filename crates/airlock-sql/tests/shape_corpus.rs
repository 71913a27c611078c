//! The shape cache must never let two statements that classify differently
//! share an analysis. Checked over the policy evasion corpus, for the texts
//! the cache would share (those with a shape whose analysis read no literal
//! value): every such text is mutated (numbers and string contents changed),
//! and the mutation must keep its shape and its classification; and any two
//! corpus texts of the same shape must classify the same.

use std::collections::HashMap;

use airlock_sql::Analyzer;
use airlock_sql::shape::shape;
use proptest::prelude::Strategy as _;

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

/// Property: for generated literal substitutions into statement templates,
/// the analysis the cache returns equals a fresh analysis of the same text
/// (spans aside: a shape hit carries the first text's). Texts are fed in a
/// seeded random order, so a text that parses, or classifies, differently
/// from an earlier one of its shape is caught whichever comes first.
#[test]
fn cached_analysis_equals_a_fresh_one() {
    // `{}` is a literal slot.
    const TEMPLATES: &[&str] = &[
        "alter index i alter column {} set statistics {}",
        "alter table t alter column {} set statistics 100",
        "fetch {} from c",
        "move {} in c",
        "select 1::float({})",
        "select {}::float({}) from t",
        "select * from t where id = {} limit {}",
        "update t set v = {} where id = {}",
        "delete from t where id = {}",
        "set jit = {}",
        "set search_path = {}",
        "set extra_float_digits = {}",
        "select set_config({}, {}, false)",
        "explain (analyze {}) delete from t where id = {}",
        "begin isolation level serializable, read only; select {}; commit",
        "create table x (a varchar({}), b numeric({}, {}))",
        "select * from t offset {} rows fetch first {} rows only",
        "copy t from {}",
        "prepare p as select {}; execute p",
        "declare c cursor for select {}; fetch {} from c",
    ];
    const LITERALS: &[&str] = &[
        "0",
        "1",
        "2",
        "5",
        "53",
        "54",
        "5.5",
        "1e3",
        "2147483647",
        "2147483648",
        "99999999999",
        "''",
        "'x'",
        "'off'",
        "'on'",
        "'jit'",
        "'role'",
        "'search_path'",
        "'public'",
        "'pg_catalog'",
        "'public, pg_catalog'",
        "'/etc/passwd'",
        "'a''b'",
    ];
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = |n: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % n as u64) as usize
    };
    let a = Analyzer::default();
    let strip = |statements: &[airlock_policy::Statement]| -> Vec<airlock_policy::Statement> {
        statements.iter().map(unspanned).collect()
    };
    let mut checked = 0;
    let mut shared = 0;
    for _ in 0..4000 {
        let template = TEMPLATES[next(TEMPLATES.len())];
        let mut sql = String::new();
        for (i, part) in template.split("{}").enumerate() {
            if i > 0 {
                sql.push_str(LITERALS[next(LITERALS.len())]);
            }
            sql.push_str(part);
        }
        let cached = airlock_sql::cache::analyze(&a, &sql);
        let fresh = a.analyze(&sql);
        assert_eq!(
            strip(&cached.statements),
            strip(&fresh),
            "the cache answered {sql:?} with another text's analysis"
        );
        checked += 1;
        shared += usize::from(!cached.exact);
    }
    // The property is only tested if the cache did share analyses.
    assert!(
        shared > 100,
        "only {shared} of {checked} texts were shape hits"
    );
}

/// Each run of digits that stands alone (not in a name or a `$1`) becomes
/// the next of `numbers`, and each string's content the next of `strings`.
fn substitute(sql: &str, numbers: &[String], strings: &[String]) -> String {
    let chars: Vec<char> = sql.chars().collect();
    let (mut n, mut s) = (0, 0);
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let word = |c: char| c.is_alphanumeric() || c == '_' || c == '$';
        if c == '\'' {
            // Up to the closing quote ('' is a quote inside).
            let mut j = i + 1;
            while j < chars.len() {
                if chars[j] == '\'' && chars.get(j + 1) == Some(&'\'') {
                    j += 2;
                } else if chars[j] == '\'' {
                    break;
                } else {
                    j += 1;
                }
            }
            out.push('\'');
            out.push_str(&strings[s % strings.len()]);
            s += 1;
            if j < chars.len() {
                out.push('\'');
            }
            i = j + 1;
        } else if c.is_ascii_digit() && (i == 0 || !word(chars[i - 1]) && chars[i - 1] != '.') {
            let mut j = i;
            while j < chars.len() && chars[j].is_ascii_digit() {
                j += 1;
            }
            if j < chars.len() && (word(chars[j]) || chars[j] == '.') {
                out.extend(&chars[i..j]);
            } else {
                out.push_str(&numbers[n % numbers.len()]);
                n += 1;
            }
            i = j;
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The corpus texts the cache may share with another text of their shape.
fn shared_texts() -> &'static [String] {
    static TEXTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    TEXTS.get_or_init(|| {
        let a = Analyzer::default();
        texts()
            .into_iter()
            .filter(|sql| shape(sql).is_some() && !a.analyze_reporting(sql).1)
            .collect()
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 512, ..Default::default() })]

    /// Property: any literals put into any corpus text the cache shares
    /// give, from the cache (primed with the text as written), the analysis
    /// a fresh parse gives.
    #[test]
    fn corpus_texts_with_any_literals_are_analysed_as_a_fresh_parse(
        pick in 0usize..100_000,
        numbers in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::prelude::any::<u64>().prop_map(|n| n.to_string()),
                (0u32..100).prop_map(|n| n.to_string()),
                "[0-9]{1,3}\\.[0-9]{0,3}",
                "[0-9]e[0-9]",
            ],
            1..6,
        ),
        strings in proptest::collection::vec("[a-zA-Z0-9_ ,.;:/=()-]{0,16}", 1..6),
    ) {
        let texts = shared_texts();
        let sql = &texts[pick % texts.len()];
        let variant = substitute(sql, &numbers, &strings);
        let a = analyzer();
        let _ = airlock_sql::cache::analyze(a, sql);
        let cached = airlock_sql::cache::analyze(a, &variant);
        // The case tests sharing when the variant has the text's shape.
        if variant != *sql && shape(&variant) == shape(sql) {
            proptest::prop_assert!(!cached.exact, "{:?} was not a shape hit", variant);
        }
        let fresh = a.analyze(&variant);
        let strip = |statements: &[airlock_policy::Statement]| -> Vec<airlock_policy::Statement> {
            statements.iter().map(unspanned).collect()
        };
        proptest::prop_assert_eq!(
            strip(&cached.statements),
            strip(&fresh),
            "the cache answered {:?} (after {:?}) with another text's analysis",
            variant,
            sql
        );
    }
}

/// One analyzer for the property's cases, so the cache stays warm across
/// them (a new analyzer empties it).
fn analyzer() -> &'static Analyzer {
    static A: std::sync::OnceLock<Analyzer> = std::sync::OnceLock::new();
    A.get_or_init(Analyzer::default)
}

fn unspanned(s: &airlock_policy::Statement) -> airlock_policy::Statement {
    airlock_policy::Statement {
        span: (0, 0),
        inner: s.inner.as_deref().map(|i| Box::new(unspanned(i))),
        ..s.clone()
    }
}
