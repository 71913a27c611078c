//! What each packet of the upstream's answer to a command is.
//!
//! MySQL's command phase is half duplex: the client sends one command and
//! the server answers it completely before the next. [`Response`] is told
//! what the command was and classifies the answer's packets one by one
//! ([`Part`]), so that the door can pass rows through byte for byte, mask
//! the ones that need it, and know when the answer is complete, with or
//! without `CLIENT_DEPRECATE_EOF`, across multi-statement results and
//! cursors.

use crate::codec::{self, OkInfo, status};

/// What the command expects back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// COM_QUERY (text rows) or COM_STMT_EXECUTE (binary rows): result sets
    /// or OK, as many as `MORE_RESULTS_EXISTS` says.
    Results { binary: bool },
    /// COM_STMT_PREPARE.
    Prepare,
    /// COM_STMT_FETCH: binary rows and a terminator.
    Fetch,
    /// OK (or the old EOF) or ERR: COM_PING, COM_INIT_DB, COM_STMT_RESET,
    /// COM_RESET_CONNECTION, COM_SET_OPTION.
    Status,
}

/// One packet of the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// A statement without a result set ended (OK).
    Ok(OkInfo),
    /// An error; the answer ends here.
    Err,
    /// A result set starts with this many columns.
    ColumnCount(u64),
    /// Column definition `index` of the result set.
    Column(usize),
    /// The EOF after the column definitions (without DEPRECATE_EOF).
    ColumnsEnd,
    /// A row.
    Row,
    /// The result set ended (EOF or OK terminator).
    ResultEnd(OkInfo),
    /// COM_STMT_PREPARE succeeded.
    Prepared {
        statement: u32,
        columns: u16,
        params: u16,
    },
    /// A parameter definition of a prepared statement.
    Param(usize),
    /// The EOF after parameter or column definitions of a prepare.
    DefinitionsEnd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    First {
        binary: bool,
    },
    Columns {
        binary: bool,
        left: u64,
        index: usize,
    },
    ColumnsEof {
        binary: bool,
    },
    Rows {
        binary: bool,
    },
    PrepareFirst,
    Params {
        left: u16,
        index: usize,
        columns: u16,
    },
    ParamsEof {
        columns: u16,
    },
    PrepareColumns {
        left: u16,
        index: usize,
    },
    PrepareColumnsEof,
    Fetch,
    Status,
}

/// A malformed or unexpected answer packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("unexpected packet in the answer: {0}")]
pub struct Unexpected(pub &'static str);

/// The answer to one command, packet by packet.
#[derive(Debug, Clone)]
pub struct Response {
    deprecate_eof: bool,
    state: State,
}

impl Response {
    pub fn new(deprecate_eof: bool) -> Response {
        Response {
            deprecate_eof,
            state: State::Idle,
        }
    }

    /// A command went upstream that expects `expect`.
    pub fn expect(&mut self, expect: Expect) {
        self.state = match expect {
            Expect::Results { binary } => State::First { binary },
            Expect::Prepare => State::PrepareFirst,
            Expect::Fetch => State::Fetch,
            Expect::Status => State::Status,
        };
    }

    /// Whether the answer is complete (nothing more is owed).
    pub fn done(&self) -> bool {
        self.state == State::Idle
    }

    /// Classifies the next packet of the answer.
    pub fn next(&mut self, payload: &[u8]) -> Result<Part, Unexpected> {
        let first = *payload.first().ok_or(Unexpected("an empty packet"))?;
        if first == 0xFF {
            self.state = State::Idle;
            return Ok(Part::Err);
        }
        let eof = codec::is_eof(payload);
        match self.state {
            State::Idle => Err(Unexpected("a packet no command asked for")),
            State::First { binary } => {
                if first == 0x00 {
                    let info = codec::ok_info(payload).ok_or(Unexpected("a malformed OK"))?;
                    self.after_end(info, binary);
                    return Ok(Part::Ok(info));
                }
                if first == 0xFB {
                    // LOCAL INFILE request: never negotiated.
                    return Err(Unexpected("a LOCAL INFILE request"));
                }
                let mut b = payload;
                let n = codec::lenenc_int(&mut b).ok_or(Unexpected("a malformed column count"))?;
                if n == 0 || !b.is_empty() {
                    return Err(Unexpected("a malformed column count"));
                }
                self.state = State::Columns {
                    binary,
                    left: n,
                    index: 0,
                };
                Ok(Part::ColumnCount(n))
            }
            State::Columns {
                binary,
                left,
                index,
            } => {
                self.state = if left > 1 {
                    State::Columns {
                        binary,
                        left: left - 1,
                        index: index + 1,
                    }
                } else if self.deprecate_eof {
                    State::Rows { binary }
                } else {
                    State::ColumnsEof { binary }
                };
                Ok(Part::Column(index))
            }
            State::ColumnsEof { binary } => {
                if !eof {
                    return Err(Unexpected("no EOF after the column definitions"));
                }
                let info = codec::eof_info(payload).ok_or(Unexpected("a malformed EOF"))?;
                if info.status & status::CURSOR_EXISTS != 0 {
                    // A cursor was opened: rows come with COM_STMT_FETCH.
                    self.state = State::Idle;
                    return Ok(Part::ResultEnd(info));
                }
                self.state = State::Rows { binary };
                Ok(Part::ColumnsEnd)
            }
            State::Rows { binary } => {
                if eof {
                    let info = self.terminator(payload)?;
                    self.after_end(info, binary);
                    return Ok(Part::ResultEnd(info));
                }
                if binary && first != 0x00 {
                    return Err(Unexpected("a binary row without its header"));
                }
                Ok(Part::Row)
            }
            State::PrepareFirst => {
                if first != 0x00 || payload.len() < 12 {
                    return Err(Unexpected("a malformed COM_STMT_PREPARE answer"));
                }
                let statement = u32::from_le_bytes(payload[1..5].try_into().expect("4 bytes"));
                let columns = u16::from_le_bytes([payload[5], payload[6]]);
                let params = u16::from_le_bytes([payload[7], payload[8]]);
                self.state = if params > 0 {
                    State::Params {
                        left: params,
                        index: 0,
                        columns,
                    }
                } else {
                    self.prepare_columns(columns)
                };
                Ok(Part::Prepared {
                    statement,
                    columns,
                    params,
                })
            }
            State::Params {
                left,
                index,
                columns,
            } => {
                self.state = if left > 1 {
                    State::Params {
                        left: left - 1,
                        index: index + 1,
                        columns,
                    }
                } else if self.deprecate_eof {
                    self.prepare_columns(columns)
                } else {
                    State::ParamsEof { columns }
                };
                Ok(Part::Param(index))
            }
            State::ParamsEof { columns } => {
                if !eof {
                    return Err(Unexpected("no EOF after the parameter definitions"));
                }
                self.state = self.prepare_columns(columns);
                Ok(Part::DefinitionsEnd)
            }
            State::PrepareColumns { left, index } => {
                self.state = if left > 1 {
                    State::PrepareColumns {
                        left: left - 1,
                        index: index + 1,
                    }
                } else if self.deprecate_eof {
                    State::Idle
                } else {
                    State::PrepareColumnsEof
                };
                Ok(Part::Column(index))
            }
            State::PrepareColumnsEof => {
                if !eof {
                    return Err(Unexpected("no EOF after the column definitions"));
                }
                self.state = State::Idle;
                Ok(Part::DefinitionsEnd)
            }
            State::Fetch => {
                if eof {
                    let info = self.terminator(payload)?;
                    self.state = State::Idle;
                    return Ok(Part::ResultEnd(info));
                }
                if first != 0x00 {
                    return Err(Unexpected("a binary row without its header"));
                }
                Ok(Part::Row)
            }
            State::Status => {
                let info = if eof {
                    codec::eof_info(payload)
                } else if first == 0x00 {
                    codec::ok_info(payload)
                } else {
                    None
                };
                let info = info.ok_or(Unexpected("neither OK nor ERR"))?;
                self.state = State::Idle;
                Ok(Part::Ok(info))
            }
        }
    }

    fn prepare_columns(&self, columns: u16) -> State {
        if columns > 0 {
            State::PrepareColumns {
                left: columns,
                index: 0,
            }
        } else {
            State::Idle
        }
    }

    fn terminator(&self, payload: &[u8]) -> Result<OkInfo, Unexpected> {
        let info = if self.deprecate_eof {
            codec::ok_info(payload)
        } else {
            codec::eof_info(payload)
        };
        info.ok_or(Unexpected("a malformed terminator"))
    }

    fn after_end(&mut self, info: OkInfo, binary: bool) {
        self.state = if info.status & status::MORE_RESULTS_EXISTS != 0 {
            State::First { binary }
        } else {
            State::Idle
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EOF: &[u8] = b"\xfe\x00\x00\x02\x00";
    const EOF_MORE: &[u8] = b"\xfe\x00\x00\x0a\x00";
    const OK_END: &[u8] = b"\xfe\x00\x00\x02\x00\x00\x00";
    const OK_MORE: &[u8] = b"\x00\x01\x00\x0a\x00\x00\x00";

    fn run(deprecate: bool, expect: Expect, packets: &[&[u8]]) -> Vec<Part> {
        let mut r = Response::new(deprecate);
        r.expect(expect);
        let parts = packets.iter().map(|p| r.next(p).unwrap()).collect();
        assert!(r.done(), "complete after {packets:?}");
        parts
    }

    #[test]
    fn a_text_result_with_and_without_deprecate_eof() {
        let parts = run(
            false,
            Expect::Results { binary: false },
            &[
                b"\x02",
                b"col a",
                b"col b",
                EOF,
                b"\x01x\x01y",
                b"\xfb\x00",
                EOF,
            ],
        );
        assert_eq!(
            parts,
            [
                Part::ColumnCount(2),
                Part::Column(0),
                Part::Column(1),
                Part::ColumnsEnd,
                Part::Row,
                Part::Row,
                Part::ResultEnd(OkInfo {
                    status: 2,
                    ..Default::default()
                })
            ]
        );
        let parts = run(
            true,
            Expect::Results { binary: false },
            &[b"\x01", b"col", b"\x01x", OK_END],
        );
        assert_eq!(parts.len(), 4);
        assert!(matches!(parts[3], Part::ResultEnd(_)));
    }

    #[test]
    fn a_row_starting_with_0xfe_is_a_row() {
        // A 9+ byte row whose first value's length is 8-byte encoded.
        let mut row = vec![0xFE];
        row.extend_from_slice(&3u64.to_le_bytes());
        row.extend_from_slice(b"abc");
        let parts = run(
            true,
            Expect::Results { binary: false },
            &[b"\x01", b"col", &row, OK_END],
        );
        assert_eq!(parts[2], Part::Row);
    }

    #[test]
    fn multi_statement_results_continue_while_more_results_exist() {
        let parts = run(
            false,
            Expect::Results { binary: false },
            &[
                OK_MORE,
                b"\x01",
                b"c",
                EOF,
                b"\x011",
                EOF_MORE,
                b"\x00\x00\x00\x02\x00\x00\x00",
            ],
        );
        assert!(matches!(parts[0], Part::Ok(_)));
        assert!(matches!(parts[6], Part::Ok(_)));
        // An error ends the answer, whatever was announced.
        let mut r = Response::new(false);
        r.expect(Expect::Results { binary: false });
        r.next(OK_MORE).unwrap();
        assert_eq!(r.next(b"\xff\x28\x04#42000boom").unwrap(), Part::Err);
        assert!(r.done());
    }

    #[test]
    fn prepare_answers_and_cursors() {
        let prepared = b"\x00\x05\x00\x00\x00\x02\x00\x01\x00\x00\x00\x00";
        let parts = run(
            false,
            Expect::Prepare,
            &[prepared, b"param", EOF, b"c1", b"c2", EOF],
        );
        assert_eq!(
            parts,
            [
                Part::Prepared {
                    statement: 5,
                    columns: 2,
                    params: 1
                },
                Part::Param(0),
                Part::DefinitionsEnd,
                Part::Column(0),
                Part::Column(1),
                Part::DefinitionsEnd
            ]
        );
        let parts = run(true, Expect::Prepare, &[prepared, b"param", b"c1", b"c2"]);
        assert_eq!(parts.len(), 4);
        // A cursor: definitions and an EOF saying so, rows by FETCH.
        let parts = run(
            false,
            Expect::Results { binary: true },
            &[b"\x01", b"c", b"\xfe\x00\x00\x42\x00"],
        );
        assert!(matches!(parts[2], Part::ResultEnd(_)));
        let parts = run(
            false,
            Expect::Fetch,
            &[b"\x00\x00\x01x", b"\xfe\x00\x00\xc2\x00"],
        );
        assert_eq!(parts[0], Part::Row);
    }

    #[test]
    fn unexpected_packets_are_errors() {
        let mut r = Response::new(false);
        assert!(r.next(b"\x00").is_err(), "nothing was asked");
        r.expect(Expect::Results { binary: false });
        assert!(r.next(b"\xfb").is_err(), "LOCAL INFILE");
        let mut r = Response::new(false);
        r.expect(Expect::Results { binary: true });
        r.next(b"\x01").unwrap();
        r.next(b"c").unwrap();
        assert!(r.next(b"\x01x").is_err(), "no EOF after the definitions");
        let mut r = Response::new(true);
        r.expect(Expect::Results { binary: true });
        r.next(b"\x01").unwrap();
        r.next(b"c").unwrap();
        assert!(r.next(b"\x01x").is_err(), "a binary row without its header");
    }
}
