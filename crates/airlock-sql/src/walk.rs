//! A complete walk of a pg_query parse tree.
//!
//! pg_query's own `nodes()` iterator visits "a subset of nodes", which is
//! fine for statistics and fatal for a security classifier: a function call
//! in a node it skips would go unseen. Every pg_query tree type derives
//! `serde::Serialize`, so this module implements a `Serializer` that
//! collects facts as the tree serializes itself: derive(Serialize) visits
//! every field of every node, so nothing can be skipped, including node
//! types added by future pg_query versions.

use std::fmt;

use airlock_policy::{Relation, StatementKind};
use serde::ser::{self, Serialize};

/// What a subtree contains.
#[derive(Debug, Default)]
pub(crate) struct Facts {
    pub relations: Vec<Relation>,
    /// Function names as written, dot-joined.
    pub functions: Vec<String>,
    /// Every INSERT/UPDATE/DELETE/MERGE node, the top-level one included.
    pub dml: Vec<StatementKind>,
    /// Whether every UPDATE/DELETE node has a WHERE clause; `None` if there
    /// is none.
    pub has_where: Option<bool>,
    /// A SELECT … INTO somewhere.
    pub select_into: bool,
    /// A SELECT … FOR UPDATE/SHARE somewhere.
    pub locking: bool,
    /// Names of CTEs (WITH queries): references to them are not relations.
    pub ctes: Vec<String>,
    /// Whether the tree has a WITH query anywhere (a CTE named like a
    /// table hides that table's name from `relations`).
    pub with: bool,
    /// Whether the tree has a sub-select anywhere (`EXISTS`, `IN`, a
    /// scalar subquery…).
    pub sublinks: bool,
    /// Names that may call a function through attribute notation: `(x).f`
    /// and `t.f` are `f(x)` and `f(t)` when no column `f` exists.
    pub attributes: Vec<String>,
    /// The name parts of every column reference (`t.*` is `["t"]`, `*` is
    /// `[]`), only from [`Facts::collect_columns`].
    pub columns: Vec<Vec<String>>,
    /// Every call of a function named `set_config`: its first two
    /// arguments when they are plain string constants, `None` otherwise.
    pub config_calls: Vec<[Option<String>; 2]>,
}

impl Facts {
    pub fn collect<T: Serialize + ?Sized>(node: &T) -> Facts {
        Facts::collect_with(node, false)
    }

    /// [`Facts::collect`], with the column references too.
    pub fn collect_columns<T: Serialize + ?Sized>(node: &T) -> Facts {
        Facts::collect_with(node, true)
    }

    fn collect_with<T: Serialize + ?Sized>(node: &T, keep_columns: bool) -> Facts {
        let mut w = Walker {
            stack: Vec::new(),
            facts: Facts::default(),
            keep_columns,
        };
        // The walker's own error type is never produced.
        let _ = node.serialize(&mut w);
        let mut facts = w.facts;
        let ctes = std::mem::take(&mut facts.ctes);
        facts.with = !ctes.is_empty();
        facts
            .relations
            .retain(|r| r.schema.is_some() || !ctes.contains(&r.name));
        facts
    }
}

struct Frame {
    name: &'static str,
    field: &'static str,
    parts: Vec<String>,
    has_where: bool,
    /// A MergeWhenClause's UPDATE or DELETE action.
    command: Option<StatementKind>,
    /// A FuncCall's arguments, each a plain string constant or `None`.
    args: Vec<Option<String>>,
}

struct Walker {
    stack: Vec<Frame>,
    facts: Facts,
    keep_columns: bool,
}

impl Walker {
    fn at(&self, name: &str, field: &str) -> bool {
        self.stack
            .last()
            .is_some_and(|f| f.name == name && f.field == field)
    }

    fn on_str(&mut self, v: &str) {
        let Some(top) = self.stack.last_mut() else {
            return;
        };
        match (top.name, top.field) {
            ("RangeVar", "schemaname" | "relname") => top.parts.push(v.to_string()),
            ("CommonTableExpr", "ctename") => self.facts.ctes.push(v.to_string()),
            ("String", "sval") => {
                // A name part of a function call, an indirection or a column
                // reference: String inside Node inside one of those.
                let n = self.stack.len();
                if n >= 3 && self.stack[n - 2].name == "Node" {
                    let owner = &mut self.stack[n - 3];
                    match (owner.name, owner.field) {
                        ("FuncCall", "funcname") | ("ColumnRef", "fields") => {
                            owner.parts.push(v.to_string())
                        }
                        ("AIndirection", "indirection") => {
                            self.facts.attributes.push(v.to_lowercase())
                        }
                        _ => {}
                    }
                }
                // A string constant argument of a function call: String in
                // AConst in Node in FuncCall's args.
                if n >= 4 && self.stack[n - 2].name == "AConst" && self.stack[n - 3].name == "Node"
                {
                    let owner = &mut self.stack[n - 4];
                    if (owner.name, owner.field) == ("FuncCall", "args")
                        && let Some(last) = owner.args.last_mut()
                    {
                        *last = Some(v.to_string());
                    }
                }
            }
            _ => {}
        }
    }

    fn end_struct(&mut self) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        let f = &mut self.facts;
        match frame.name {
            "RangeVar" => {
                let mut parts = frame.parts.into_iter().filter(|p| !p.is_empty());
                let (first, second) = (parts.next(), parts.next());
                let rel = match (first, second) {
                    (Some(schema), Some(name)) => Relation {
                        schema: Some(schema),
                        name,
                    },
                    (Some(name), None) => Relation { schema: None, name },
                    _ => return,
                };
                if !f.relations.contains(&rel) {
                    f.relations.push(rel);
                }
            }
            "FuncCall" => {
                let name = frame.parts.join(".").to_lowercase();
                if name.rsplit('.').next() == Some("set_config") {
                    // Only the built-in's arguments can be trusted.
                    let builtin = name == "set_config" || name == "pg_catalog.set_config";
                    let mut args = frame.args.into_iter().filter(|_| builtin);
                    f.config_calls
                        .push([args.next().flatten(), args.next().flatten()]);
                }
                if !name.is_empty() && !f.functions.contains(&name) {
                    f.functions.push(name);
                }
            }
            "ColumnRef" => {
                if frame.parts.len() >= 2
                    && let Some(last) = frame.parts.last()
                {
                    f.attributes.push(last.to_lowercase());
                }
                if self.keep_columns {
                    f.columns.push(frame.parts);
                }
            }
            "MergeWhenClause" => {
                // A MERGE's join is not a WHERE clause: its UPDATE and
                // DELETE actions count as unbounded.
                if let Some(kind) = frame.command {
                    f.dml.push(kind);
                    f.has_where = Some(false);
                }
            }
            "SubLink" => f.sublinks = true,
            "InsertStmt" => f.dml.push(StatementKind::Insert),
            "MergeStmt" => f.dml.push(StatementKind::Merge),
            "UpdateStmt" | "DeleteStmt" => {
                f.dml.push(if frame.name == "UpdateStmt" {
                    StatementKind::Update
                } else {
                    StatementKind::Delete
                });
                f.has_where = Some(f.has_where.unwrap_or(true) && frame.has_where);
            }
            _ => {}
        }
    }
}

#[derive(Debug)]
pub(crate) struct Never;

impl fmt::Display for Never {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("walk error")
    }
}

impl std::error::Error for Never {}

impl ser::Error for Never {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Never
    }
}

type R = Result<(), Never>;

impl ser::Serializer for &mut Walker {
    type Ok = ();
    type Error = Never;
    type SerializeSeq = Self;
    type SerializeTuple = Self;
    type SerializeTupleStruct = Self;
    type SerializeTupleVariant = Self;
    type SerializeMap = Self;
    type SerializeStruct = Self;
    type SerializeStructVariant = Self;

    fn serialize_bool(self, _: bool) -> R {
        Ok(())
    }
    fn serialize_i8(self, _: i8) -> R {
        Ok(())
    }
    fn serialize_i16(self, _: i16) -> R {
        Ok(())
    }
    fn serialize_i32(self, v: i32) -> R {
        if self.at("MergeWhenClause", "command_type") {
            use pg_query::protobuf::CmdType;
            let kind = match v {
                x if x == CmdType::CmdUpdate as i32 => Some(StatementKind::Update),
                x if x == CmdType::CmdDelete as i32 => Some(StatementKind::Delete),
                _ => None,
            };
            self.stack.last_mut().unwrap().command = kind;
        }
        Ok(())
    }
    fn serialize_i64(self, _: i64) -> R {
        Ok(())
    }
    fn serialize_u8(self, _: u8) -> R {
        Ok(())
    }
    fn serialize_u16(self, _: u16) -> R {
        Ok(())
    }
    fn serialize_u32(self, _: u32) -> R {
        Ok(())
    }
    fn serialize_u64(self, _: u64) -> R {
        Ok(())
    }
    fn serialize_f32(self, _: f32) -> R {
        Ok(())
    }
    fn serialize_f64(self, _: f64) -> R {
        Ok(())
    }
    fn serialize_char(self, _: char) -> R {
        Ok(())
    }
    fn serialize_str(self, v: &str) -> R {
        self.on_str(v);
        Ok(())
    }
    fn serialize_bytes(self, _: &[u8]) -> R {
        Ok(())
    }
    fn serialize_none(self) -> R {
        Ok(())
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> R {
        if self.at("UpdateStmt", "where_clause") || self.at("DeleteStmt", "where_clause") {
            self.stack.last_mut().unwrap().has_where = true;
        } else if self.at("SelectStmt", "into_clause") {
            self.facts.select_into = true;
        }
        value.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Ok(())
    }
    fn serialize_unit_struct(self, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, _: &'static str) -> R {
        Ok(())
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> R {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        value: &T,
    ) -> R {
        value.serialize(self)
    }
    fn serialize_seq(self, len: Option<usize>) -> Result<Self, Never> {
        if self.at("SelectStmt", "locking_clause") && len != Some(0) {
            self.facts.locking = true;
        }
        Ok(self)
    }
    fn serialize_tuple(self, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self, Never> {
        Ok(self)
    }
    fn serialize_struct(self, name: &'static str, _: usize) -> Result<Self, Never> {
        if name == "Node"
            && let Some(top) = self.stack.last_mut()
            && (top.name, top.field) == ("FuncCall", "args")
        {
            top.args.push(None);
        }
        self.stack.push(Frame {
            name,
            field: "",
            parts: Vec::new(),
            has_where: false,
            command: None,
            args: Vec::new(),
        });
        Ok(self)
    }
    fn serialize_struct_variant(
        self,
        name: &'static str,
        _: u32,
        _: &'static str,
        len: usize,
    ) -> Result<Self, Never> {
        self.serialize_struct(name, len)
    }
}

macro_rules! compound {
    ($trait:ident, $method:ident $(, $key:ident)?) => {
        impl ser::$trait for &mut Walker {
            type Ok = ();
            type Error = Never;
            fn $method<T: Serialize + ?Sized>(&mut self, $($key: &'static str,)? value: &T) -> R {
                value.serialize(&mut **self)
            }
            fn end(self) -> R {
                Ok(())
            }
        }
    };
}

compound!(SerializeSeq, serialize_element);
compound!(SerializeTuple, serialize_element);
compound!(SerializeTupleStruct, serialize_field);
compound!(SerializeTupleVariant, serialize_field);

impl ser::SerializeMap for &mut Walker {
    type Ok = ();
    type Error = Never;
    fn serialize_key<T: Serialize + ?Sized>(&mut self, key: &T) -> R {
        key.serialize(&mut **self)
    }
    fn serialize_value<T: Serialize + ?Sized>(&mut self, value: &T) -> R {
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        Ok(())
    }
}

impl ser::SerializeStruct for &mut Walker {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> R {
        if let Some(top) = self.stack.last_mut() {
            top.field = key;
        }
        value.serialize(&mut **self)
    }
    fn end(self) -> R {
        self.end_struct();
        Ok(())
    }
}

impl ser::SerializeStructVariant for &mut Walker {
    type Ok = ();
    type Error = Never;
    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> R {
        ser::SerializeStruct::serialize_field(self, key, value)
    }
    fn end(self) -> R {
        self.end_struct();
        Ok(())
    }
}
