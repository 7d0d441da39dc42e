//! A minimal pickle VM for the `data.pkl` of torch zip checkpoints. It understands the opcodes
//! torch >= 1.6 writes (protocol 2, plus the protocol 4 framing and memo forms) and resolves only
//! an allowlist of globals into inert markers, so nothing named by a file is ever executed.
//!
//! Hostile input is bounded: containers are frozen once placed inside another one, which keeps
//! nesting depth exact (and capped) and makes reference cycles impossible, so neither dropping
//! nor walking a result can recurse without limit.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use flashvsr_tensor::DType;

const MAX_DEPTH: usize = 200;
const MAX_NAME_IN_MESSAGE: usize = 120;

#[derive(Clone, Debug)]
pub(super) enum Value {
    None,
    // Payloads of values no torch state dict needs (flags, floats, raw bytes) are dropped.
    Bool,
    Int(i64),
    Float,
    Str(Rc<str>),
    Bytes,
    Tuple(Rc<Tuple>),
    List(Rc<Container<Value>>),
    Dict(Rc<Container<(Value, Value)>>),
    Global(Global),
    Storage(Rc<Storage>),
    Tensor(Rc<Tensor>),
}

#[derive(Debug)]
pub(super) struct Tuple {
    pub items: Vec<Value>,
    depth: usize,
}

#[derive(Debug)]
pub(super) struct Container<T> {
    pub items: RefCell<Vec<T>>,
    frozen: Cell<bool>,
    depth: Cell<usize>,
}

impl<T> Container<T> {
    fn new() -> Rc<Self> {
        Rc::new(Container {
            items: RefCell::new(Vec::new()),
            frozen: Cell::new(false),
            depth: Cell::new(1),
        })
    }
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Global {
    RebuildTensorV2,
    RebuildParameter,
    OrderedDict,
    StorageType(StorageType),
}

/// A `torch.<Name>Storage` class; `dtype` is `None` for element types we cannot decode.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct StorageType {
    pub name: Rc<str>,
    pub dtype: Option<DType>,
}

#[derive(Debug)]
pub(super) struct Storage {
    pub key: String,
    pub storage_type: StorageType,
}

#[derive(Debug)]
pub(super) struct Tensor {
    pub storage: Rc<Storage>,
    pub offset: usize,
    pub shape: Vec<usize>,
    pub strides: Vec<usize>,
}

impl Value {
    fn depth(&self) -> usize {
        match self {
            Value::Tuple(t) => t.depth,
            Value::List(c) => c.depth.get(),
            Value::Dict(c) => c.depth.get(),
            _ => 0,
        }
    }

    /// Marks a value as placed inside a container; from then on it may not change.
    fn freeze(&self) {
        match self {
            Value::List(c) => c.frozen.set(true),
            Value::Dict(c) => c.frozen.set(true),
            _ => {}
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Value::None => "None",
            Value::Bool => "bool",
            Value::Int(_) => "int",
            Value::Float => "float",
            Value::Str(_) => "str",
            Value::Bytes => "bytes",
            Value::Tuple(_) => "tuple",
            Value::List(_) => "list",
            Value::Dict(_) => "dict",
            Value::Global(_) => "class or function",
            Value::Storage(_) => "storage",
            Value::Tensor(_) => "tensor",
        }
    }
}

/// Runs the pickle program and returns the object it builds.
pub(super) fn load(data: &[u8]) -> Result<Value, String> {
    Vm {
        data,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: HashMap::new(),
    }
    .run()
}

struct Vm<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    marks: Vec<usize>,
    memo: HashMap<u64, Value>,
}

impl<'a> Vm<'a> {
    fn run(mut self) -> Result<Value, String> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            self.step(op)
                .map_err(|e| format!("pickle opcode 0x{op:02x} at byte {at}: {e}"))?;
            if op == b'.' {
                return self.pop();
            }
        }
    }

    fn step(&mut self, op: u8) -> Result<(), String> {
        match op {
            0x80 => {
                let proto = self.u8()?;
                if proto > 5 {
                    return Err(format!("unsupported pickle protocol {proto}"));
                }
            }
            // FRAME only announces a length; opcodes inside it are read as usual.
            0x95 => {
                self.take(8)?;
            }
            b'.' => {}
            b'(' => self.marks.push(self.stack.len()),
            b'0' => {
                self.pop()?;
            }
            b'1' => {
                self.pop_mark()?;
            }
            b'2' => {
                let top = self.top()?.clone();
                self.stack.push(top);
            }
            b'N' => self.stack.push(Value::None),
            0x88 | 0x89 => self.stack.push(Value::Bool),
            b'J' => {
                let b = self.take(4)?;
                let v = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                self.stack.push(Value::Int(v.into()));
            }
            b'K' => {
                let v = self.u8()?;
                self.stack.push(Value::Int(v.into()));
            }
            b'M' => {
                let b = self.take(2)?;
                self.stack
                    .push(Value::Int(u16::from_le_bytes([b[0], b[1]]).into()));
            }
            0x8a => {
                let n = usize::from(self.u8()?);
                let v = long_le(self.take(n)?)?;
                self.stack.push(Value::Int(v));
            }
            0x8b => {
                let n = self.len4()?;
                let v = long_le(self.take(n)?)?;
                self.stack.push(Value::Int(v));
            }
            b'G' => {
                self.take(8)?;
                self.stack.push(Value::Float);
            }
            0x8c => {
                let n = usize::from(self.u8()?);
                self.push_str(n, true)?;
            }
            b'X' => {
                let n = self.len4()?;
                self.push_str(n, true)?;
            }
            0x8d => {
                let n = self.len8()?;
                self.push_str(n, true)?;
            }
            // Python 2 byte strings; torch never writes them, names would still be text.
            b'U' => {
                let n = usize::from(self.u8()?);
                self.push_str(n, false)?;
            }
            b'T' => {
                let n = self.len4()?;
                self.push_str(n, false)?;
            }
            b'C' => {
                let n = usize::from(self.u8()?);
                self.take(n)?;
                self.stack.push(Value::Bytes);
            }
            b'B' => {
                let n = self.len4()?;
                self.take(n)?;
                self.stack.push(Value::Bytes);
            }
            0x8e => {
                let n = self.len8()?;
                self.take(n)?;
                self.stack.push(Value::Bytes);
            }
            b')' => self.stack.push(tuple(Vec::new())?),
            b't' => {
                let items = self.pop_mark()?;
                self.stack.push(tuple(items)?);
            }
            0x85..=0x87 => {
                let n = usize::from(op - 0x84);
                let items = self.pop_n(n)?;
                self.stack.push(tuple(items)?);
            }
            b']' => self.stack.push(Value::List(Container::new())),
            b'}' => self.stack.push(Value::Dict(Container::new())),
            b'l' => {
                let items = self.pop_mark()?;
                let list = Container::new();
                append(&list, items)?;
                self.stack.push(Value::List(list));
            }
            b'd' => {
                let items = self.pop_mark()?;
                let dict = Container::new();
                set_items(&dict, items)?;
                self.stack.push(Value::Dict(dict));
            }
            b'a' => {
                let item = self.pop()?;
                append(&*self.top_list()?, vec![item])?;
            }
            b'e' => {
                let items = self.pop_mark()?;
                append(&*self.top_list()?, items)?;
            }
            b's' => {
                let items = self.pop_n(2)?;
                set_items(&*self.top_dict()?, items)?;
            }
            b'u' => {
                let items = self.pop_mark()?;
                set_items(&*self.top_dict()?, items)?;
            }
            b'c' => {
                let module = self.line()?;
                let name = self.line()?;
                self.stack
                    .push(Value::Global(resolve_global(&module, &name)?));
            }
            0x93 => {
                let name = self.pop()?;
                let module = self.pop()?;
                match (module, name) {
                    (Value::Str(module), Value::Str(name)) => {
                        self.stack
                            .push(Value::Global(resolve_global(&module, &name)?));
                    }
                    _ => return Err("STACK_GLOBAL needs two strings".into()),
                }
            }
            b'R' | 0x81 => {
                let args = self.pop()?;
                let callable = self.pop()?;
                let Value::Tuple(args) = args else {
                    return Err(format!("call arguments are a {}, not a tuple", args.kind()));
                };
                self.stack.push(call(&callable, &args.items)?);
            }
            // BUILD sets attributes (an OrderedDict's `_metadata`); none of them matter here.
            b'b' => {
                self.pop()?;
                self.top()?;
            }
            b'Q' => {
                let pid = self.pop()?;
                self.stack.push(persistent_load(&pid)?);
            }
            b'q' => {
                let i = u64::from(self.u8()?);
                self.put(i)?;
            }
            b'r' => {
                let b = self.take(4)?;
                self.put(u32::from_le_bytes([b[0], b[1], b[2], b[3]]).into())?;
            }
            0x94 => {
                let i = self.memo.len() as u64;
                self.put(i)?;
            }
            b'h' => {
                let i = u64::from(self.u8()?);
                self.get(i)?;
            }
            b'j' => {
                let b = self.take(4)?;
                self.get(u32::from_le_bytes([b[0], b[1], b[2], b[3]]).into())?;
            }
            _ => return Err("unsupported opcode".into()),
        }
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let data = self.data;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&end| end <= data.len())
            .ok_or_else(|| {
                format!(
                    "truncated: needs {n} more byte(s) but the pickle ends at byte {}",
                    data.len()
                )
            })?;
        let bytes = &data[self.pos..end];
        self.pos = end;
        Ok(bytes)
    }

    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn len4(&mut self) -> Result<usize, String> {
        let b = self.take(4)?;
        usize::try_from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])).map_err(|e| e.to_string())
    }

    fn len8(&mut self) -> Result<usize, String> {
        let b = self.take(8)?;
        let bits: [u8; 8] = b.try_into().map_err(|_| "short length")?;
        usize::try_from(u64::from_le_bytes(bits)).map_err(|e| e.to_string())
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("GLOBAL name without newline (truncated?)")?;
        let text = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(text)
    }

    fn push_str(&mut self, n: usize, utf8: bool) -> Result<(), String> {
        let b = self.take(n)?;
        let s: Rc<str> = if utf8 {
            std::str::from_utf8(b)
                .map_err(|e| format!("string is not UTF-8: {e}"))?
                .into()
        } else {
            String::from_utf8_lossy(b).into()
        };
        self.stack.push(Value::Str(s));
        Ok(())
    }

    fn fence(&self) -> usize {
        self.marks.last().copied().unwrap_or(0)
    }

    fn pop(&mut self) -> Result<Value, String> {
        if self.stack.len() <= self.fence() {
            return Err("stack underflow".into());
        }
        self.stack.pop().ok_or_else(|| "stack underflow".into())
    }

    fn pop_n(&mut self, n: usize) -> Result<Vec<Value>, String> {
        let len = self.stack.len();
        if len < self.fence() + n {
            return Err("stack underflow".into());
        }
        Ok(self.stack.split_off(len - n))
    }

    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let mark = self.marks.pop().ok_or("no MARK on the stack")?;
        if mark > self.stack.len() {
            return Err("MARK above the stack top".into());
        }
        Ok(self.stack.split_off(mark))
    }

    fn top(&self) -> Result<&Value, String> {
        if self.stack.len() <= self.fence() {
            return Err("stack underflow".into());
        }
        self.stack.last().ok_or_else(|| "stack underflow".into())
    }

    fn top_list(&self) -> Result<Rc<Container<Value>>, String> {
        match self.top()? {
            Value::List(l) => Ok(l.clone()),
            other => Err(format!("APPEND to a {}", other.kind())),
        }
    }

    fn top_dict(&self) -> Result<Rc<Container<(Value, Value)>>, String> {
        match self.top()? {
            Value::Dict(d) => Ok(d.clone()),
            other => Err(format!("SETITEM on a {}", other.kind())),
        }
    }

    fn put(&mut self, index: u64) -> Result<(), String> {
        let top = self.top()?.clone();
        self.memo.insert(index, top);
        Ok(())
    }

    fn get(&mut self, index: u64) -> Result<(), String> {
        let v = self
            .memo
            .get(&index)
            .ok_or_else(|| format!("memo entry {index} was never stored"))?
            .clone();
        self.stack.push(v);
        Ok(())
    }
}

/// Two's-complement little-endian integer (LONG1/LONG4); only values fitting i64 are accepted.
fn long_le(bytes: &[u8]) -> Result<i64, String> {
    if bytes.len() > 8 {
        let (low, high) = bytes.split_at(8);
        let sign = if low[7] & 0x80 != 0 { 0xff } else { 0 };
        if high.iter().any(|&b| b != sign) {
            return Err("integer does not fit in 64 bits".into());
        }
        return long_le(low);
    }
    let Some(&last) = bytes.last() else {
        return Ok(0);
    };
    let mut buf = if last & 0x80 != 0 { [0xff; 8] } else { [0; 8] };
    buf[..bytes.len()].copy_from_slice(bytes);
    Ok(i64::from_le_bytes(buf))
}

fn depth_after<'v>(
    current: usize,
    children: impl IntoIterator<Item = &'v Value>,
) -> Result<usize, String> {
    let depth = children
        .into_iter()
        .map(|c| c.depth() + 1)
        .fold(current, usize::max);
    if depth > MAX_DEPTH {
        return Err(format!("objects nested deeper than {MAX_DEPTH} levels"));
    }
    Ok(depth)
}

fn tuple(items: Vec<Value>) -> Result<Value, String> {
    let depth = depth_after(1, &items)?;
    items.iter().for_each(Value::freeze);
    Ok(Value::Tuple(Rc::new(Tuple { items, depth })))
}

fn append(list: &Container<Value>, items: Vec<Value>) -> Result<(), String> {
    items.iter().for_each(Value::freeze);
    if list.frozen.get() {
        return Err("list modified after being placed in another object".into());
    }
    list.depth.set(depth_after(list.depth.get(), &items)?);
    list.items.borrow_mut().extend(items);
    Ok(())
}

fn set_items(dict: &Container<(Value, Value)>, items: Vec<Value>) -> Result<(), String> {
    if items.len() & 1 == 1 {
        return Err("odd number of items for a dict".into());
    }
    items.iter().for_each(Value::freeze);
    if dict.frozen.get() {
        return Err("dict modified after being placed in another object".into());
    }
    dict.depth.set(depth_after(dict.depth.get(), &items)?);
    let mut entries = dict.items.borrow_mut();
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        entries.push((k, v));
    }
    Ok(())
}

fn resolve_global(module: &str, name: &str) -> Result<Global, String> {
    match (module, name) {
        ("torch._utils", "_rebuild_tensor_v2") => Ok(Global::RebuildTensorV2),
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            Ok(Global::RebuildParameter)
        }
        ("collections", "OrderedDict") => Ok(Global::OrderedDict),
        ("torch", _)
            if name.ends_with("Storage")
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
        {
            let dtype = match name {
                "FloatStorage" => Some(DType::F32),
                "HalfStorage" => Some(DType::F16),
                "BFloat16Storage" => Some(DType::BF16),
                _ => None,
            };
            Ok(Global::StorageType(StorageType {
                name: name.into(),
                dtype,
            }))
        }
        _ => {
            let full: String = format!("{module}.{name}")
                .chars()
                .take(MAX_NAME_IN_MESSAGE)
                .flat_map(char::escape_debug)
                .collect();
            Err(format!(
                "refusing to load: pickle references {full} (only torch tensor rebuilds, torch \
                 storage types and collections.OrderedDict are allowed; nothing is executed)"
            ))
        }
    }
}

fn call(callable: &Value, args: &[Value]) -> Result<Value, String> {
    let Value::Global(global) = callable else {
        return Err(format!("calling a {}", callable.kind()));
    };
    match global {
        Global::OrderedDict if args.is_empty() => Ok(Value::Dict(Container::new())),
        Global::OrderedDict => Err("OrderedDict built from arguments".into()),
        Global::RebuildParameter => match args.first() {
            Some(t @ Value::Tensor(_)) => Ok(t.clone()),
            _ => Err("_rebuild_parameter without a tensor".into()),
        },
        Global::RebuildTensorV2 => rebuild_tensor(args),
        Global::StorageType(st) => Err(format!("calling torch.{} directly", st.name)),
    }
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, backward_hooks[,
/// metadata])`; the last three only matter for autograd.
fn rebuild_tensor(args: &[Value]) -> Result<Value, String> {
    if !(6..=7).contains(&args.len()) {
        return Err(format!(
            "_rebuild_tensor_v2 with {} arguments (expected 6 or 7)",
            args.len()
        ));
    }
    let Value::Storage(storage) = &args[0] else {
        return Err(format!("tensor storage is a {}", args[0].kind()));
    };
    let offset = to_usize(&args[1], "storage offset")?;
    let shape = usize_tuple(&args[2], "size")?;
    let strides = usize_tuple(&args[3], "stride")?;
    if shape.len() != strides.len() {
        return Err(format!(
            "tensor size {shape:?} and stride {strides:?} have different ranks"
        ));
    }
    Ok(Value::Tensor(Rc::new(Tensor {
        storage: storage.clone(),
        offset,
        shape,
        strides,
    })))
}

fn to_usize(v: &Value, what: &str) -> Result<usize, String> {
    match v {
        Value::Int(i) => usize::try_from(*i).map_err(|_| format!("negative {what} {i}")),
        other => Err(format!("{what} is a {}, not an int", other.kind())),
    }
}

fn usize_tuple(v: &Value, what: &str) -> Result<Vec<usize>, String> {
    match v {
        Value::Tuple(t) => t.items.iter().map(|i| to_usize(i, what)).collect(),
        other => Err(format!("tensor {what} is a {}, not a tuple", other.kind())),
    }
}

/// torch's persistent id for a storage: `('storage', StorageType, key, location, numel)`.
fn persistent_load(pid: &Value) -> Result<Value, String> {
    let Value::Tuple(t) = pid else {
        return Err(format!("persistent id is a {}, not a tuple", pid.kind()));
    };
    match t.items.as_slice() {
        [Value::Str(tag), Value::Global(Global::StorageType(st)), key, _location, _numel]
            if &**tag == "storage" =>
        {
            let key = match key {
                Value::Str(s) => s.to_string(),
                Value::Int(i) => i.to_string(),
                other => return Err(format!("storage key is a {}", other.kind())),
            };
            Ok(Value::Storage(Rc::new(Storage {
                key,
                storage_type: st.clone(),
            })))
        }
        _ => Err("unsupported persistent id (expected a torch storage reference)".into()),
    }
}
