//! Weight files that do not fit the architecture: a missing, unexpected or mis-shaped key is an
//! error naming the file and the key; widths, heads and layers come from the shapes.

mod golden;

use std::collections::HashMap;
use std::path::Path;

use flashvsr_model::dit::Dit;
use flashvsr_model::lq_proj::{LqProjector, ProjectorVersion};
use flashvsr_model::weights::WeightFile;
use flashvsr_tensor::cpu::CpuBackend;
use safetensors::tensor::TensorView;

const DIT: &str = "diffusion_pytorch_model_streaming_dmd.safetensors";

/// The golden DiT with `edit` applied to its (name → (shape, f32 bytes)) map, written to `dst`.
fn edited_dit(dst: &Path, edit: impl FnOnce(&mut HashMap<String, (Vec<usize>, Vec<u8>)>)) {
    let src = golden::golden_dir()
        .join("models/flashvsr_v11_small")
        .join(DIT);
    let bytes = std::fs::read(src).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut map: HashMap<String, (Vec<usize>, Vec<u8>)> = st
        .tensors()
        .into_iter()
        .map(|(k, v)| (k, (v.shape().to_vec(), v.data().to_vec())))
        .collect();
    edit(&mut map);
    let views: Vec<(String, TensorView)> = map
        .iter()
        .map(|(k, (s, d))| {
            (
                k.clone(),
                TensorView::new(safetensors::Dtype::F32, s.clone(), d).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, dst).unwrap();
}

fn load_dit(path: &Path) -> Result<Dit, String> {
    let prompt = golden::golden_dir().join("models/flashvsr_v11_small/posi_prompt.pth");
    let backend = CpuBackend::new_ref();
    Dit::load(
        &backend,
        &WeightFile::open(path).unwrap(),
        &WeightFile::open(&prompt).unwrap(),
    )
    .map_err(|e| e.to_string())
}

#[test]
fn dit_config_comes_from_shapes() {
    let dir = golden::golden_dir().join("models/flashvsr_v11_small");
    let dit = load_dit(&dir.join(DIT)).unwrap();
    assert_eq!(
        (dit.config.dim, dit.config.heads, dit.config.layers),
        (256, 2, 2)
    );
    assert_eq!(
        (dit.config.ffn_dim, dit.config.text_dim, dit.config.freq_dim),
        (256, 64, 256)
    );
}

#[test]
fn missing_key_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("dit.safetensors");
    edited_dit(&path, |m| {
        m.remove("blocks.1.ffn.2.bias");
    });
    let err = load_dit(&path).err().expect("load must fail");
    assert!(
        err.contains("blocks.1.ffn.2.bias") && err.contains("dit.safetensors"),
        "{err}"
    );
}

#[test]
fn unexpected_key_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("dit.safetensors");
    edited_dit(&path, |m| {
        m.insert("img_emb.proj.weight".into(), (vec![2], vec![0; 8]));
    });
    let err = load_dit(&path).err().expect("load must fail");
    assert!(
        err.contains("img_emb.proj.weight") && err.contains("dit.safetensors"),
        "{err}"
    );
}

#[test]
fn mis_shaped_key_is_named_with_both_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("dit.safetensors");
    edited_dit(&path, |m| {
        m.insert(
            "blocks.0.self_attn.q.bias".into(),
            (vec![255], vec![0; 255 * 4]),
        );
    });
    let err = load_dit(&path).err().expect("load must fail");
    assert!(
        err.contains("blocks.0.self_attn.q.bias") && err.contains("255") && err.contains("256"),
        "{err}"
    );
}

#[test]
fn width_not_a_multiple_of_the_head_width_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("dit.safetensors");
    edited_dit(&path, |m| {
        m.insert(
            "patch_embedding.weight".into(),
            (vec![200, 16, 1, 2, 2], vec![0; 200 * 64 * 4]),
        );
    });
    let err = load_dit(&path).err().expect("load must fail");
    assert!(err.contains("200") && err.contains("128"), "{err}");
}

#[test]
fn projector_given_a_dit_file_names_the_missing_key() {
    let dir = golden::golden_dir().join("models/flashvsr_v11_small");
    let backend = CpuBackend::new_ref();
    let err = LqProjector::load(
        &backend,
        &WeightFile::open(&dir.join(DIT)).unwrap(),
        ProjectorVersion::V1_1,
    )
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("conv1.weight") && err.contains(DIT), "{err}");
}
