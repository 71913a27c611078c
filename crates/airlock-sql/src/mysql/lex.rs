//! The MySQL/MariaDB pre-lexer: the server's own reading of a COM_QUERY
//! text, done before sqlparser sees any of it (see the module doc of
//! [`super`] for the rules and why).
//!
//! [`lex`] turns the whole text into [`Token`]s (comments dropped,
//! executable comments opened, strings decoded) and splits it into
//! statements on `;`. [`render`] writes a statement's tokens back as text
//! sqlparser's `MySqlDialect` lexes exactly as the server would: every
//! string literal (in any spelling) becomes a plain placeholder string
//! `'\u{1}N'`, whose decoded value the caller keeps aside.

use super::Mode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A bare word: keyword or identifier, as written.
    Word,
    /// `` `name` `` (or `"name"` under ANSI_QUOTES): the name.
    Quoted,
    /// A string literal of any spelling (`'…'`, `"…"`, `N'…'`, `_cs'…'`,
    /// adjacent strings concatenated), decoded; hex and bit literals
    /// (`X'…'`, `0x…`, `B'…'`, `0b…`) as their text.
    Str,
    /// A decimal number.
    Number,
    /// `?`
    Param,
    /// `@name`, `@'name'`…: the name.
    UserVar,
    /// `@@name`, `@@global.name`…: lower case, as written after `@@`.
    SysVar,
    /// An operator or punctuation, one token per operator (`<=>`, `:=`…).
    Punct,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    pub kind: Kind,
    /// The text (see [`Kind`]).
    pub text: String,
    /// Byte range in the original text (for a literal: the literal with its
    /// prefix, without an introducer).
    pub span: (usize, usize),
    /// Whitespace, a comment or an executable comment's marker came before
    /// it.
    pub space_before: bool,
}

impl Token {
    /// Whether this is the bare word `w` (any case).
    pub fn is(&self, w: &str) -> bool {
        self.kind == Kind::Word && self.text.eq_ignore_ascii_case(w)
    }

    pub fn is_punct(&self, p: &str) -> bool {
        self.kind == Kind::Punct && self.text == p
    }

    /// An identifier: a bare word or a quoted name.
    pub fn ident(&self) -> Option<&str> {
        matches!(self.kind, Kind::Word | Kind::Quoted).then_some(self.text.as_str())
    }
}

/// One statement of the text: its tokens and its byte span (from its first
/// token to the end of its last, comments before it excluded).
#[derive(Debug, Clone)]
pub(crate) struct Piece {
    pub tokens: Vec<Token>,
    pub span: (usize, usize),
}

/// The result of lexing a whole text.
#[derive(Debug)]
pub(crate) struct Lexed {
    pub pieces: Vec<Piece>,
    /// Byte ranges of comments (regular ones; not executable comments,
    /// whose contents are code).
    pub comments: Vec<(usize, usize)>,
    /// Byte ranges of literals.
    pub literals: Vec<(usize, usize)>,
}

/// Why a text cannot be lexed; the whole text is then `unknown`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LexError {
    pub reason: String,
    pub at: usize,
}

fn err<T>(at: usize, reason: impl Into<String>) -> Result<T, LexError> {
    Err(LexError {
        reason: reason.into(),
        at,
    })
}

/// Character sets a `_name` introducer may name (MySQL 8.0 and MariaDB
/// 10.11). A `_word` that is not one of these is an identifier.
const CHARSETS: &[&str] = &[
    "armscii8", "ascii", "big5", "binary", "cp1250", "cp1251", "cp1256", "cp1257", "cp850",
    "cp852", "cp866", "cp932", "dec8", "eucjpms", "euckr", "filename", "gb18030", "gb2312", "gbk",
    "geostd8", "greek", "hebrew", "hp8", "keybcs2", "koi8r", "koi8u", "latin1", "latin2", "latin5",
    "latin7", "macce", "macroman", "sjis", "swe7", "tis620", "ucs2", "ujis", "utf16", "utf16le",
    "utf32", "utf8", "utf8mb3", "utf8mb4",
];

/// Multi-character operators, longest first.
const OPERATORS: &[&str] = &[
    "<=>", "->>", "<=", ">=", "<>", "!=", ":=", "->", "&&", "||", "<<", ">>",
];

fn ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'$' || b >= 0x80
}

/// MySQL's whitespace (`my_isspace` over ASCII).
fn space_byte(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c)
}

struct Lexer<'a> {
    sql: &'a str,
    b: &'a [u8],
    i: usize,
    mode: Mode,
    /// Inside `/*! … */`: where it started.
    exec_comment: Option<usize>,
    space: bool,
    out: Lexed,
    current: Vec<Token>,
}

/// Lexes `sql` as the server would, with `mode`'s quoting rules.
pub(crate) fn lex(sql: &str, mode: Mode) -> Result<Lexed, LexError> {
    let mut lx = Lexer {
        sql,
        b: sql.as_bytes(),
        i: 0,
        mode,
        exec_comment: None,
        space: false,
        out: Lexed {
            pieces: Vec::new(),
            comments: Vec::new(),
            literals: Vec::new(),
        },
        current: Vec::new(),
    };
    lx.run()?;
    Ok(lx.out)
}

impl<'a> Lexer<'a> {
    fn peek(&self, k: usize) -> Option<u8> {
        self.b.get(self.i + k).copied()
    }

    fn push(&mut self, kind: Kind, text: String, span: (usize, usize)) {
        let space_before = std::mem::take(&mut self.space);
        self.current.push(Token {
            kind,
            text,
            span,
            space_before,
        });
    }

    fn end_piece(&mut self) {
        let tokens = std::mem::take(&mut self.current);
        let span = match (tokens.first(), tokens.last()) {
            (Some(f), Some(l)) => (f.span.0, l.span.1),
            _ => (self.i, self.i),
        };
        self.out.pieces.push(Piece { tokens, span });
    }

    fn run(&mut self) -> Result<(), LexError> {
        while self.i < self.b.len() {
            let c = self.b[self.i];
            let start = self.i;
            match c {
                c if space_byte(c) => {
                    self.i += 1;
                    self.space = true;
                }
                b'#' => self.line_comment(),
                b'-' if self.peek(1) == Some(b'-')
                    && self.peek(2).is_none_or(|c| c <= b' ' || c == 0x7f) =>
                {
                    self.line_comment()
                }
                b'/' if self.peek(1) == Some(b'*') => self.block_comment()?,
                b'*' if self.peek(1) == Some(b'/') && self.exec_comment.is_some() => {
                    self.exec_comment = None;
                    self.i += 2;
                    self.space = true;
                }
                b';' => {
                    if let Some(at) = self.exec_comment {
                        // The server would end the statement inside the
                        // comment; what follows is too ambiguous to judge.
                        return err(at, "a `;` inside an executable comment");
                    }
                    self.i += 1;
                    self.end_piece();
                }
                b'\'' => self.string(b'\'', start)?,
                b'"' if !self.mode.ansi_quotes => self.string(b'"', start)?,
                b'"' => {
                    let name = self.quoted(b'"')?;
                    self.push(Kind::Quoted, name, (start, self.i));
                }
                b'`' => {
                    let name = self.quoted(b'`')?;
                    self.push(Kind::Quoted, name, (start, self.i));
                }
                b'?' => {
                    self.i += 1;
                    self.push(Kind::Param, "?".into(), (start, self.i));
                }
                b'@' => self.variable()?,
                b'0'..=b'9' => self.number()?,
                b'.' if self.peek(1).is_some_and(|c| c.is_ascii_digit())
                    && !self.current.last().is_some_and(|t| {
                        !t.space_before
                            && !self.space
                            && matches!(t.kind, Kind::Word | Kind::Quoted)
                    }) =>
                {
                    self.number()?
                }
                b'\\' => {
                    // `\N` is NULL outside strings; nothing else is valid.
                    if self.peek(1) == Some(b'N') && !self.peek(2).is_some_and(ident_byte) {
                        self.i += 2;
                        self.push(Kind::Word, "NULL".into(), (start, self.i));
                    } else {
                        return err(start, "a backslash outside a string");
                    }
                }
                c if ident_byte(c) => self.word()?,
                c if c < 0x20 || c == 0x7f => {
                    return err(start, format!("control character {c:#04x}"));
                }
                _ => {
                    let rest = &self.sql[self.i..];
                    let op = OPERATORS
                        .iter()
                        .find(|op| rest.starts_with(**op))
                        .map_or(&rest[..1], |op| *op);
                    self.i += op.len();
                    self.push(Kind::Punct, op.to_string(), (start, self.i));
                }
            }
        }
        if let Some(at) = self.exec_comment {
            return err(at, "an unterminated executable comment");
        }
        if !self.current.is_empty() || self.out.pieces.is_empty() {
            self.end_piece();
        }
        Ok(())
    }

    /// `#…` or `-- …` up to a newline (a lone `\r` does not end it).
    fn line_comment(&mut self) {
        let start = self.i;
        while self.i < self.b.len() && self.b[self.i] != b'\n' {
            self.i += 1;
        }
        self.out.comments.push((start, self.i));
        self.space = true;
    }

    /// `/* … */` (not nested), or an executable comment: `/*!`, `/*!NNNNN`,
    /// `/*M!`, `/*M!NNNNNN`, whose contents are code whatever the version.
    fn block_comment(&mut self) -> Result<(), LexError> {
        let start = self.i;
        let rest = &self.b[self.i + 2..];
        let exec = match rest {
            [b'!', ..] => Some(1),
            [b'M', b'!', ..] => Some(2),
            _ => None,
        };
        if let Some(skip) = exec {
            if self.exec_comment.is_some() {
                return err(start, "an executable comment inside another");
            }
            self.i += 2 + skip;
            let digits = self.b[self.i..]
                .iter()
                .take_while(|c| c.is_ascii_digit())
                .count();
            match digits {
                0 | 5 | 6 => self.i += digits,
                _ => {
                    return err(
                        start,
                        "an executable comment whose version is not 5 or 6 digits",
                    );
                }
            }
            self.exec_comment = Some(start);
            self.space = true;
            return Ok(());
        }
        if self.exec_comment.is_some() {
            // MySQL and MariaDB disagree on comments inside executable
            // comments.
            return err(start, "a comment inside an executable comment");
        }
        let Some(len) = self.sql[self.i + 2..].find("*/") else {
            return err(start, "an unterminated comment");
        };
        let end = self.i + 2 + len + 2;
        let body = &self.sql[self.i + 2..end - 2];
        if body.starts_with('+') && body.to_ascii_lowercase().contains("set_var") {
            // MySQL 8 runs SET_VAR hints: a setting changed for the
            // statement, which MariaDB would ignore.
            return err(start, "an optimizer hint that sets a variable (SET_VAR)");
        }
        self.out.comments.push((start, end));
        self.i = end;
        self.space = true;
        Ok(())
    }

    /// A string literal opened by `quote` at `self.i`; `start` includes its
    /// prefix (`N`, `_cs`). Adjacent literals are concatenated.
    fn string(&mut self, quote: u8, start: usize) -> Result<(), LexError> {
        let value = self.string_body(quote)?;
        self.out.literals.push((start, self.i));
        // `'a' 'b'` is one literal `'ab'`.
        if let Some(prev) = self.current.last_mut()
            && prev.kind == Kind::Str
            && prev.text.starts_with('\'')
        {
            prev.text.push_str(&value);
            prev.span.1 = self.i;
            self.space = false;
            return Ok(());
        }
        self.push(Kind::Str, format!("'{value}"), (start, self.i));
        Ok(())
    }

    /// The decoded body of a quoted string at `self.i`, which is left after
    /// the closing quote.
    fn string_body(&mut self, quote: u8) -> Result<String, LexError> {
        let start = self.i;
        self.i += 1;
        let mut value = Vec::new();
        loop {
            let Some(&c) = self.b.get(self.i) else {
                return err(start, "an unterminated string");
            };
            if c == quote {
                if self.peek(1) == Some(quote) {
                    value.push(quote);
                    self.i += 2;
                    continue;
                }
                self.i += 1;
                break;
            }
            if c == b'\\' && !self.mode.no_backslash_escapes {
                let Some(&n) = self.b.get(self.i + 1) else {
                    return err(start, "an unterminated string");
                };
                let decoded: &[u8] = match n {
                    b'0' => b"\0",
                    b'b' => b"\x08",
                    b'n' => b"\n",
                    b'r' => b"\r",
                    b't' => b"\t",
                    b'Z' => b"\x1a",
                    // `\%` and `\_` keep their backslash (for LIKE).
                    b'%' => b"\\%",
                    b'_' => b"\\_",
                    _ => std::slice::from_ref(&self.b[self.i + 1]),
                };
                if n >= 0x80 {
                    // A backslash before a multibyte character: keep the
                    // whole character.
                    let len = self.sql[self.i + 1..]
                        .chars()
                        .next()
                        .map_or(1, char::len_utf8);
                    value.extend_from_slice(&self.b[self.i + 1..self.i + 1 + len]);
                    self.i += 1 + len;
                    continue;
                }
                value.extend_from_slice(decoded);
                self.i += 2;
                continue;
            }
            value.push(c);
            self.i += 1;
        }
        // The text is UTF-8 and every split point is at an ASCII byte.
        String::from_utf8(value).or_else(|_| err(start, "a string that is not UTF-8"))
    }

    /// A quoted identifier (`` ` `` or `"`), doubled quotes inside.
    fn quoted(&mut self, quote: u8) -> Result<String, LexError> {
        let start = self.i;
        self.i += 1;
        let mut name = String::new();
        loop {
            let rest = &self.sql[self.i..];
            let Some(pos) = rest.find(quote as char) else {
                return err(start, "an unterminated quoted identifier");
            };
            name.push_str(&rest[..pos]);
            self.i += pos + 1;
            if self.peek(0) == Some(quote) {
                name.push(quote as char);
                self.i += 1;
            } else {
                break;
            }
        }
        if name.is_empty() {
            return err(start, "an empty quoted identifier");
        }
        Ok(name)
    }

    /// `@name`, `@'name'`, `` @`name` ``, `@"name"`, `@@name`, `@@scope.name`.
    fn variable(&mut self) -> Result<(), LexError> {
        let start = self.i;
        if self.peek(1) == Some(b'@') {
            self.i += 2;
            let from = self.i;
            while self.i < self.b.len() && (ident_byte(self.b[self.i]) || self.b[self.i] == b'.') {
                self.i += 1;
            }
            if from == self.i {
                return err(start, "`@@` without a name");
            }
            let name = self.sql[from..self.i].to_ascii_lowercase();
            self.push(Kind::SysVar, name, (start, self.i));
            return Ok(());
        }
        self.i += 1;
        let name = match self.peek(0) {
            Some(q @ (b'\'' | b'"')) => self.string_body(q)?,
            Some(b'`') => self.quoted(b'`')?,
            _ => {
                let from = self.i;
                while self.i < self.b.len()
                    && (ident_byte(self.b[self.i]) || self.b[self.i] == b'.')
                {
                    self.i += 1;
                }
                self.sql[from..self.i].to_string()
            }
        };
        if name.is_empty() {
            return err(start, "`@` without a name");
        }
        self.push(Kind::UserVar, name, (start, self.i));
        Ok(())
    }

    /// A number, or a hex/bit literal `0x…`/`0b…`. A number run into
    /// identifier characters (`1e`, `1abc`, `0x1g`: identifiers to MySQL)
    /// is refused.
    fn number(&mut self) -> Result<(), LexError> {
        let start = self.i;
        let b = self.b;
        if b[self.i] == b'0' && matches!(self.peek(1), Some(b'x' | b'b')) {
            let hex = self.peek(1) == Some(b'x');
            let mut j = self.i + 2;
            while j < b.len()
                && (if hex {
                    b[j].is_ascii_hexdigit()
                } else {
                    matches!(b[j], b'0' | b'1')
                })
            {
                j += 1;
            }
            if j > self.i + 2 && !b.get(j).copied().is_some_and(ident_byte) {
                self.i = j;
                self.out.literals.push((start, j));
                let text = self.sql[start..j].to_string();
                self.push(Kind::Str, text, (start, j));
                return Ok(());
            }
            return err(start, "an identifier that starts with a digit");
        }
        let mut j = self.i;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        if b.get(j) == Some(&b'.') {
            j += 1;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
        }
        if matches!(b.get(j), Some(b'e' | b'E')) {
            let mut k = j + 1;
            if matches!(b.get(k), Some(b'+' | b'-')) {
                k += 1;
            }
            if b.get(k).is_some_and(u8::is_ascii_digit) {
                while k < b.len() && b[k].is_ascii_digit() {
                    k += 1;
                }
                j = k;
            }
        }
        if b.get(j).copied().is_some_and(ident_byte) {
            return err(start, "an identifier that starts with a digit");
        }
        self.i = j;
        self.out.literals.push((start, j));
        let text = self.sql[start..j].to_string();
        self.push(Kind::Number, text, (start, j));
        Ok(())
    }

    /// A word; or a prefixed literal: `N'…'`, `X'…'`, `B'…'`, `_cs'…'`.
    fn word(&mut self) -> Result<(), LexError> {
        let start = self.i;
        while self.i < self.b.len() && ident_byte(self.b[self.i]) {
            self.i += 1;
        }
        let word = &self.sql[start..self.i];
        let lower = word.to_ascii_lowercase();
        if self.peek(0) == Some(b'\'') {
            match lower.as_str() {
                "n" => return self.string(b'\'', start),
                "x" | "b" => {
                    // Digits up to the next quote: no escapes, no doubled
                    // quotes (`X'41''b'` is a literal and a string).
                    let Some(len) = self.sql[self.i + 1..].find('\'') else {
                        return err(start, "an unterminated hex or bit literal");
                    };
                    let body = self.sql[self.i + 1..self.i + 1 + len].to_string();
                    self.i += len + 2;
                    let ok = body.chars().all(|c| {
                        if lower == "x" {
                            c.is_ascii_hexdigit()
                        } else {
                            c == '0' || c == '1'
                        }
                    });
                    if !ok {
                        return err(start, "a malformed hex or bit literal");
                    }
                    self.out.literals.push((start, self.i));
                    let text = self.sql[start..self.i].to_string();
                    self.push(Kind::Str, text, (start, self.i));
                    return Ok(());
                }
                _ => {}
            }
        }
        if let Some(cs) = lower.strip_prefix('_')
            && CHARSETS.contains(&cs)
        {
            // An introducer: the literal after it (maybe after spaces).
            let mut j = self.i;
            while j < self.b.len() && space_byte(self.b[j]) {
                j += 1;
            }
            let next = self.b.get(j).copied();
            let next2 = self.b.get(j + 1).copied();
            let literal = match (next, next2) {
                (Some(b'\''), _) => true,
                (Some(b'"'), _) => !self.mode.ansi_quotes,
                (Some(b'x' | b'X' | b'b' | b'B' | b'n' | b'N'), Some(b'\'')) => true,
                (Some(b'0'), Some(b'x' | b'b')) => true,
                _ => false,
            };
            if literal {
                self.i = j;
                let before = self.current.len();
                let space = self.space;
                match self.b[j] {
                    q @ (b'\'' | b'"') => self.string(q, j)?,
                    b'0' => self.number()?,
                    _ => self.word()?,
                }
                // An introducer starts a new literal: never concatenated
                // with one before it.
                if self.current.len() == before {
                    return err(start, "an introducer after a string literal");
                }
                self.current.last_mut().expect("pushed").space_before = space;
                return Ok(());
            }
        }
        self.push(Kind::Word, word.to_string(), (start, self.i));
        Ok(())
    }
}

/// The statement's tokens as text sqlparser's `MySqlDialect` lexes as the
/// server does: string literals become `'\u{1}N'` (N indexes `strings`, the
/// decoded values), quoted names are backquoted, words that are not plain
/// ASCII are backquoted, and tokens keep their separation.
pub(crate) fn render(tokens: &[Token], strings: &mut Vec<String>) -> String {
    let mut out = String::new();
    for (n, t) in tokens.iter().enumerate() {
        // A placeholder always stands apart: `X'41''b'` is two literals
        // to the server, and `'s0x''s1x'` would be one to sqlparser.
        let apart = t.kind == Kind::Str || tokens[n.saturating_sub(1)].kind == Kind::Str;
        if n > 0 && (t.space_before || apart) {
            out.push(' ');
        }
        match t.kind {
            Kind::Str => {
                // A placeholder is a plain string made of letters and
                // digits only.
                out.push_str(&format!("'s{}x'", strings.len()));
                strings.push(t.text.clone());
            }
            Kind::Quoted => backquote(&mut out, &t.text),
            Kind::Word
                if !t
                    .text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'$') =>
            {
                backquote(&mut out, &t.text)
            }
            Kind::UserVar => {
                // Its name decides nothing sqlparser reads.
                out.push('@');
                if t.text
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
                {
                    out.push_str(&t.text);
                } else {
                    out.push_str(&format!("uv{n}"));
                }
            }
            Kind::SysVar => {
                out.push_str("@@");
                out.push_str(&t.text);
            }
            _ => out.push_str(&t.text),
        }
    }
    out
}

fn backquote(out: &mut String, name: &str) {
    out.push('`');
    out.push_str(&name.replace('`', "``"));
    out.push('`');
}
