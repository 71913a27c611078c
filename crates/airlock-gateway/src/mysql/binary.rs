//! The binary protocol's values: where each value of a binary row or of
//! COM_STMT_EXECUTE's parameters ends, by column type. Only lengths are
//! read; values are passed on (or masked) as bytes.

use airlock_mywire::codec;

/// Column types whose values are text (strings, JSON, ENUM/SET, BLOBs),
/// length-encoded in the binary protocol.
pub fn is_string(column_type: u8) -> bool {
    matches!(column_type, 0x0F | 0xF5 | 0xF7 | 0xF8 | 0xF9..=0xFE)
}

/// The length in bytes of the binary value of `column_type` at the front
/// of `buf`, length prefix included; `None` when `buf` is too short.
pub fn value_len(column_type: u8, buf: &[u8]) -> Option<usize> {
    let fixed = match column_type {
        0x06 => 0,               // NULL
        0x01 => 1,               // TINY
        0x02 | 0x0D => 2,        // SHORT, YEAR
        0x03 | 0x09 | 0x04 => 4, // LONG, INT24, FLOAT
        0x05 | 0x08 => 8,        // DOUBLE, LONGLONG
        // DATE, DATETIME, TIMESTAMP, TIME (and their *2 forms): a length
        // byte, then that many bytes.
        0x07 | 0x0A | 0x0B | 0x0C | 0x11 | 0x12 | 0x13 => 1 + usize::from(*buf.first()?),
        // Everything else (DECIMAL, strings, BLOBs, BIT, JSON, GEOMETRY):
        // length-encoded.
        _ => {
            let mut b = buf;
            let len = usize::try_from(codec::lenenc_int(&mut b)?).ok()?;
            let prefix = buf.len() - b.len();
            return (b.len() >= len).then_some(prefix + len);
        }
    };
    (buf.len() >= fixed).then_some(fixed)
}

/// One parameter of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Param<'a> {
    /// The value's bytes (a string's without its length); `None` for NULL.
    pub value: Option<&'a [u8]>,
    /// Whether the value is text (else it is recorded as hex).
    pub text: bool,
}

/// Reads COM_STMT_EXECUTE's parameters for a statement of `count`
/// parameters. `types` are the parameter types the client bound last
/// (updated when it sends new ones). `None` when the packet does not hold
/// exactly that many parameters, or binds none before its first types.
pub fn execute_params<'a>(
    payload: &'a [u8],
    count: u16,
    types: &mut Vec<(u8, bool)>,
) -> Option<Vec<Param<'a>>> {
    // command, statement id, flags, iteration count.
    let mut at = 10;
    let count = usize::from(count);
    if count == 0 {
        return (payload.len() == at || payload.len() == at + 1).then(Vec::new);
    }
    let bitmap = payload.get(at..at + count.div_ceil(8))?;
    at += bitmap.len();
    let bound = *payload.get(at)?;
    at += 1;
    if bound == 1 {
        let raw = payload.get(at..at + 2 * count)?;
        *types = raw.chunks(2).map(|t| (t[0], t[1] & 0x80 != 0)).collect();
        at += 2 * count;
    } else if types.len() != count {
        return None;
    }
    let mut out = Vec::with_capacity(count);
    for (i, &(ty, _unsigned)) in types.iter().enumerate() {
        if bitmap[i / 8] & (1 << (i % 8)) != 0 {
            out.push(Param {
                value: None,
                text: true,
            });
            continue;
        }
        let rest = payload.get(at..)?;
        let len = value_len(ty, rest)?;
        let whole = &rest[..len];
        let value = if is_string(ty) || !matches!(ty, 0x01..=0x0D | 0x11..=0x13) {
            let mut b = whole;
            codec::lenenc_int(&mut b)?;
            b
        } else {
            whole
        };
        out.push(Param {
            value: Some(value),
            text: is_string(ty) || matches!(ty, 0x00 | 0xF6),
        });
        at += len;
    }
    (at == payload.len()).then_some(out)
}

/// The values of binary row `row` (NULL bitmap offset 2) for columns of
/// `types` (`(type, character set)`): strings without their length, other
/// values as their bytes. `None` for a malformed row.
pub fn row_values<'a>(row: &'a [u8], types: &[(u8, u16)]) -> Option<Vec<Option<&'a [u8]>>> {
    let bitmap_len = (types.len() + 7 + 2) / 8;
    let bitmap = row.get(1..1 + bitmap_len)?;
    let mut rest = &row[1 + bitmap_len..];
    let mut out = Vec::with_capacity(types.len());
    for (i, &(ty, _)) in types.iter().enumerate() {
        if bitmap[(i + 2) / 8] & (1 << ((i + 2) % 8)) != 0 {
            out.push(None);
            continue;
        }
        let len = value_len(ty, rest)?;
        let (whole, tail) = rest.split_at(len);
        rest = tail;
        let value = if is_string(ty) {
            let mut b = whole;
            codec::lenenc_int(&mut b)?;
            b
        } else {
            whole
        };
        out.push(Some(value));
    }
    rest.is_empty().then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn execute(params: &[(u8, &[u8])], nulls: &[usize], bind: bool) -> Vec<u8> {
        let mut p = vec![0x17, 1, 0, 0, 0, 0, 1, 0, 0, 0];
        let mut bitmap = vec![0u8; params.len().div_ceil(8)];
        for &n in nulls {
            bitmap[n / 8] |= 1 << (n % 8);
        }
        p.extend_from_slice(&bitmap);
        p.push(u8::from(bind));
        if bind {
            for (t, _) in params {
                p.extend_from_slice(&[*t, 0]);
            }
        }
        for (i, (_, v)) in params.iter().enumerate() {
            if !nulls.contains(&i) {
                p.extend_from_slice(v);
            }
        }
        p
    }

    #[test]
    fn parameters_are_read_by_type_and_their_count_checked() {
        let payload = execute(
            &[
                (0x08, &7u64.to_le_bytes()),
                (0xFD, b"\x03abc"),
                (0x0A, b"\x04\xe8\x07\x01\x02"),
                (0x03, &[0; 4]),
            ],
            &[3],
            true,
        );
        let mut types = Vec::new();
        let params = execute_params(&payload, 4, &mut types).unwrap();
        assert_eq!(params[0].value, Some(&7u64.to_le_bytes()[..]));
        assert!(!params[0].text);
        assert_eq!(
            params[1],
            Param {
                value: Some(b"abc"),
                text: true
            }
        );
        assert_eq!(params[2].value.map(<[u8]>::len), Some(5));
        assert_eq!(params[3].value, None);
        assert_eq!(types.len(), 4);
        // Too many and too few parameters for the statement.
        assert!(execute_params(&payload, 3, &mut Vec::new()).is_none());
        assert!(execute_params(&payload, 5, &mut Vec::new()).is_none());
        // A second execution without types uses the last ones.
        let again = execute(
            &[
                (0x08, &9u64.to_le_bytes()),
                (0xFD, b"\x01x"),
                (0x0A, b"\x00"),
                (0x03, &[1; 4]),
            ],
            &[],
            false,
        );
        assert_eq!(
            execute_params(&again, 4, &mut types).unwrap()[1].value,
            Some(&b"x"[..])
        );
        // Without types ever bound it is refused.
        assert!(execute_params(&again, 4, &mut Vec::new()).is_none());
        // A string whose length points past the packet.
        let lying = execute(&[(0xFD, b"\x09ab")], &[], true);
        assert!(execute_params(&lying, 1, &mut Vec::new()).is_none());
    }

    #[test]
    fn value_lengths() {
        assert_eq!(value_len(0x01, b"\x05"), Some(1));
        assert_eq!(value_len(0x05, &[0; 7]), None);
        assert_eq!(value_len(0x0C, b"\x07abcdefg"), Some(8));
        assert_eq!(value_len(0x0C, b"\x00"), Some(1));
        assert_eq!(value_len(0xFD, b"\xfc\x02\x00xy"), Some(5));
        assert_eq!(value_len(0xF6, b"\x041.50"), Some(5));
        assert_eq!(value_len(0xFD, b"\x05ab"), None);
    }
}
