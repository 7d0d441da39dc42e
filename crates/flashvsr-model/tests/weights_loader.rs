//! Weight-file loader: golden model files, synthetic torch checkpoints covering the layouts the
//! golden files lack, and corrupt inputs (which must give errors naming the file, never panics).

#[path = "support/torch_writer.rs"]
mod torch_writer;

use std::path::{Path, PathBuf};

use flashvsr_model::weights::{WeightError, WeightFile, WeightFormat};
use flashvsr_tensor::DType;
use tempfile::TempDir;
use torch_writer::{
    bf16_bytes, f16_bytes, f32_bytes, pickle, safetensors, torch_zip, Flavour, Node, TensorSpec,
};

fn golden_dir() -> PathBuf {
    let dir = std::env::var_os("FLASHVSR_GOLDEN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/golden"
            ))
        });
    assert!(
        dir.join("models").is_dir(),
        "golden folder {} not found (set FLASHVSR_GOLDEN)",
        dir.display()
    );
    dir
}

fn model(version: &str, file: &str) -> PathBuf {
    golden_dir()
        .join("models")
        .join(format!("flashvsr_{version}_small"))
        .join(file)
}

fn open(path: &Path) -> WeightFile {
    WeightFile::open(path).unwrap_or_else(|e| panic!("{e}"))
}

fn write(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Opening must fail with a message that names the file.
fn open_err(path: &Path) -> WeightError {
    match WeightFile::open(path) {
        Ok(w) => panic!(
            "{} opened with {} tensors, expected an error",
            path.display(),
            w.names().len()
        ),
        Err(e) => {
            let msg = e.to_string();
            assert!(
                msg.contains(&path.display().to_string()),
                "message does not name the file: {msg}"
            );
            e
        }
    }
}

fn assert_format_err(path: &Path, needles: &[&str]) {
    let e = open_err(path);
    let msg = e.to_string();
    assert!(matches!(e, WeightError::Format { .. }), "{msg}");
    for needle in needles {
        assert!(msg.contains(needle), "`{needle}` not in: {msg}");
    }
}

/// Values printed by Python from the f32 data as f64, so the conversion back is exact.
fn f32s(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}

fn assert_bits_eq(got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len());
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.to_bits(), w.to_bits(), "element {i}: {g} != {w}");
    }
}

fn read_all(w: &WeightFile) {
    for name in w.names() {
        let v = w.read_f32(name).unwrap();
        assert_eq!(
            v.len(),
            w.shape(name).unwrap().iter().product::<usize>(),
            "{name}"
        );
        assert!(v.iter().all(|x| x.is_finite()), "{name}");
    }
}

// ---------------------------------------------------------------- golden files

#[test]
fn golden_dit_safetensors() {
    let w = open(&model(
        "v11",
        "diffusion_pytorch_model_streaming_dmd.safetensors",
    ));
    assert_eq!(w.format(), WeightFormat::Safetensors);
    assert!(!w.is_bare_tensor());
    assert_eq!(w.names().len(), 69);
    assert_eq!(
        w.shape("patch_embedding.weight"),
        Some(&[256, 16, 1, 2, 2][..])
    );
    assert_eq!(w.dtype("patch_embedding.weight"), Some(DType::F32));
    assert_eq!(w.shape("blocks.1.modulation"), Some(&[1, 6, 256][..]));
    let names = w.names();
    assert!(names.windows(2).all(|p| p[0] < p[1]), "names not sorted");
    let bias = w.read_f32_shaped("patch_embedding.bias", &[256]).unwrap();
    assert_bits_eq(
        &bias[..3],
        &f32s(&[
            -0.07853555679321289,
            -0.014052017591893673,
            -0.011196542531251907,
        ]),
    );
    assert_bits_eq(&bias[255..], &f32s(&[-0.03166647627949715]));
    let modulation = w.read_f32("head.modulation").unwrap();
    assert_bits_eq(
        &modulation[..2],
        &f32s(&[-0.0037371518556028605, -0.012148275040090084]),
    );
    assert_eq!(
        w.contiguous_bytes("head.modulation").unwrap().len(),
        2 * 256 * 4
    );
    read_all(&w);
}

#[test]
fn golden_lq_proj_in_v11_and_v10() {
    let w = open(&model("v11", "LQ_proj_in.ckpt"));
    assert_eq!(w.format(), WeightFormat::TorchZip);
    assert_eq!(
        w.names(),
        [
            "conv1.bias",
            "conv1.weight",
            "conv2.bias",
            "conv2.weight",
            "linear_layers.0.bias",
            "linear_layers.0.weight",
            "norm1.gamma",
            "norm2.gamma"
        ]
    );
    assert_eq!(w.shape("conv1.weight"), Some(&[4, 768, 4, 3, 3][..]));
    assert_eq!(w.shape("norm2.gamma"), Some(&[12, 1, 1, 1][..]));
    assert_eq!(w.shape("linear_layers.0.weight"), Some(&[256, 12][..]));
    assert_bits_eq(
        &w.read_f32("conv1.bias").unwrap(),
        &f32s(&[
            -0.029651448130607605,
            -0.024981100112199783,
            0.13234418630599976,
            0.059757087379693985,
        ]),
    );
    let conv1 = w
        .read_f32_shaped("conv1.weight", &[4, 768, 4, 3, 3])
        .unwrap();
    assert_bits_eq(
        &[conv1[0], conv1[conv1.len() - 1]],
        &f32s(&[-0.0074030631221830845, -0.0012545088538900018]),
    );
    let sum: f64 = conv1.iter().map(|&x| f64::from(x)).sum();
    assert!((sum - -1.078_860_023_421_981_4).abs() < 1e-9, "{sum}");
    read_all(&w);

    let v10 = open(&model("v10", "LQ_proj_in.ckpt"));
    assert_eq!(v10.names(), w.names());
    assert_bits_eq(
        &v10.read_f32("conv1.bias").unwrap(),
        &f32s(&[
            0.008398563601076603,
            -0.015688210725784302,
            -0.02381739765405655,
            0.06802418828010559,
        ]),
    );
}

#[test]
fn golden_tcdecoder_and_vae() {
    let tc = open(&model("v11", "TCDecoder.ckpt"));
    assert_eq!(tc.names().len(), 66);
    assert_eq!(tc.shape("decoder.1.weight"), Some(&[8, 784, 3, 3][..]));
    assert_eq!(tc.shape("decoder.26.bias"), Some(&[3][..]));
    read_all(&tc);

    let vae = open(&model("v11", "Wan2.1_VAE.pth"));
    assert_eq!(vae.names().len(), 194);
    assert_eq!(vae.shape("conv2.weight"), Some(&[16, 16, 1, 1, 1][..]));
    assert_eq!(
        vae.names()
            .iter()
            .filter(|n| n.starts_with("decoder."))
            .count(),
        106
    );
    read_all(&vae);
}

#[test]
fn golden_posi_prompt_is_a_bare_tensor() {
    let w = open(&model("v11", "posi_prompt.pth"));
    assert!(w.is_bare_tensor());
    assert_eq!(w.names(), [""]);
    assert_eq!(w.shape(""), Some(&[1, 512, 64][..]));
    assert_eq!(w.dtype(""), Some(DType::F32));
    let v = w.read_f32_shaped("", &[1, 512, 64]).unwrap();
    assert_bits_eq(
        &v[..3],
        &f32s(&[
            -0.40517565608024597,
            -0.36131927371025085,
            0.2679804563522339,
        ]),
    );
    assert_bits_eq(&v[23 * 64 + 63..24 * 64], &f32s(&[0.43793004751205444]));
    assert!(
        v[24 * 64..].iter().all(|&x| x == 0.0),
        "rows 24..511 not zero"
    );
    for row in v[..24 * 64].chunks(64) {
        assert!(
            row.iter().any(|&x| x != 0.0),
            "a prompt row 0..23 is all zero"
        );
    }
}

#[test]
fn golden_v10_linked_files_match_v11() {
    for file in [
        "diffusion_pytorch_model_streaming_dmd.safetensors",
        "TCDecoder.ckpt",
        "Wan2.1_VAE.pth",
        "posi_prompt.pth",
    ] {
        let linked = open(&model("v10", file));
        let original = open(&model("v11", file));
        assert_eq!(linked.path(), model("v10", file));
        assert_eq!(linked.names(), original.names(), "{file}");
        for name in original.names() {
            assert_eq!(linked.shape(name), original.shape(name));
            assert_bits_eq(
                &linked.read_f32(name).unwrap(),
                &original.read_f32(name).unwrap(),
            );
        }
    }
}

#[test]
fn golden_bf16_single_tensor() {
    let dir = golden_dir().join("models");
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("bf16_single_tensor.json")).unwrap())
            .unwrap();
    let name = json["tensor"].as_str().unwrap();
    let shape: Vec<usize> = json["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_u64().unwrap() as usize)
        .collect();
    let expected: Vec<f32> = json["values_as_float32_row_major"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(expected.len(), 32);

    let w = open(&dir.join(json["file"].as_str().unwrap()));
    assert_eq!(w.names(), [name]);
    assert_eq!(w.dtype(name), Some(DType::BF16));
    assert_eq!(w.shape(name), Some(shape.as_slice()));
    assert_bits_eq(&w.read_f32_shaped(name, &shape).unwrap(), &expected);
}

// ---------------------------------------------------------------- synthetic torch files

fn seq(n: usize) -> Vec<f32> {
    (0..n).map(|i| i as f32 * 10.0 + 0.5).collect()
}

#[test]
fn nested_state_dict_names_are_joined() {
    let tmp = TempDir::new().unwrap();
    let root = Node::Dict(vec![
        (
            "model_state".into(),
            Node::OrderedDict(vec![
                (
                    "a.weight".into(),
                    Node::Tensor(TensorSpec::contiguous("FloatStorage", "0", &[2, 3])),
                ),
                (
                    "inner".into(),
                    Node::Dict(vec![(
                        "b".into(),
                        Node::Tensor(TensorSpec::contiguous("FloatStorage", "1", &[2])),
                    )]),
                ),
            ]),
        ),
        ("epoch".into(), Node::Int(7)),
        ("lr".into(), Node::Float(0.5)),
        ("note".into(), Node::None),
    ]);
    let bytes = torch_zip(
        "some_other_name",
        &pickle(&root, Flavour::Classic),
        &[("0", f32_bytes(&seq(6))), ("1", f32_bytes(&[1.0, -1.0]))],
    );
    let w = open(&write(&tmp, "nested.pth", &bytes));
    assert!(!w.is_bare_tensor());
    assert_eq!(w.names(), ["model_state.a.weight", "model_state.inner.b"]);
    assert_eq!(w.shape("model_state.a.weight"), Some(&[2, 3][..]));
    assert_bits_eq(&w.read_f32("model_state.a.weight").unwrap(), &seq(6));
    assert_eq!(w.read_f32("model_state.inner.b").unwrap(), [1.0, -1.0]);
    assert!(w.contains("model_state.inner.b"));
    assert!(!w.contains("a.weight"));
}

#[test]
fn bare_tensor_file() {
    let tmp = TempDir::new().unwrap();
    let t = TensorSpec::contiguous("FloatStorage", "0", &[1, 3, 2]);
    let bytes = torch_zip(
        "p",
        &pickle(&Node::Tensor(t), Flavour::Classic),
        &[("0", f32_bytes(&seq(6)))],
    );
    let w = open(&write(&tmp, "prompt.pth", &bytes));
    assert!(w.is_bare_tensor());
    assert_eq!(w.names(), [""]);
    assert_bits_eq(&w.read_f32("").unwrap(), &seq(6));
}

#[test]
fn bf16_and_f16_storages_are_exact() {
    let tmp = TempDir::new().unwrap();
    let values = [1.0, -2.5, 0.156_25, 3072.0, -0.000_976_562_5, 65504.0];
    let bf16_values = [1.0, -2.5, 0.156_25, 3072.0, -0.000_976_562_5, 1.5e30];
    let root = Node::OrderedDict(vec![
        (
            "h".into(),
            Node::Tensor(TensorSpec::contiguous("HalfStorage", "0", &[2, 3])),
        ),
        (
            "b".into(),
            Node::Tensor(TensorSpec::contiguous("BFloat16Storage", "1", &[6])),
        ),
    ]);
    let bytes = torch_zip(
        "x",
        &pickle(&root, Flavour::Classic),
        &[("0", f16_bytes(&values)), ("1", bf16_bytes(&bf16_values))],
    );
    let w = open(&write(&tmp, "halves.ckpt", &bytes));
    assert_eq!(w.dtype("h"), Some(DType::F16));
    assert_eq!(w.dtype("b"), Some(DType::BF16));
    assert_bits_eq(&w.read_f32("h").unwrap(), &values);
    let expected_b: Vec<f32> = bf16_values
        .iter()
        .map(|&v| half::bf16::from_f32(v).to_f32())
        .collect();
    assert_bits_eq(&w.read_f32("b").unwrap(), &expected_b);
    assert_eq!(expected_b[..5], bf16_values[..5]);
}

/// Reference gather written independently of the loader: element (i0, i1, ...) of a view is
/// storage[offset + sum(i_k * stride_k)].
fn view(storage: &[f32], offset: usize, size: &[usize], stride: &[usize]) -> Vec<f32> {
    let n: usize = size.iter().product();
    (0..n)
        .map(|flat| {
            let mut rem = flat;
            let mut at = offset;
            for k in (0..size.len()).rev() {
                at += (rem % size[k]) * stride[k];
                rem /= size[k];
            }
            storage[at]
        })
        .collect()
}

#[test]
fn non_contiguous_views_are_gathered_row_major() {
    let tmp = TempDir::new().unwrap();
    let storage = seq(30);
    let views: [(&str, usize, &[usize], &[usize]); 5] = [
        // transpose of a [2, 3] block starting at element 2
        ("transposed", 2, &[3, 2], &[1, 3]),
        // permute(2, 0, 1) of a contiguous [4, 3, 2]
        ("permuted", 0, &[2, 4, 3], &[1, 6, 2]),
        // columns 1..3 of a [5, 4] matrix: unit inner stride, gaps between rows
        ("column_slice", 1, &[5, 2], &[4, 1]),
        // every other element
        ("strided", 3, &[4], &[2]),
        // broadcast (expand) dimension
        ("expanded", 5, &[3, 2], &[0, 1]),
    ];
    let items = views
        .iter()
        .map(|&(name, offset, size, stride)| {
            let spec = TensorSpec {
                storage_type: "FloatStorage",
                key: "0".into(),
                numel: 30,
                offset,
                size: size.to_vec(),
                stride: stride.to_vec(),
                parameter: false,
            };
            (name.to_string(), Node::Tensor(spec))
        })
        .collect();
    let bytes = torch_zip(
        "v",
        &pickle(&Node::OrderedDict(items), Flavour::Classic),
        &[("0", f32_bytes(&storage))],
    );
    let w = open(&write(&tmp, "views.pth", &bytes));
    assert_eq!(
        w.read_f32("transposed").unwrap(),
        [2.0 * 10.0 + 0.5, 50.5, 30.5, 60.5, 40.5, 70.5]
    );
    for (name, offset, size, stride) in views {
        assert_eq!(w.shape(name), Some(size));
        assert_bits_eq(
            &w.read_f32(name).unwrap(),
            &view(&storage, offset, size, stride),
        );
        assert!(w.contiguous_bytes(name).is_none(), "{name}");
    }
}

#[test]
fn tensors_sharing_one_storage() {
    let tmp = TempDir::new().unwrap();
    let storage = seq(10);
    let a = TensorSpec {
        numel: 10,
        ..TensorSpec::contiguous("FloatStorage", "0", &[4])
    };
    let b = TensorSpec {
        offset: 4,
        numel: 10,
        ..TensorSpec::contiguous("FloatStorage", "0", &[2, 3])
    };
    let root = Node::OrderedDict(vec![
        ("a".into(), Node::Tensor(a)),
        ("b".into(), Node::Tensor(b)),
    ]);
    let bytes = torch_zip(
        "s",
        &pickle(&root, Flavour::Classic),
        &[("0", f32_bytes(&storage))],
    );
    let w = open(&write(&tmp, "shared.pth", &bytes));
    assert_bits_eq(&w.read_f32("a").unwrap(), &storage[..4]);
    assert_bits_eq(&w.read_f32("b").unwrap(), &storage[4..]);
    assert_eq!(
        w.contiguous_bytes("b").unwrap(),
        &f32_bytes(&storage[4..])[..]
    );
}

#[test]
fn protocol_4_opcodes_and_parameters() {
    let tmp = TempDir::new().unwrap();
    let big: Vec<f32> = (0..1200).map(|i| i as f32 - 600.0).collect();
    let param = TensorSpec {
        parameter: true,
        ..TensorSpec::contiguous("FloatStorage", "7", &[40, 30])
    };
    let root = Node::OrderedDict(vec![
        ("p".into(), Node::Tensor(param)),
        (
            "q".into(),
            Node::Tensor(TensorSpec::contiguous(
                "HalfStorage",
                "key with spaces",
                &[2],
            )),
        ),
        ("steps".into(), Node::Int(123_456_789)),
    ]);
    for flavour in [Flavour::Classic, Flavour::Modern] {
        let bytes = torch_zip(
            "m",
            &pickle(&root, flavour),
            &[
                ("7", f32_bytes(&big)),
                ("key with spaces", f16_bytes(&[0.5, -4.0])),
            ],
        );
        let w = open(&write(&tmp, &format!("{flavour:?}.pt"), &bytes));
        assert_eq!(w.names(), ["p", "q"], "{flavour:?}");
        assert_bits_eq(&w.read_f32_shaped("p", &[40, 30]).unwrap(), &big);
        assert_eq!(w.read_f32("q").unwrap(), [0.5, -4.0]);
    }
}

#[test]
fn format_is_detected_from_content_not_extension() {
    let tmp = TempDir::new().unwrap();
    let st = safetensors(&[("x", "F32", &[2], f32_bytes(&[1.0, 2.0]))]);
    let w = open(&write(&tmp, "looks_like.pth", &st));
    assert_eq!(w.format(), WeightFormat::Safetensors);
    assert_eq!(w.read_f32("x").unwrap(), [1.0, 2.0]);

    let t = TensorSpec::contiguous("FloatStorage", "0", &[2]);
    let zip = torch_zip(
        "r",
        &pickle(
            &Node::OrderedDict(vec![("x".into(), Node::Tensor(t))]),
            Flavour::Classic,
        ),
        &[("0", f32_bytes(&[3.0, 4.0]))],
    );
    let w = open(&write(&tmp, "looks_like.safetensors", &zip));
    assert_eq!(w.format(), WeightFormat::TorchZip);
    assert_eq!(w.read_f32("x").unwrap(), [3.0, 4.0]);
}

#[test]
fn safetensors_header_length_looking_like_a_pickle() {
    // A header of 0x0280 bytes makes the file start 0x80 0x02, like a pickle's PROTO 2.
    let tmp = TempDir::new().unwrap();
    let mut file = safetensors(&[("x", "F32", &[1], f32_bytes(&[7.0]))]);
    let header_len = u64::from_le_bytes(file[..8].try_into().unwrap()) as usize;
    let padded = 0x0280;
    file.splice(
        8 + header_len..8 + header_len,
        std::iter::repeat_n(b' ', padded - header_len),
    );
    file[..8].copy_from_slice(&(padded as u64).to_le_bytes());
    assert_eq!(file[..2], [0x80, 0x02]);
    let w = open(&write(&tmp, "pickle_like.safetensors", &file));
    assert_eq!(w.read_f32("x").unwrap(), [7.0]);
}

#[test]
fn weight_file_is_shareable_across_threads() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<WeightFile>();
    assert_send_sync::<WeightError>();
}

#[test]
fn read_f32_shaped_reports_shape_mismatch() {
    let path = model("v11", "LQ_proj_in.ckpt");
    let w = open(&path);
    match w.read_f32_shaped("conv1.bias", &[5]) {
        Err(WeightError::Shape {
            path: p,
            key,
            expected,
            found,
        }) => {
            assert_eq!(p, path);
            assert_eq!(key, "conv1.bias");
            assert_eq!(expected, [5]);
            assert_eq!(found, [4]);
        }
        other => panic!("expected a shape error, got {other:?}"),
    }
    let msg = w
        .read_f32_shaped("conv1.bias", &[5])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("conv1.bias") && msg.contains(&path.display().to_string()),
        "{msg}"
    );
    match w.read_f32("no.such.key") {
        Err(WeightError::MissingKey { key, .. }) => assert_eq!(key, "no.such.key"),
        other => panic!("expected a missing-key error, got {other:?}"),
    }
    assert!(w.shape("no.such.key").is_none() && w.dtype("no.such.key").is_none());
}

// ---------------------------------------------------------------- corrupt inputs

fn small_safetensors() -> Vec<u8> {
    safetensors(&[
        ("a", "F32", &[2, 2], f32_bytes(&[1.0, 2.0, 3.0, 4.0])),
        ("b", "BF16", &[3], bf16_bytes(&[1.0, 2.0, 3.0])),
    ])
}

fn small_zip() -> (Vec<u8>, Vec<u8>) {
    let root = Node::OrderedDict(vec![
        (
            "w".into(),
            Node::Tensor(TensorSpec::contiguous("FloatStorage", "0", &[2, 3])),
        ),
        (
            "b".into(),
            Node::Tensor(TensorSpec::contiguous("BFloat16Storage", "1", &[3])),
        ),
    ]);
    let pkl = pickle(&root, Flavour::Classic);
    let zip = torch_zip(
        "z",
        &pkl,
        &[
            ("0", f32_bytes(&seq(6))),
            ("1", bf16_bytes(&[1.0, 2.0, 3.0])),
        ],
    );
    (pkl, zip)
}

#[test]
fn truncated_safetensors_is_an_error_at_every_length() {
    let tmp = TempDir::new().unwrap();
    let full = small_safetensors();
    open(&write(&tmp, "full.safetensors", &full));
    for cut in 0..full.len() {
        let path = write(&tmp, &format!("cut{cut}.safetensors"), &full[..cut]);
        open_err(&path);
    }
    let header_end = 8 + u64::from_le_bytes(full[..8].try_into().unwrap()) as usize;
    assert_format_err(
        &write(&tmp, "in_header.safetensors", &full[..20]),
        &["header"],
    );
    assert_format_err(
        &write(&tmp, "in_data.safetensors", &full[..header_end + 5]),
        &["truncated"],
    );
    assert_format_err(&write(&tmp, "empty.safetensors", b""), &["empty"]);
}

#[test]
fn safetensors_with_bad_headers() {
    let tmp = TempDir::new().unwrap();
    let mut garbage = 12u64.to_le_bytes().to_vec();
    garbage.extend_from_slice(b"{not json!!}");
    assert_format_err(&write(&tmp, "garbage.safetensors", &garbage), &["JSON"]);

    let header = br#"{"t":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
    let mut beyond = (header.len() as u64).to_le_bytes().to_vec();
    beyond.extend_from_slice(header);
    beyond.extend_from_slice(&[0u8; 8]);
    assert_format_err(&write(&tmp, "beyond.safetensors", &beyond), &[]);

    let f64_file = safetensors(&[("d", "F64", &[1], 1.0f64.to_le_bytes().to_vec())]);
    assert_format_err(&write(&tmp, "f64.safetensors", &f64_file), &["F64", "`d`"]);

    let mut huge = u64::MAX.to_le_bytes().to_vec();
    huge.extend_from_slice(b"{}");
    assert_format_err(&write(&tmp, "huge.safetensors", &huge), &[]);
}

#[test]
fn truncated_zip_is_an_error_at_every_length() {
    let tmp = TempDir::new().unwrap();
    let (_, full) = small_zip();
    open(&write(&tmp, "full.pth", &full));
    for cut in 1..full.len() {
        open_err(&write(&tmp, &format!("cut{cut}.pth"), &full[..cut]));
    }
    // A copy of a golden checkpoint cut in the middle of its first storage.
    let golden = std::fs::read(model("v11", "LQ_proj_in.ckpt")).unwrap();
    open_err(&write(&tmp, "lq_cut.ckpt", &golden[..golden.len() / 2]));
}

#[test]
fn zip_without_data_pkl() {
    let tmp = TempDir::new().unwrap();
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("archive/data/0", options).unwrap();
    std::io::Write::write_all(&mut zip, &[0u8; 16]).unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    assert_format_err(&write(&tmp, "nopkl.pth", &bytes), &["data.pkl"]);
}

#[test]
fn disallowed_globals_are_refused() {
    let tmp = TempDir::new().unwrap();
    let classic = b"\x80\x02cos\nsystem\nq\x00X\x04\x00\x00\x00echo\x85R.".to_vec();
    let modern = b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c\x04echo\x85R.".to_vec();
    for (i, pkl) in [classic, modern].iter().enumerate() {
        let bytes = torch_zip("evil", pkl, &[]);
        assert_format_err(
            &write(&tmp, &format!("evil{i}.pth"), &bytes),
            &["refusing to load", "os.system"],
        );
    }
    let mut p = torch_writer::Pickler::new(Flavour::Classic);
    p.global("builtins", "eval");
    let bytes = torch_zip("evil", &p.finish(), &[]);
    assert_format_err(&write(&tmp, "eval.pth", &bytes), &["builtins.eval"]);
}

#[test]
fn truncated_pickle_is_an_error_at_every_length() {
    let tmp = TempDir::new().unwrap();
    let (pkl, _) = small_zip();
    for cut in 0..pkl.len() {
        let bytes = torch_zip(
            "t",
            &pkl[..cut],
            &[
                ("0", f32_bytes(&seq(6))),
                ("1", bf16_bytes(&[1.0, 2.0, 3.0])),
            ],
        );
        open_err(&write(&tmp, &format!("pkl{cut}.pth"), &bytes));
    }
}

#[test]
fn storage_shorter_than_its_tensor() {
    let tmp = TempDir::new().unwrap();
    let (pkl, _) = small_zip();
    let bytes = torch_zip(
        "s",
        &pkl,
        &[
            ("0", f32_bytes(&seq(5))),
            ("1", bf16_bytes(&[1.0, 2.0, 3.0])),
        ],
    );
    assert_format_err(&write(&tmp, "short.pth", &bytes), &["`w`", "24 bytes"]);

    let bytes = torch_zip("s", &pkl, &[("0", f32_bytes(&seq(6)))]);
    assert_format_err(
        &write(&tmp, "missing_storage.pth", &bytes),
        &["`b`", "s/data/1"],
    );

    // A view whose strides reach past the storage although its element count fits.
    let spec = TensorSpec {
        stride: vec![1, 3],
        numel: 6,
        ..TensorSpec::contiguous("FloatStorage", "0", &[3, 3])
    };
    let pkl = pickle(
        &Node::OrderedDict(vec![("v".into(), Node::Tensor(spec))]),
        Flavour::Classic,
    );
    let bytes = torch_zip("s", &pkl, &[("0", f32_bytes(&seq(9)))]);
    open(&write(&tmp, "fits.pth", &bytes));
    let bytes = torch_zip("s", &pkl, &[("0", f32_bytes(&seq(8)))]);
    assert_format_err(&write(&tmp, "reach.pth", &bytes), &["`v`"]);

    // Shape products that overflow usize must not wrap into a small extent.
    let spec = TensorSpec {
        size: vec![1 << 40, 1 << 40],
        stride: vec![1 << 20, 1],
        ..TensorSpec::contiguous("FloatStorage", "0", &[1])
    };
    let pkl = pickle(
        &Node::OrderedDict(vec![("o".into(), Node::Tensor(spec))]),
        Flavour::Modern,
    );
    let bytes = torch_zip("s", &pkl, &[("0", f32_bytes(&seq(9)))]);
    open_err(&write(&tmp, "overflow.pth", &bytes));
}

#[test]
fn unsupported_storage_type_names_the_key() {
    let tmp = TempDir::new().unwrap();
    let root = Node::OrderedDict(vec![(
        "bn.running_var".into(),
        Node::Tensor(TensorSpec::contiguous("DoubleStorage", "0", &[2])),
    )]);
    let bytes = torch_zip(
        "d",
        &pickle(&root, Flavour::Classic),
        &[("0", vec![0u8; 16])],
    );
    assert_format_err(
        &write(&tmp, "double.pth", &bytes),
        &["DoubleStorage", "bn.running_var"],
    );
}

#[test]
fn non_weight_files_are_errors() {
    let tmp = TempDir::new().unwrap();
    assert_format_err(&write(&tmp, "empty.pth", b""), &["empty"]);

    let missing = tmp.path().join("does_not_exist.safetensors");
    match open_err(&missing) {
        WeightError::Io { path, .. } => assert_eq!(path, missing),
        other => panic!("expected an I/O error, got {other:?}"),
    }

    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let random: Vec<u8> = (0..4096)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    assert_format_err(&write(&tmp, "random.bin", &random), &[]);

    let mut legacy = vec![
        0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e,
    ];
    legacy.extend_from_slice(&[0u8; 64]);
    assert_format_err(
        &write(&tmp, "legacy.pth", &legacy),
        &["_use_new_zipfile_serialization=True", "safetensors"],
    );

    assert_format_err(
        &write(
            &tmp,
            "plain_pickle.pkl",
            b"\x80\x04\x95\x00\x00\x00\x00\x00\x00\x00\x00}.",
        ),
        &["plain pickle", "safetensors"],
    );

    assert_format_err(
        &write(&tmp, "dangling.pth", b"../nowhere/model.pth"),
        &["does not exist"],
    );

    assert_format_err(
        &write(
            &tmp,
            "list_root.pth",
            &torch_zip("l", b"\x80\x02]q\x00.", &[]),
        ),
        &["list"],
    );
}

#[test]
fn hostile_pickles_are_bounded() {
    let tmp = TempDir::new().unwrap();
    // 100k nested 1-tuples: must be refused, not overflow the stack when dropped.
    let mut nested = b"\x80\x02)".to_vec();
    nested.extend(std::iter::repeat_n(0x85u8, 100_000));
    nested.push(b'.');
    assert_format_err(
        &write(&tmp, "nested.pth", &torch_zip("n", &nested, &[])),
        &["nested"],
    );

    // A list appended to itself would make a cycle.
    let cycle = b"\x80\x02]q\x00h\x00a.".to_vec();
    open_err(&write(&tmp, "cycle.pth", &torch_zip("c", &cycle, &[])));

    // A dict shared at every level names 2^60 paths.
    let mut dag = b"\x80\x02}q\x00".to_vec();
    for i in 1..=60u8 {
        dag.extend_from_slice(b"}(X\x01\x00\x00\x00ah");
        dag.push(i - 1);
        dag.extend_from_slice(b"X\x01\x00\x00\x00bh");
        dag.push(i - 1);
        dag.extend_from_slice(&[b'u', b'q', i]);
    }
    dag.push(b'.');
    open_err(&write(&tmp, "dag.pth", &torch_zip("d", &dag, &[])));

    // Opcodes outside the supported set.
    open_err(&write(
        &tmp,
        "pop_empty.pth",
        &torch_zip("p", b"\x80\x020.", &[]),
    ));
    open_err(&write(
        &tmp,
        "unknown_op.pth",
        &torch_zip("p", b"\x80\x02\xff.", &[]),
    ));
    open_err(&write(
        &tmp,
        "bad_get.pth",
        &torch_zip("p", b"\x80\x02h\x09.", &[]),
    ));
}

#[test]
fn corrupted_bytes_never_panic() {
    let tmp = TempDir::new().unwrap();
    let (_, zip) = small_zip();
    let st = small_safetensors();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let path = tmp.path().join("fuzz.bin");
    for round in 0..600 {
        let mut bytes = if round % 2 == 0 {
            zip.clone()
        } else {
            st.clone()
        };
        for _ in 0..1 + next() % 4 {
            let at = (next() % bytes.len() as u64) as usize;
            bytes[at] = next() as u8;
        }
        std::fs::write(&path, &bytes).unwrap();
        match WeightFile::open(&path) {
            Ok(w) => {
                for name in w.names() {
                    let _ = w.read_f32(name);
                }
            }
            Err(e) => assert!(e.to_string().contains(&path.display().to_string()), "{e}"),
        }
    }
}
