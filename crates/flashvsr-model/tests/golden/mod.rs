//! Access to ../shared/golden (or $FLASHVSR_GOLDEN): cases, stored tensors, prepared LQ frames.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::PathBuf;

use flashvsr_media::prepare::{
    frame_levels, pil_levels_plan, prepare_frame, PrepareGeometry, Resampler,
};
use flashvsr_media::{Frame, FrameData};
use flashvsr_model::geometry::SizePlan;
use serde_json::Value;

/// The backend the parity tests run on: the CPU, or CUDA device 0 with FLASHVSR_TEST_DEVICE=cuda
/// (run on a GPU machine; the CUDA libraries must be on LD_LIBRARY_PATH). On CUDA the parity mode
/// is exact fp32; FLASHVSR_TEST_PRECISION=fast tests the fast mode (TF32 GEMMs, bf16 attention).
pub fn backend() -> flashvsr_tensor::BackendRef {
    match std::env::var("FLASHVSR_TEST_DEVICE").as_deref() {
        Ok("cuda") => {
            use flashvsr_cuda::{CudaBackend, CudaOptions};
            let fast = fast_mode();
            let options = CudaOptions::from_env().with_fast_mode(fast);
            CudaBackend::create(0, options).expect("FLASHVSR_TEST_DEVICE=cuda but CUDA failed")
        }
        _ => flashvsr_tensor::cpu::CpuBackend::new_ref(),
    }
}

/// True when the suite checks the fast (reduced precision) mode against its looser bounds.
#[allow(dead_code)]
pub fn fast_mode() -> bool {
    std::env::var("FLASHVSR_TEST_PRECISION").as_deref() == Ok("fast")
}

pub fn golden_dir() -> PathBuf {
    let dir = std::env::var_os("FLASHVSR_GOLDEN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/golden"
            ))
        });
    assert!(
        dir.join("README.md").is_file(),
        "golden data not found at {} (set FLASHVSR_GOLDEN)",
        dir.display()
    );
    dir
}

pub struct Stored {
    pub shape: Vec<usize>,
    pub f32: Vec<f32>,
    pub u8: Vec<u8>,
}

pub struct Case {
    pub name: String,
    pub json: Value,
    pub tensors: HashMap<String, Stored>,
}

pub fn case(name: &str) -> Case {
    let dir = golden_dir().join(name);
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("case.json")).unwrap()).unwrap();
    let bytes = std::fs::read(dir.join("outputs.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors = HashMap::new();
    for (key, view) in st.tensors() {
        let data = view.data();
        let stored = match view.dtype() {
            safetensors::Dtype::F32 => Stored {
                shape: view.shape().to_vec(),
                f32: data
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
                u8: Vec::new(),
            },
            safetensors::Dtype::U8 => Stored {
                shape: view.shape().to_vec(),
                f32: data.iter().map(|&v| v as f32).collect(),
                u8: data.to_vec(),
            },
            other => panic!("unexpected dtype {other:?} for {key}"),
        };
        tensors.insert(key, stored);
    }
    Case {
        name: name.to_string(),
        json,
        tensors,
    }
}

impl Case {
    pub fn get(&self, key: &str) -> &Stored {
        self.tensors
            .get(key)
            .unwrap_or_else(|| panic!("{}: no tensor {key}", self.name))
    }

    pub fn knob(&self, key: &str) -> f64 {
        self.json["knobs"][key].as_f64().unwrap()
    }

    pub fn frame_indices(&self, key: &str) -> Vec<usize> {
        self.json["frame_indices"][key]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect()
    }

    /// The case whose lr_frames and noise this case uses.
    pub fn inputs(&self) -> Case {
        match self.json["inputs_from"].as_str() {
            Some(other) => case(other),
            None => case(&self.name),
        }
    }

    pub fn model_dir(&self) -> PathBuf {
        golden_dir().join(self.json["model_dir"].as_str().unwrap())
    }

    pub fn crop_to_128(&self) -> bool {
        self.name.contains("crop")
    }
}

pub fn rel_l2(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    let num: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    let den: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// The prepared LQ video of a case: F frames `(3, H, W)` in [-1, 1] and the plan.
pub fn prepared_lq(inputs: &Case, crop_to_128: bool) -> (Vec<Vec<f32>>, SizePlan) {
    let lr = inputs.get("lr_frames");
    let (n, h0, w0) = (lr.shape[0], lr.shape[1], lr.shape[2]);
    let plan = SizePlan::new((w0, h0), 4, crop_to_128).unwrap();
    let geometry = PrepareGeometry {
        scaled: plan.scaled,
        model: plan.model,
        crop_offset: plan.crop_offset,
    };
    let f = flashvsr_model::geometry::padded_frame_count(n);
    let frames = (0..f)
        .map(|i| {
            let src = i.min(n - 1);
            let frame = Frame {
                width: w0,
                height: h0,
                bit_depth: 8,
                data: FrameData::U8(lr.u8[src * h0 * w0 * 3..(src + 1) * h0 * w0 * 3].to_vec()),
            };
            prepare_frame(&frame, &geometry, Resampler::Pil)
        })
        .collect();
    (frames, plan)
}

/// The frames of `prepared_lq(inputs, false)` as their source levels, for the engine to
/// resample on its device.
pub fn lq_levels(inputs: &Case) -> Vec<flashvsr_model::lq_frame::LqInput> {
    use flashvsr_model::lq_frame::{LevelsGeometry, LqInput, ResampleTaps, SourceLevels};
    use flashvsr_tensor::{CanvasWindow, FixedTaps};
    let lr = inputs.get("lr_frames");
    let (n, h0, w0) = (lr.shape[0], lr.shape[1], lr.shape[2]);
    let plan = SizePlan::new((w0, h0), 4, false).unwrap();
    let geometry = PrepareGeometry {
        scaled: plan.scaled,
        model: plan.model,
        crop_offset: plan.crop_offset,
    };
    let taps = pil_levels_plan((w0, h0), &geometry, Resampler::Pil).unwrap();
    let fixed = |t: flashvsr_media::resize::PilTaps| {
        FixedTaps::new(t.ksize, t.start, t.count, t.coeffs).unwrap()
    };
    let taps =
        ResampleTaps::new((w0, h0), fixed(taps.x), fixed(taps.y), taps.precision_bits).unwrap();
    let geometry = LevelsGeometry {
        taps: std::sync::Arc::new(taps),
        window: CanvasWindow {
            origin: plan.crop_offset,
            size: plan.model,
        },
    };
    let f = flashvsr_model::geometry::padded_frame_count(n);
    (0..f)
        .map(|i| {
            let src = i.min(n - 1);
            let frame = Frame::from_u8(w0, h0, lr.u8[src * h0 * w0 * 3..][..h0 * w0 * 3].to_vec());
            LqInput::Levels(SourceLevels {
                levels: std::sync::Arc::new(frame_levels(&frame).unwrap()),
                geometry: geometry.clone(),
            })
        })
        .collect()
}

/// Channel-major selection of frames from a `(3, T, H, W)` stored tensor, as `(3, n, H, W)`.
pub fn select_frames(all: &[Vec<f32>], indices: &[usize], plane: usize) -> Vec<f32> {
    let mut out = Vec::new();
    for c in 0..3 {
        for &i in indices {
            out.extend_from_slice(&all[i][c * plane..(c + 1) * plane]);
        }
    }
    out
}

/// The small v1.1 model set of the golden data on `backend`, with the decoder `decoder` makes
/// from the set's files (opened by name).
pub fn small_v11_models(
    backend: &flashvsr_tensor::BackendRef,
    decoder: impl FnOnce(
        &dyn Fn(&str) -> flashvsr_model::weights::WeightFile,
    ) -> flashvsr_model::pipeline::Decoder,
) -> flashvsr_model::pipeline::Models {
    use flashvsr_model::lq_proj::{LqProjector, ProjectorVersion};
    use flashvsr_model::weights::WeightFile;
    let dir = golden_dir().join("models/flashvsr_v11_small");
    let open = |n: &str| WeightFile::open(&dir.join(n)).unwrap();
    flashvsr_model::pipeline::Models {
        dit: flashvsr_model::dit::Dit::load(
            backend,
            &open("diffusion_pytorch_model_streaming_dmd.safetensors"),
            &open("posi_prompt.pth"),
        )
        .unwrap(),
        projector: LqProjector::load(backend, &open("LQ_proj_in.ckpt"), ProjectorVersion::V1_1)
            .unwrap(),
        decoder: decoder(&open),
    }
}
