//! A restricted pickle interpreter for the `data.pkl` of a `torch.save`
//! archive: it builds data (numbers, strings, tuples, lists, dicts, tensor
//! views of storages) and never runs code.
//!
//! A pickle is a program for a stack machine, and Python's unpickler runs
//! whatever callable it names (`GLOBAL` then `REDUCE`). Here only the
//! opcodes a tensor `state_dict` and a training-checkpoint wrapper need are
//! understood, and a `GLOBAL` is accepted only from an allowlist:
//! `collections.OrderedDict` (called with `()`: an empty dict),
//! `torch._utils._rebuild_tensor_v2` and `_rebuild_parameter` (a tensor
//! view, checked against its storage), the storage classes
//! `torch.{Double,Float,Half,BFloat16,Long,Int,Short,Char,Byte,Bool}Storage`
//! (meaningful only inside a persistent id) and the `torch.float32`-style
//! dtypes (inert values). Anything else is an error naming the opcode or
//! the `module.name` and its byte offset.
//!
//! Every length a pickle declares is checked against the bytes that remain
//! before anything of that length exists, and nesting is bounded; all
//! containers live in one flat arena, so no structure is dropped or walked
//! recursively.

use std::collections::HashMap;
use std::rc::Rc;

use crate::error::FileError;

/// The deepest nesting of tuples, lists and dicts accepted (a checkpoint's
/// optimizer state is about five levels deep).
const MAX_DEPTH: u32 = 100;

/// The most dimensions a tensor may have (PyTorch's own limit).
const MAX_DIMS: usize = 64;

/// What to do instead of saving a whole object.
const ADVICE: &str = "save the weights alone with `torch.save(model.state_dict(), path)`";

/// A value on the machine's stack or in a container.
#[derive(Clone, Debug)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer beyond `i64` (its value is never needed).
    BigInt,
    Float(f64),
    Str(Rc<str>),
    /// A bytes object (its content is never needed).
    Bytes,
    /// Containers, by index into [`Unpickled::nodes`].
    Tuple(usize),
    List(usize),
    Dict(usize),
    Global(Global),
    /// A storage, by index into [`Unpickled::storages`].
    Storage(usize),
    /// A tensor view, by index into [`Unpickled::tensors`].
    Tensor(usize),
}

impl Value {
    /// What the value is, in words ("a tensor", "a list", …).
    pub(crate) fn describe(&self) -> String {
        match self {
            Value::None => "None".into(),
            Value::Bool(b) => format!("the bool {}", if *b { "True" } else { "False" }),
            Value::Int(i) => format!("the int {i}"),
            Value::BigInt => "a large int".into(),
            Value::Float(x) => format!("the float {x}"),
            Value::Str(s) => format!(
                "the string {:?}",
                crate::error::clipped(s, crate::error::CLIPPED)
            ),
            Value::Bytes => "a bytes object".into(),
            Value::Tuple(_) => "a tuple".into(),
            Value::List(_) => "a list".into(),
            Value::Dict(_) => "a dict".into(),
            Value::Global(g) => format!("the global {}", g.name()),
            Value::Storage(_) => "a storage".into(),
            Value::Tensor(_) => "a tensor".into(),
        }
    }

    /// A dict key as text: the string itself, or its description.
    pub(crate) fn key_text(&self) -> String {
        match self {
            Value::Str(s) => s.to_string(),
            Value::Int(i) => i.to_string(),
            other => other.describe(),
        }
    }
}

/// A storage class `torch.{class}`: its element size in bytes, and the
/// safetensors name of its element type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StorageKind {
    pub(crate) class: &'static str,
    pub(crate) size: usize,
    pub(crate) dtype: &'static str,
}

const fn kind(class: &'static str, size: usize, dtype: &'static str) -> StorageKind {
    StorageKind { class, size, dtype }
}

/// The storage classes read: floating point as weights, the others as
/// tensors that are not weights.
const STORAGES: [StorageKind; 10] = [
    kind("DoubleStorage", 8, "F64"),
    kind("FloatStorage", 4, "F32"),
    kind("HalfStorage", 2, "F16"),
    kind("BFloat16Storage", 2, "BF16"),
    kind("LongStorage", 8, "I64"),
    kind("IntStorage", 4, "I32"),
    kind("ShortStorage", 2, "I16"),
    kind("CharStorage", 1, "I8"),
    kind("ByteStorage", 1, "U8"),
    kind("BoolStorage", 1, "BOOL"),
];

/// The dtype objects newer code may pickle (`torch.float32`, …), read as
/// inert values.
const DTYPES: [&str; 13] = [
    "float64", "float32", "float16", "bfloat16", "int64", "int32", "int16", "int8", "uint8",
    "bool", "double", "float", "half",
];

/// A global from the allowlist.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    Storage(StorageKind),
    Dtype(&'static str),
}

impl Global {
    fn name(self) -> String {
        match self {
            Global::OrderedDict => "collections.OrderedDict".into(),
            Global::RebuildTensorV2 => "torch._utils._rebuild_tensor_v2".into(),
            Global::RebuildParameter => "torch._utils._rebuild_parameter".into(),
            Global::Storage(kind) => format!("torch.{}", kind.class),
            Global::Dtype(name) => format!("torch.{name}"),
        }
    }

    /// The allowed global `module.name`, or why it is refused.
    fn resolve(module: &str, name: &str, offset: usize) -> Result<Global, FileError> {
        let found = match (module, name) {
            ("collections", "OrderedDict") => Some(Global::OrderedDict),
            ("torch._utils", "_rebuild_tensor_v2") => Some(Global::RebuildTensorV2),
            ("torch._utils", "_rebuild_parameter") => Some(Global::RebuildParameter),
            ("torch", name) => STORAGES
                .into_iter()
                .find(|k| k.class == name)
                .map(Global::Storage)
                .or_else(|| DTYPES.into_iter().find(|d| *d == name).map(Global::Dtype)),
            _ => None,
        };
        found.ok_or_else(|| {
            let what = if module == "torch" && name.ends_with("Storage") {
                format!(
                    "the storage type torch.{name} is not read (only Double, Float, Half and \
                     BFloat16 weights, and integer or bool tensors as non-weights)"
                )
            } else {
                format!(
                    "the global {module}.{name} is not allowed: only tensors, their storages, \
                     OrderedDict and plain data are read, and no code in the file is run \
                     (a whole model or other Python objects were saved); {ADVICE}"
                )
            };
            error(offset, what)
        })
    }
}

/// A storage that a persistent id names: `('storage', class, key, location,
/// numel)`.
#[derive(Clone, Debug)]
pub(crate) struct Storage {
    /// The archive entry `data/{key}` holding its bytes.
    pub(crate) key: String,
    pub(crate) kind: StorageKind,
    /// Its element count, as the pickle declares it (checked against the
    /// entry's length by the caller).
    pub(crate) numel: usize,
}

/// A tensor: a strided view of a storage, checked to lie inside the
/// storage's declared elements.
#[derive(Clone, Debug)]
pub(crate) struct View {
    pub(crate) storage: usize,
    pub(crate) offset: usize,
    pub(crate) shape: Vec<usize>,
    /// Element strides; 0 for dimensions of size 1 (they never move).
    pub(crate) stride: Vec<usize>,
    pub(crate) numel: usize,
}

/// A container.
#[derive(Debug)]
pub(crate) enum Node {
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
}

/// The result of running a pickle: its value and everything it refers to.
#[derive(Debug)]
pub(crate) struct Unpickled {
    pub(crate) root: Value,
    pub(crate) nodes: Vec<Node>,
    pub(crate) storages: Vec<Storage>,
    pub(crate) tensors: Vec<View>,
}

impl Unpickled {
    /// The entries of the dict `id` (empty if `id` is not a dict).
    pub(crate) fn dict(&self, id: usize) -> &[(Value, Value)] {
        match self.nodes.get(id) {
            Some(Node::Dict(entries)) => entries,
            _ => &[],
        }
    }
}

fn error(offset: usize, reason: impl Into<String>) -> FileError {
    FileError::Pickle {
        offset: u64::try_from(offset).unwrap_or(u64::MAX),
        reason: reason.into(),
    }
}

/// Runs the pickle `data`, building only data; see the module docs.
pub(crate) fn load(data: &[u8]) -> Result<Unpickled, FileError> {
    let mut m = Machine {
        data,
        pos: 0,
        op_at: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
        out: Unpickled {
            root: Value::None,
            nodes: Vec::new(),
            storages: Vec::new(),
            tensors: Vec::new(),
        },
        depth: Vec::new(),
        storage_keys: HashMap::new(),
    };
    m.run()?;
    Ok(m.out)
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    /// Where the current opcode starts (for errors).
    op_at: usize,
    stack: Vec<Value>,
    /// Stack lengths at each MARK.
    marks: Vec<usize>,
    memo: HashMap<u32, Value>,
    out: Unpickled,
    /// Nesting depth of each node, as built.
    depth: Vec<u32>,
    storage_keys: HashMap<String, usize>,
}

impl<'a> Machine<'a> {
    fn err(&self, reason: impl Into<String>) -> FileError {
        error(self.op_at, reason)
    }

    /// The next `n` bytes; `what` names the opcode for the error.
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], FileError> {
        let remaining = self.data.len().saturating_sub(self.pos);
        if n > remaining {
            return Err(self.err(format!(
                "{what} needs {n} bytes but only {remaining} remain (truncated or corrupt pickle)"
            )));
        }
        let bytes = self
            .data
            .get(self.pos..self.pos + n)
            .ok_or_else(|| self.err("read past the end"))?;
        self.pos += n;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], FileError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N, what)?);
        Ok(a)
    }

    /// A length prefix of type `N` bytes, checked against what remains.
    fn length(&mut self, bytes: usize, what: &str) -> Result<usize, FileError> {
        let n: u64 = match bytes {
            1 => u8::from_le_bytes(self.array(what)?).into(),
            4 => u32::from_le_bytes(self.array(what)?).into(),
            _ => u64::from_le_bytes(self.array(what)?),
        };
        let remaining = self.data.len().saturating_sub(self.pos);
        match usize::try_from(n) {
            Ok(n) if n <= remaining => Ok(n),
            _ => Err(self.err(format!(
                "{what} declares {n} bytes but only {remaining} remain (truncated or corrupt pickle)"
            ))),
        }
    }

    /// A text line (GLOBAL, INT), without its newline.
    fn line(&mut self, what: &str) -> Result<&'a str, FileError> {
        let rest = self.data.get(self.pos..).unwrap_or_default();
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return Err(self.err(format!("{what}: no newline before the end of the pickle")));
        };
        let line = rest.get(..end).unwrap_or_default();
        self.pos += end + 1;
        std::str::from_utf8(line).map_err(|_| self.err(format!("{what}: the line is not UTF-8")))
    }

    fn base(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn push(&mut self, v: Value) {
        self.stack.push(v);
    }

    fn pop(&mut self, what: &str) -> Result<Value, FileError> {
        if self.stack.len() <= self.base() {
            return Err(self.err(format!("{what} on an empty stack")));
        }
        self.stack
            .pop()
            .ok_or_else(|| self.err(format!("{what} on an empty stack")))
    }

    fn top(&mut self, what: &str) -> Result<&mut Value, FileError> {
        if self.stack.len() <= self.base() {
            return Err(self.err(format!("{what} on an empty stack")));
        }
        let at = self.op_at;
        self.stack
            .last_mut()
            .ok_or_else(|| error(at, format!("{what} on an empty stack")))
    }

    /// The values pushed since the last MARK, which is removed.
    fn pop_mark(&mut self, what: &str) -> Result<Vec<Value>, FileError> {
        let Some(mark) = self.marks.pop() else {
            return Err(self.err(format!("{what} without a MARK")));
        };
        if mark > self.stack.len() {
            return Err(self.err(format!("{what}: the MARK is above the stack")));
        }
        Ok(self.stack.split_off(mark))
    }

    fn depth_of(&self, v: &Value) -> u32 {
        match v {
            Value::Tuple(id) | Value::List(id) | Value::Dict(id) => {
                self.depth.get(*id).copied().unwrap_or(0)
            }
            _ => 0,
        }
    }

    fn check_depth(&self, depth: u32) -> Result<u32, FileError> {
        if depth > MAX_DEPTH {
            Err(self.err(format!(
                "structures nested deeper than {MAX_DEPTH} levels are not read"
            )))
        } else {
            Ok(depth)
        }
    }

    fn node(&mut self, node: Node) -> Result<usize, FileError> {
        let inner = match &node {
            Node::Tuple(items) | Node::List(items) => {
                items.iter().map(|v| self.depth_of(v)).max().unwrap_or(0)
            }
            Node::Dict(items) => items
                .iter()
                .map(|(k, v)| self.depth_of(k).max(self.depth_of(v)))
                .max()
                .unwrap_or(0),
        };
        let depth = self.check_depth(inner + 1)?;
        self.out.nodes.push(node);
        self.depth.push(depth);
        Ok(self.out.nodes.len() - 1)
    }

    fn tuple(&mut self, items: Vec<Value>) -> Result<Value, FileError> {
        Ok(Value::Tuple(self.node(Node::Tuple(items))?))
    }

    /// Adds `items` to the list or dict on top of the stack.
    fn extend(&mut self, items: Vec<Value>, what: &str) -> Result<(), FileError> {
        let inner = items.iter().map(|v| self.depth_of(v)).max().unwrap_or(0);
        let target = self.top(what)?.clone();
        let id = match (&target, what) {
            (Value::List(id), "APPEND" | "APPENDS") => *id,
            (Value::Dict(id), "SETITEM" | "SETITEMS" | "DICT") => *id,
            _ => {
                return Err(self.err(format!(
                    "{what} on {}: only lists take APPEND and dicts SETITEM here",
                    target.describe()
                )));
            }
        };
        let depth = self.depth.get(id).copied().unwrap_or(0).max(inner + 1);
        let depth = self.check_depth(depth)?;
        if let Some(d) = self.depth.get_mut(id) {
            *d = depth;
        }
        match self.out.nodes.get_mut(id) {
            Some(Node::List(list)) => list.extend(items),
            Some(Node::Dict(dict)) => {
                if !items.len().is_multiple_of(2) {
                    return Err(error(self.op_at, format!("{what}: an odd number of items")));
                }
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    dict.push((k, v));
                }
            }
            _ => return Err(error(self.op_at, format!("{what}: not a container"))),
        }
        Ok(())
    }

    fn memo_put(&mut self, index: u32) -> Result<Option<Value>, FileError> {
        let v = self.top("a memo put")?.clone();
        self.memo.insert(index, v);
        Ok(None)
    }

    /// The memo index of a (LONG_)BINPUT or (LONG_)BINGET.
    fn memo_index(&mut self, long: bool) -> Result<u32, FileError> {
        Ok(if long {
            u32::from_le_bytes(self.array("a memo index")?)
        } else {
            let [i] = self.array::<1>("a memo index")?;
            i.into()
        })
    }

    fn memo_get(&self, index: u32) -> Result<Value, FileError> {
        self.memo
            .get(&index)
            .cloned()
            .ok_or_else(|| self.err(format!("memo index {index} is read before it is set")))
    }

    fn run(&mut self) -> Result<(), FileError> {
        loop {
            self.op_at = self.pos;
            let Some(&op) = self.data.get(self.pos) else {
                return Err(self.err("the pickle ends without STOP (truncated or corrupt)"));
            };
            self.pos += 1;
            if op == b'.' {
                self.out.root = self.pop("STOP")?;
                return Ok(());
            }
            if let Some(v) = self.step(op)? {
                self.push(v);
            }
        }
    }

    /// Runs the opcode `op`; the value it pushes, if any.
    fn step(&mut self, op: u8) -> Result<Option<Value>, FileError> {
        Ok(Some(match op {
            // PROTO
            0x80 => {
                let [v] = self.array::<1>("PROTO")?;
                if v > 5 {
                    return Err(self.err(format!("unknown pickle protocol {v}")));
                }
                return Ok(None);
            }
            // FRAME: a length hint only; the data follows inline.
            0x95 => return self.length(8, "FRAME").map(|_| None),
            b'(' => {
                self.marks.push(self.stack.len());
                return Ok(None);
            }
            b'0' if self.stack.len() > self.base() => return self.pop("POP").map(|_| None),
            b'0' | b'1' => return self.pop_mark("POP_MARK").map(|_| None),
            b'2' => self.top("DUP")?.clone(),
            // BINPUT, LONG_BINPUT, MEMOIZE (the next free index).
            b'q' | b'r' => {
                let i = self.memo_index(op == b'r')?;
                return self.memo_put(i);
            }
            0x94 => {
                let i = u32::try_from(self.memo.len())
                    .map_err(|_| self.err("MEMOIZE: the memo is full"))?;
                return self.memo_put(i);
            }
            b'h' | b'j' => {
                let i = self.memo_index(op == b'j')?;
                self.memo_get(i)?
            }
            b'N' => Value::None,
            0x88 => Value::Bool(true),
            0x89 => Value::Bool(false),
            b'J' => Value::Int(i32::from_le_bytes(self.array("BININT")?).into()),
            b'K' => {
                let [v] = self.array::<1>("BININT1")?;
                Value::Int(v.into())
            }
            b'M' => Value::Int(u16::from_le_bytes(self.array("BININT2")?).into()),
            0x8a => {
                let n = self.length(1, "LONG1")?;
                long(self.take(n, "LONG1")?)
            }
            b'I' => match self.line("INT")? {
                "01" => Value::Bool(true),
                "00" => Value::Bool(false),
                s => Value::Int(
                    s.parse()
                        .map_err(|_| self.err(format!("INT: {s:?} is not an integer")))?,
                ),
            },
            b'G' => Value::Float(f64::from_be_bytes(self.array("BINFLOAT")?)),
            // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8.
            b'X' | 0x8c | 0x8d => {
                let width = match op {
                    b'X' => 4,
                    0x8c => 1,
                    _ => 8,
                };
                let n = self.length(width, "BINUNICODE")?;
                let bytes = self.take(n, "BINUNICODE")?;
                let s = std::str::from_utf8(bytes)
                    .map_err(|_| self.err("BINUNICODE: the string is not UTF-8"))?;
                Value::Str(s.into())
            }
            // BINSTRING, SHORT_BINSTRING: Python 2 `str`, read as Latin-1.
            b'T' | b'U' => {
                let n = self.length(if op == b'T' { 4 } else { 1 }, "BINSTRING")?;
                let s: String = self
                    .take(n, "BINSTRING")?
                    .iter()
                    .map(|&b| char::from(b))
                    .collect();
                Value::Str(s.into())
            }
            // BINBYTES, SHORT_BINBYTES.
            b'B' | b'C' => {
                let n = self.length(if op == b'B' { 4 } else { 1 }, "BINBYTES")?;
                self.take(n, "BINBYTES")?;
                Value::Bytes
            }
            b')' => self.tuple(Vec::new())?,
            b't' => {
                let items = self.pop_mark("TUPLE")?;
                self.tuple(items)?
            }
            // TUPLE1, TUPLE2, TUPLE3.
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.pop("TUPLE1/2/3")?);
                }
                items.reverse();
                self.tuple(items)?
            }
            b']' => Value::List(self.node(Node::List(Vec::new()))?),
            b'l' => {
                let items = self.pop_mark("LIST")?;
                Value::List(self.node(Node::List(items))?)
            }
            b'a' => {
                let v = self.pop("APPEND")?;
                return self.extend(vec![v], "APPEND").map(|_| None);
            }
            b'e' => {
                let items = self.pop_mark("APPENDS")?;
                return self.extend(items, "APPENDS").map(|_| None);
            }
            b'}' => Value::Dict(self.node(Node::Dict(Vec::new()))?),
            b'd' => {
                let items = self.pop_mark("DICT")?;
                let id = self.node(Node::Dict(Vec::new()))?;
                self.push(Value::Dict(id));
                self.extend(items, "DICT")?;
                return Ok(None);
            }
            b's' => {
                let v = self.pop("SETITEM")?;
                let k = self.pop("SETITEM")?;
                return self.extend(vec![k, v], "SETITEM").map(|_| None);
            }
            b'u' => {
                let items = self.pop_mark("SETITEMS")?;
                return self.extend(items, "SETITEMS").map(|_| None);
            }
            b'c' => {
                let module = self.line("GLOBAL")?;
                let name = self.line("GLOBAL")?;
                Value::Global(Global::resolve(module, name, self.op_at)?)
            }
            0x93 => {
                let name = self.pop("STACK_GLOBAL")?;
                let module = self.pop("STACK_GLOBAL")?;
                let (Value::Str(module), Value::Str(name)) = (&module, &name) else {
                    return Err(self.err("STACK_GLOBAL: module and name must be strings"));
                };
                Value::Global(Global::resolve(module, name, self.op_at)?)
            }
            b'R' => {
                let args = self.pop("REDUCE")?;
                let callable = self.pop("REDUCE")?;
                self.reduce(&callable, &args)?
            }
            b'b' => {
                // The state is dropped: an OrderedDict's attributes (a
                // state_dict's `_metadata`) are not weights.
                self.pop("BUILD")?;
                let target = self.top("BUILD")?;
                if !matches!(target, Value::Dict(_)) {
                    let what = target.describe();
                    return Err(self.err(format!(
                        "BUILD sets the state of {what}, which is not read (only an \
                         OrderedDict's attributes, such as a state_dict's `_metadata`, are \
                         skipped); {ADVICE}"
                    )));
                }
                return Ok(None);
            }
            b'Q' => {
                let pid = self.pop("BINPERSID")?;
                self.persistent(&pid)?
            }
            other => return Err(self.err(unsupported(other))),
        }))
    }

    /// The items of a tuple value.
    fn items(&self, v: &Value) -> Option<&[Value]> {
        match v {
            Value::Tuple(id) => match self.out.nodes.get(*id) {
                Some(Node::Tuple(items)) => Some(items),
                _ => None,
            },
            _ => None,
        }
    }

    fn reduce(&mut self, callable: &Value, args: &Value) -> Result<Value, FileError> {
        let Value::Global(g) = callable else {
            return Err(self.err(format!(
                "REDUCE calls {}, which is not an allowed function; {ADVICE}",
                callable.describe()
            )));
        };
        let Some(items) = self.items(args).map(<[Value]>::to_vec) else {
            return Err(self.err(format!(
                "REDUCE of {}: the arguments are {}, not a tuple",
                g.name(),
                args.describe()
            )));
        };
        match (g, items.as_slice()) {
            (Global::OrderedDict, []) => {
                let id = self.node(Node::Dict(Vec::new()))?;
                Ok(Value::Dict(id))
            }
            (
                Global::RebuildTensorV2,
                [storage, offset, size, stride, _grad, _hooks, rest @ ..],
            ) if rest.len() <= 1 => self.view(storage, offset, size, stride),
            (Global::RebuildParameter, [tensor @ Value::Tensor(_), _grad, _hooks]) => {
                Ok(tensor.clone())
            }
            _ => Err(self.err(format!(
                "REDUCE of {} with {} arguments is not read; {ADVICE}",
                g.name(),
                items.len()
            ))),
        }
    }

    /// A non-negative integer argument.
    fn index(&self, v: &Value, what: &str) -> Result<usize, FileError> {
        match v {
            Value::Int(i) => usize::try_from(*i)
                .map_err(|_| self.err(format!("tensor {what} {i} is negative or too large"))),
            other => Err(self.err(format!("tensor {what} is {}, not an int", other.describe()))),
        }
    }

    fn dims(&self, v: &Value, what: &str) -> Result<Vec<usize>, FileError> {
        let items = self
            .items(v)
            .ok_or_else(|| self.err(format!("tensor {what} is {}, not a tuple", v.describe())))?;
        if items.len() > MAX_DIMS {
            return Err(self.err(format!(
                "tensor {what} has {} dimensions, more than {MAX_DIMS}",
                items.len()
            )));
        }
        items.iter().map(|v| self.index(v, what)).collect()
    }

    /// `_rebuild_tensor_v2(storage, offset, size, stride, …)`: a view,
    /// checked to lie inside its storage.
    fn view(
        &mut self,
        storage: &Value,
        offset: &Value,
        size: &Value,
        stride: &Value,
    ) -> Result<Value, FileError> {
        let &Value::Storage(sid) = storage else {
            return Err(self.err(format!(
                "_rebuild_tensor_v2: the storage is {}",
                storage.describe()
            )));
        };
        let available = self
            .out
            .storages
            .get(sid)
            .map(|s| s.numel)
            .ok_or_else(|| self.err("unknown storage"))?;
        let offset = self.index(offset, "storage offset")?;
        let shape = self.dims(size, "size")?;
        let mut strides = self.dims(stride, "stride")?;
        if strides.len() != shape.len() {
            return Err(self.err(format!(
                "tensor size {shape:?} and stride {strides:?} differ in length"
            )));
        }
        let numel = shape
            .iter()
            .try_fold(1usize, |n, &s| n.checked_mul(s))
            .ok_or_else(|| self.err(format!("tensor size {shape:?} overflows")))?;
        if numel > available {
            return Err(self.err(format!(
                "a tensor of size {shape:?} ({numel} elements) views a storage of only \
                 {available} elements"
            )));
        }
        for (st, &n) in strides.iter_mut().zip(&shape) {
            if n == 1 {
                *st = 0;
            }
        }
        let last = if numel == 0 {
            Some(offset)
        } else {
            shape
                .iter()
                .zip(&strides)
                .try_fold(offset, |at, (&n, &st)| {
                    at.checked_add((n - 1).checked_mul(st)?)
                })
        };
        match last {
            Some(last) if (numel == 0 && last <= available) || last < available => {}
            _ => {
                return Err(self.err(format!(
                    "a tensor view (offset {offset}, size {shape:?}, stride {strides:?}) \
                     reaches past the end of its storage of {available} elements"
                )));
            }
        }
        self.out.tensors.push(View {
            storage: sid,
            offset,
            shape,
            stride: strides,
            numel,
        });
        Ok(Value::Tensor(self.out.tensors.len() - 1))
    }

    /// `('storage', class, key, location, numel)`: storages load on the CPU
    /// whatever their location tag.
    fn persistent(&mut self, pid: &Value) -> Result<Value, FileError> {
        let items = self.items(pid).map(<[Value]>::to_vec).unwrap_or_default();
        let [
            Value::Str(tag),
            Value::Global(Global::Storage(kind)),
            Value::Str(key),
            Value::Str(_location),
            numel,
        ] = items.as_slice()
        else {
            return Err(self.err(format!(
                "BINPERSID: the persistent id is {}, not ('storage', torch.<Type>Storage, key, \
                 location, numel)",
                pid.describe()
            )));
        };
        if &**tag != "storage" {
            return Err(self.err(format!("BINPERSID: unknown persistent id kind {tag:?}")));
        }
        let numel = self.index(numel, "storage element count")?;
        if numel.checked_mul(kind.size).is_none() {
            return Err(self.err(format!("storage {key:?}: {numel} elements overflow")));
        }
        if let Some(&id) = self.storage_keys.get(&**key) {
            let same = self
                .out
                .storages
                .get(id)
                .is_some_and(|s| s.kind == *kind && s.numel == numel);
            if !same {
                return Err(self.err(format!(
                    "storage {key:?} is declared twice with different types or sizes"
                )));
            }
            return Ok(Value::Storage(id));
        }
        self.out.storages.push(Storage {
            key: key.to_string(),
            kind: *kind,
            numel,
        });
        let id = self.out.storages.len() - 1;
        self.storage_keys.insert(key.to_string(), id);
        Ok(Value::Storage(id))
    }
}

/// A LONG1 integer: little-endian two's complement.
fn long(bytes: &[u8]) -> Value {
    if bytes.len() > 8 {
        return Value::BigInt;
    }
    let negative = bytes.last().is_some_and(|&b| b & 0x80 != 0);
    let mut a = if negative { [0xff; 8] } else { [0; 8] };
    for (slot, &b) in a.iter_mut().zip(bytes) {
        *slot = b;
    }
    Value::Int(i64::from_le_bytes(a))
}

/// The error for an opcode outside the supported set, naming it.
fn unsupported(op: u8) -> String {
    let name = match op {
        b'P' => Some("PERSID"),
        b'L' => Some("LONG"),
        b'S' => Some("STRING"),
        b'V' => Some("UNICODE"),
        b'F' => Some("FLOAT"),
        b'g' => Some("GET"),
        b'p' => Some("PUT"),
        b'i' => Some("INST"),
        b'o' => Some("OBJ"),
        0x81 => Some("NEWOBJ"),
        0x92 => Some("NEWOBJ_EX"),
        0x82 => Some("EXT1"),
        0x83 => Some("EXT2"),
        0x84 => Some("EXT4"),
        0x8b => Some("LONG4"),
        0x8e => Some("BINBYTES8"),
        0x8f => Some("EMPTY_SET"),
        0x90 => Some("ADDITEMS"),
        0x91 => Some("FROZENSET"),
        0x96 => Some("BYTEARRAY8"),
        0x97 => Some("NEXT_BUFFER"),
        0x98 => Some("READONLY_BUFFER"),
        _ => None,
    };
    match name {
        Some(name) if matches!(op, b'i' | b'o' | 0x81 | 0x92 | 0x82..=0x84) => format!(
            "the pickle opcode {name} (0x{op:02x}) builds Python objects and is not read; {ADVICE}"
        ),
        Some(name) => format!(
            "the pickle opcode {name} (0x{op:02x}) is not read (it does not occur in a \
             torch.save state_dict)"
        ),
        None => format!("byte 0x{op:02x} is not a pickle opcode (corrupt pickle)"),
    }
}
