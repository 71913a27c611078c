//! Property: the relay's output does not depend on how the stream is cut.
//! Any client or upstream byte stream, split at any byte boundaries and
//! handed over piece by piece, yields the same bytes, in both directions,
//! and the same inspector calls, as the stream handed over whole.

use bytes::BytesMut;
use proptest::prelude::*;

use super::ClientFlow;
use super::testing::*;

/// Statements the inspectors judge differently: forwarded, refused (the
/// refusal replaces the message), a syntax error, masked by text, several
/// in one Query.
const STATEMENTS: &[&str] = &[
    "select 1",
    "drop table t",
    "selec x",
    "select secret from t",
    "select 'a;b' as x",
    "select 1; select secret from t",
    "select repeat('x', 300)",
];

/// Hands `stream` over in pieces cut at `cuts` (offsets, any order, any
/// repeats) through `step`, which takes what has arrived so far.
fn in_pieces(stream: &[u8], cuts: &[usize], mut step: impl FnMut(&mut BytesMut)) -> BytesMut {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (stream.len() + 1)).collect();
    at.push(stream.len());
    at.sort_unstable();
    let mut input = BytesMut::new();
    let mut from = 0;
    for to in at {
        input.extend_from_slice(&stream[from..to]);
        from = to;
        step(&mut input);
    }
    input
}

fn client_stream(picks: &[usize]) -> BytesMut {
    let parts: Vec<BytesMut> = picks
        .iter()
        .map(|i| query_msg(STATEMENTS[i % STATEMENTS.len()]))
        .collect();
    cat(&parts)
}

/// The upstream's answer to one simple Query `sql` with `rows` rows.
fn answer_to(sql: &str, rows: usize) -> Vec<BytesMut> {
    let mut parts = Vec::new();
    for statement in sql.split(';') {
        let column = if statement.contains("secret") {
            "secret"
        } else {
            "x"
        };
        parts.push(row_description(&[column]));
        for n in 0..rows {
            parts.push(row(&[&format!("value {n} of {statement}")]));
        }
        parts.push(complete(&format!("SELECT {rows}")));
    }
    parts.push(ready(b'I'));
    parts
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn client_streams_cut_anywhere_relay_the_same(
        picks in prop::collection::vec(0usize..100, 1..12),
        cuts in prop::collection::vec(0usize..4096, 0..24),
    ) {
        let stream = client_stream(&picks);
        let mut whole = relay();
        let mut input = stream.clone();
        let mut expected = BytesMut::new();
        let flow = whole.handle_client(&mut input, &mut expected).unwrap();
        prop_assert_eq!(flow, ClientFlow::Continue);
        prop_assert!(input.is_empty());

        let mut cut = relay();
        let mut got = BytesMut::new();
        let left = in_pieces(&stream, &cuts, |input| {
            let flow = cut.handle_client(input, &mut got).unwrap();
            assert_eq!(flow, ClientFlow::Continue);
        });
        prop_assert!(left.is_empty());
        prop_assert_eq!(&got[..], &expected[..]);
        prop_assert_eq!(&cut.inspector().seen, &whole.inspector().seen);
    }

    #[test]
    fn upstream_streams_cut_anywhere_reach_the_client_the_same(
        picks in prop::collection::vec(0usize..100, 1..6),
        rows in prop::collection::vec(0usize..5, 6),
        cuts in prop::collection::vec(0usize..8192, 0..32),
    ) {
        // Forwarded statements only (each gets its answer): masked by text
        // or by description, several per Query.
        let forwarded: Vec<&str> = picks
            .iter()
            .map(|i| STATEMENTS[i % STATEMENTS.len()])
            .filter(|s| !s.starts_with("drop") && !s.starts_with("selec "))
            .collect();
        prop_assume!(!forwarded.is_empty());
        let queries: Vec<BytesMut> = forwarded.iter().map(|s| query_msg(s)).collect();
        let mut answers = Vec::new();
        for (i, sql) in forwarded.iter().enumerate() {
            answers.extend(answer_to(sql, rows[i % rows.len()]));
        }
        let upstream = cat(&answers);

        let mut whole = masking();
        send(&mut whole, &queries);
        let expected = answer(&mut whole, &answers);

        let mut cut = masking();
        send(&mut cut, &queries);
        let mut got = BytesMut::new();
        let mut to_upstream = BytesMut::new();
        let left = in_pieces(&upstream, &cuts, |input| {
            cut.handle_upstream(input, &mut got, &mut to_upstream).unwrap();
        });
        prop_assert!(left.is_empty());
        prop_assert!(to_upstream.is_empty());
        prop_assert_eq!(&got[..], &expected[..]);
        prop_assert_eq!(&cut.inspector().observed, &whole.inspector().observed);
        // Something was masked whenever a secret's rows came.
        let secret_rows = forwarded
            .iter()
            .enumerate()
            .any(|(i, s)| s.contains("secret") && rows[i % rows.len()] > 0);
        if secret_rows {
            prop_assert!(got.windows(3).any(|w| w == b"***"));
        }
    }
}
