//! Test-only writer of torch-style checkpoints: hand-assembled pickles (the opcodes `torch.save`
//! emits, or a protocol-4 flavour) zipped with stored entries, so the loader can be tested on
//! layouts the golden files do not contain (bf16/f16, views, shared storages, nesting).

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{Cursor, Write};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

/// One `_rebuild_tensor_v2` call.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub storage_type: &'static str,
    pub key: String,
    pub numel: usize,
    pub offset: usize,
    pub size: Vec<usize>,
    pub stride: Vec<usize>,
    /// Wrap in `torch._utils._rebuild_parameter` like an `nn.Parameter`.
    pub parameter: bool,
}

impl TensorSpec {
    pub fn contiguous(storage_type: &'static str, key: &str, size: &[usize]) -> TensorSpec {
        let mut stride = vec![1; size.len()];
        for i in (0..size.len().saturating_sub(1)).rev() {
            stride[i] = stride[i + 1] * size[i + 1];
        }
        TensorSpec {
            storage_type,
            key: key.to_string(),
            numel: size.iter().product(),
            offset: 0,
            size: size.to_vec(),
            stride,
            parameter: false,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Node {
    Tensor(TensorSpec),
    /// Written as `collections.OrderedDict()` + SETITEMS (what `state_dict()` gives).
    OrderedDict(Vec<(String, Node)>),
    /// Written as EMPTY_DICT + SETITEMS (a plain `{...}` wrapper).
    Dict(Vec<(String, Node)>),
    Int(i64),
    Float(f64),
    None,
}

/// `Classic` is what torch.save writes (protocol 2, GLOBAL, BINUNICODE, BINPUT/BINGET);
/// `Modern` uses protocol 4 forms (FRAME, SHORT_BINUNICODE, STACK_GLOBAL, MEMOIZE, LONG1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    Classic,
    Modern,
}

pub struct Pickler {
    out: Vec<u8>,
    flavour: Flavour,
    next_memo: u32,
    globals: HashMap<String, u32>,
}

impl Pickler {
    pub fn new(flavour: Flavour) -> Pickler {
        let mut p = Pickler {
            out: Vec::new(),
            flavour,
            next_memo: 0,
            globals: HashMap::new(),
        };
        match flavour {
            Flavour::Classic => p.raw(&[0x80, 2]),
            // A FRAME header whose length is not checked by readers that ignore framing.
            Flavour::Modern => p.raw(&[0x80, 4, 0x95, 0, 0, 0, 0, 0, 0, 0, 0]),
        };
        p
    }

    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.raw(b".");
        self.out
    }

    fn memoize(&mut self) -> u32 {
        let i = self.next_memo;
        self.next_memo += 1;
        match self.flavour {
            Flavour::Classic if i < 256 => self.raw(&[b'q', i as u8]),
            Flavour::Classic => {
                self.raw(b"r");
                self.raw(&i.to_le_bytes())
            }
            Flavour::Modern => self.raw(&[0x94]),
        };
        i
    }

    fn get(&mut self, i: u32) {
        if i < 256 {
            self.raw(&[b'h', i as u8]);
        } else {
            self.raw(b"j");
            self.raw(&i.to_le_bytes());
        }
    }

    pub fn str(&mut self, s: &str) -> &mut Self {
        match self.flavour {
            Flavour::Modern if s.len() < 256 => {
                self.raw(&[0x8c, s.len() as u8]);
            }
            _ => {
                self.raw(b"X");
                self.raw(&(s.len() as u32).to_le_bytes());
            }
        }
        self.raw(s.as_bytes());
        self.memoize();
        self
    }

    pub fn int(&mut self, v: i64) -> &mut Self {
        if self.flavour == Flavour::Modern && v > 1000 {
            // LONG1 with a minimal two's-complement payload.
            let bytes = v.to_le_bytes();
            let mut n = 8;
            while n > 1 && bytes[n - 1] == 0 && bytes[n - 2] & 0x80 == 0 {
                n -= 1;
            }
            self.raw(&[0x8a, n as u8]);
            self.raw(&bytes[..n]);
        } else if (0..256).contains(&v) {
            self.raw(&[b'K', v as u8]);
        } else if (0..65536).contains(&v) {
            self.raw(b"M");
            self.raw(&(v as u16).to_le_bytes());
        } else {
            self.raw(b"J");
            self.raw(&(v as i32).to_le_bytes());
        }
        self
    }

    pub fn global(&mut self, module: &str, name: &str) -> &mut Self {
        let full = format!("{module}.{name}");
        if let Some(&i) = self.globals.get(&full) {
            self.get(i);
            return self;
        }
        match self.flavour {
            Flavour::Classic => {
                self.raw(b"c");
                self.raw(format!("{module}\n{name}\n").as_bytes());
            }
            Flavour::Modern => {
                self.str(module);
                self.str(name);
                self.raw(&[0x93]);
            }
        }
        let i = self.memoize();
        self.globals.insert(full, i);
        self
    }

    fn int_tuple(&mut self, values: &[usize]) {
        match values.len() {
            0 => {
                self.raw(b")");
            }
            1..=3 => {
                for &v in values {
                    self.int(v as i64);
                }
                self.raw(&[0x84 + values.len() as u8]);
            }
            _ => {
                self.raw(b"(");
                for &v in values {
                    self.int(v as i64);
                }
                self.raw(b"t");
            }
        }
        self.memoize();
    }

    fn empty_ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.raw(b")R");
        self.memoize();
    }

    pub fn tensor(&mut self, t: &TensorSpec) -> &mut Self {
        if t.parameter {
            self.global("torch._utils", "_rebuild_parameter");
            self.raw(b"(");
        }
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.raw(b"((");
        self.str("storage");
        self.global("torch", t.storage_type);
        self.str(&t.key);
        self.str("cpu");
        self.int(t.numel as i64);
        self.raw(b"t");
        self.memoize();
        self.raw(b"Q");
        self.int(t.offset as i64);
        self.int_tuple(&t.size);
        self.int_tuple(&t.stride);
        self.raw(&[0x89]);
        self.empty_ordered_dict();
        self.raw(b"t");
        self.memoize();
        self.raw(b"R");
        self.memoize();
        if t.parameter {
            self.raw(&[0x89]);
            self.empty_ordered_dict();
            self.raw(b"tR");
            self.memoize();
        }
        self
    }

    pub fn node(&mut self, node: &Node) -> &mut Self {
        match node {
            Node::Tensor(t) => {
                self.tensor(t);
            }
            Node::OrderedDict(items) | Node::Dict(items) => {
                if matches!(node, Node::OrderedDict(_)) {
                    self.empty_ordered_dict();
                } else {
                    self.raw(b"}");
                    self.memoize();
                }
                if !items.is_empty() {
                    self.raw(b"(");
                    for (k, v) in items {
                        self.str(k);
                        self.node(v);
                    }
                    self.raw(b"u");
                }
                if matches!(node, Node::OrderedDict(_)) {
                    // torch's `_metadata` attribute, set through BUILD.
                    self.raw(b"}");
                    self.memoize();
                    self.str("_metadata");
                    self.empty_ordered_dict();
                    self.str("");
                    self.raw(b"}");
                    self.memoize();
                    self.str("version");
                    self.int(1);
                    self.raw(b"sssb");
                }
            }
            Node::Int(v) => {
                self.int(*v);
            }
            Node::Float(v) => {
                self.raw(b"G");
                self.raw(&v.to_be_bytes());
            }
            Node::None => {
                self.raw(b"N");
            }
        }
        self
    }
}

pub fn pickle(root: &Node, flavour: Flavour) -> Vec<u8> {
    let mut p = Pickler::new(flavour);
    p.node(root);
    p.finish()
}

/// A torch zip archive: `<root>/data.pkl`, the bookkeeping entries torch writes, and
/// `<root>/data/<key>` for each storage; every entry stored uncompressed.
pub fn torch_zip(root: &str, pkl: &[u8], storages: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut zip = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    let mut add = |name: String, data: &[u8]| {
        zip.start_file(name, options).unwrap();
        zip.write_all(data).unwrap();
    };
    add(format!("{root}/data.pkl"), pkl);
    add(format!("{root}/.format_version"), b"1");
    add(format!("{root}/byteorder"), b"little");
    for (key, data) in storages {
        add(format!("{root}/data/{key}"), data);
    }
    add(format!("{root}/version"), b"3\n");
    zip.finish().unwrap().into_inner()
}

pub fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

pub fn bf16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect()
}

pub fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect()
}

/// A safetensors file from `(name, dtype, shape, bytes)` records laid out back to back.
pub fn safetensors(tensors: &[(&str, &str, &[usize], Vec<u8>)]) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let header = serde_json::Value::Object(header).to_string();
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&data);
    out
}
