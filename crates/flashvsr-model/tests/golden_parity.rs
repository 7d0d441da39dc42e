//! Parity of every module against the float64 reference tensors in ../shared/golden
//! (spec §12, §14): masks identical, every other tensor within 1e-4 relative L2.

mod golden;

use std::path::Path;

use flashvsr_model::color_fix;
use flashvsr_model::dit::mask::{local_window_mask, AttentionMode, SparseSettings};
use flashvsr_model::dit::Dit;
use flashvsr_model::geometry::{chunk_count, chunk_latents, chunk_output_frames};
use flashvsr_model::lq_proj::{LqProjector, ProjectorState, ProjectorVersion};
use flashvsr_model::tcdecoder::TcDecoder;
use flashvsr_model::vae::WanVaeDecoder;
use flashvsr_model::vae_tiling::{TiledVaeState, VaeTiling};
use flashvsr_model::weights::WeightFile;
use flashvsr_tensor::{BackendRef, BlockMask, Tensor};
use golden::{case, rel_l2, select_frames, Case};

/// 1e-4 relative L2 in fp32 (spec §12); 2e-2 in the fast mode (issue: bf16 ≤ 2e-2).
fn tol() -> f64 {
    if golden::fast_mode() {
        2e-2
    } else {
        1e-4
    }
}

fn open(dir: &Path, name: &str) -> WeightFile {
    WeightFile::open(&dir.join(name)).unwrap()
}

fn load_dit(backend: &BackendRef, dir: &Path) -> Dit {
    Dit::load(
        backend,
        &open(dir, "diffusion_pytorch_model_streaming_dmd.safetensors"),
        &open(dir, "posi_prompt.pth"),
    )
    .unwrap()
}

fn version(c: &Case) -> ProjectorVersion {
    match c.json["lq_version"].as_str().unwrap() {
        "1.0" => ProjectorVersion::V1_0,
        _ => ProjectorVersion::V1_1,
    }
}

/// LQ tokens per chunk, computed by our projector from the prepared LQ video.
fn projector_features(
    backend: &BackendRef,
    c: &Case,
    frames: &[Vec<f32>],
    h: usize,
    w: usize,
) -> Vec<Vec<f32>> {
    let proj = LqProjector::load(
        backend,
        &open(&c.model_dir(), "LQ_proj_in.ckpt"),
        version(c),
    )
    .unwrap();
    let clip = |first: usize, n: usize| {
        let mut v = Vec::new();
        for ch in 0..3 {
            for f in &frames[first..first + n] {
                v.extend_from_slice(&f[ch * h * w..(ch + 1) * h * w]);
            }
        }
        Tensor::from_slice(backend, &v, &[3, n, h, w]).unwrap()
    };
    let mut state = ProjectorState::default();
    proj.warm_up(&clip(0, 1), &mut state).unwrap();
    let mut feats = Vec::new();
    let latents = (frames.len() - 1) / 4;
    let mut per_latent = Vec::new();
    for j in 0..latents {
        per_latent.push(
            proj.step(&clip(4 * j + 1, 4), &mut state)
                .unwrap()
                .to_vec()
                .unwrap(),
        );
    }
    for chunk in 0..chunk_count(frames.len()) {
        let (l0, n) = chunk_latents(chunk);
        feats.push(per_latent[l0..l0 + n].concat());
    }
    feats
}

fn sparse_settings(c: &Case, h: usize, w: usize) -> SparseSettings {
    let mode = if c.json["variant"] == "ultra_tiny" {
        AttentionMode::Sage
    } else {
        AttentionMode::Block
    };
    let s = SparseSettings::new(
        mode,
        c.knob("sparse_ratio"),
        c.knob("kv_ratio"),
        c.knob("local_range") as usize,
        h,
        w,
    )
    .unwrap();
    assert_eq!(s.topk, c.knob("topk") as i64, "{}: topk", c.name);
    s
}

fn golden_mask(c: &Case, chunk: usize, layer: usize, settings: &SparseSettings) -> BlockMask {
    let m = c.get(&format!("masks_{chunk}"));
    let (heads, nq, nk) = (m.shape[1], m.shape[2], m.shape[3]);
    let per_layer = heads * nq * nk;
    BlockMask {
        heads,
        query_blocks: nq,
        key_blocks: nk,
        query_block: 128,
        key_block: settings.mode.key_block(),
        selected: m.u8[layer * per_layer..(layer + 1) * per_layer].to_vec(),
    }
}

/// Runs every DiT chunk of a case twice (own masks, injected golden masks) and checks masks and
/// head outputs. Returns the head outputs of the own-mask run.
fn check_dit(name: &str) -> Vec<Vec<f32>> {
    let backend = golden::backend();
    let c = case(name);
    let inputs = c.inputs();
    let (frames, plan) = golden::prepared_lq(&inputs, c.crop_to_128());
    let (w, h) = plan.model;
    let feats: Vec<Vec<f32>> = if c.tensors.contains_key("lq_feat_0")
        || inputs.tensors.contains_key("lq_feat_0") && version(&c) == version(&inputs)
    {
        let src = if c.tensors.contains_key("lq_feat_0") {
            &c
        } else {
            &inputs
        };
        (0..chunk_count(frames.len()))
            .map(|k| src.get(&format!("lq_feat_{k}")).f32.clone())
            .collect()
    } else {
        projector_features(&backend, &c, &frames, h, w)
    };
    let dit = load_dit(&backend, &c.model_dir());
    let settings = sparse_settings(&c, h, w);
    let noise = inputs.get("noise");
    let (t, rows, cols) = (noise.shape[2], noise.shape[3], noise.shape[4]);
    let noise_slice = |l0: usize, n: usize| {
        let plane = rows * cols;
        let mut v = Vec::new();
        for ch in 0..16 {
            v.extend_from_slice(&noise.f32[(ch * t + l0) * plane..(ch * t + l0 + n) * plane]);
        }
        Tensor::from_slice(&backend, &v, &[16, n, rows, cols]).unwrap()
    };
    let mut outs = Vec::new();
    for inject in [false, true] {
        let mut state = dit.new_state();
        for (chunk, feat) in feats.iter().enumerate() {
            let (l0, n) = chunk_latents(chunk);
            let lq = Tensor::from_slice(
                &backend,
                feat,
                &[feat.len() / dit.config.dim, dit.config.dim],
            )
            .unwrap();
            let injected: Option<Vec<BlockMask>> = inject.then(|| {
                (0..dit.config.layers)
                    .map(|l| golden_mask(&c, chunk, l, &settings))
                    .collect()
            });
            let out = dit
                .forward_chunk(
                    &noise_slice(l0, n),
                    &lq,
                    l0,
                    &mut state,
                    &settings,
                    injected.as_deref(),
                )
                .unwrap();
            if !inject {
                for (layer, m) in out.masks.iter().enumerate() {
                    let g = golden_mask(&c, chunk, layer, &settings);
                    let m = BlockMask::from_tensor(m, g.query_block, g.key_block).unwrap();
                    assert_eq!(
                        (m.heads, m.query_blocks, m.key_blocks),
                        (g.heads, g.query_blocks, g.key_blocks),
                        "{name}: chunk {chunk} layer {layer}: mask shape"
                    );
                    let diff = m
                        .selected
                        .iter()
                        .zip(&g.selected)
                        .filter(|(a, b)| a != b)
                        .count();
                    // Fast mode: at least 95 % of the blocks identical (issue bound for bf16).
                    let allowed = if golden::fast_mode() {
                        m.selected.len() / 20
                    } else {
                        0
                    };
                    assert!(
                        diff <= allowed,
                        "{name}: chunk {chunk} layer {layer}: {diff} mask blocks differ"
                    );
                }
            }
            let v = out.velocity.to_vec().unwrap();
            let err = rel_l2(&v, &c.get(&format!("head_out_{chunk}")).f32);
            // The measured error, for reports (shown with --nocapture).
            println!("{name}: head_out_{chunk} rel L2 {err:.3e} (injected masks: {inject})");
            assert!(
                err <= tol(),
                "{name}: head_out_{chunk} rel L2 {err:e} (injected masks: {inject})"
            );
            if !inject {
                outs.push(v);
            }
        }
    }
    outs
}

#[test]
fn time_conditioning_matches() {
    let backend = golden::backend();
    let c = case("tiny_block_v11");
    let dit = load_dit(&backend, &c.model_dir());
    assert!(rel_l2(&dit.t_emb, &c.get("t_emb").f32) <= tol());
    assert!(rel_l2(&dit.t_mod, &c.get("t_mod").f32) <= tol());
}

#[test]
fn local_window_masks_match_units() {
    let c = case("units");
    let mut checked = 0;
    for (key, stored) in &c.tensors {
        let parts: Vec<usize> = key
            .trim_start_matches("local_mask_")
            .split('_')
            .map(|p| p[1..].parse().unwrap())
            .collect();
        let ours: Vec<u8> = local_window_mask(parts[0], parts[1], parts[2])
            .into_iter()
            .map(u8::from)
            .collect();
        assert_eq!(ours, stored.u8, "{key}");
        checked += 1;
    }
    assert_eq!(checked, 7);
}

#[test]
fn projector_features_match_v11_and_v10() {
    let backend = golden::backend();
    let base = case("tiny_block_v11");
    let (frames, plan) = golden::prepared_lq(&base, false);
    let (w, h) = plan.model;
    for name in ["tiny_block_v11", "tiny_block_v10"] {
        let c = case(name);
        let feats = projector_features(&backend, &c, &frames, h, w);
        assert_eq!(feats.len(), 3);
        for (k, f) in feats.iter().enumerate() {
            let err = rel_l2(f, &c.get(&format!("lq_feat_{k}")).f32);
            assert!(err <= tol(), "{name}: lq_feat_{k} rel L2 {err:e}");
        }
    }
}

#[test]
fn dit_tiny_block_v11() {
    check_dit("tiny_block_v11");
}

#[test]
fn dit_tiny_sage_v11() {
    check_dit("tiny_sage_v11");
}

#[test]
fn dit_tiny_block_v10() {
    check_dit("tiny_block_v10");
}

#[test]
fn dit_full_block_v11() {
    check_dit("full_block_v11");
}

#[test]
fn dit_and_decoder_crop_case() {
    let name = "tiny_block_v11_crop72x40";
    let head = check_dit(name);
    let c = case(name);
    let backend = golden::backend();
    let (frames, plan) = golden::prepared_lq(&c, true);
    let (w, h) = plan.model;
    // Preparation is bit-exact: PIL bicubic ×4 in uint8 and the centre crop (lq_up_sel).
    let up = c.get("lq_up_sel");
    let expected: Vec<f32> = (0..3)
        .flat_map(|ch| (0..h * w).map(move |p| (ch, p)))
        .map(|(ch, p)| up.u8[p * 3 + ch] as f32 / 255.0 * 2.0 - 1.0)
        .collect();
    assert_eq!(
        frames[0], expected,
        "prepared LQ frame 0 differs from lq_up_sel"
    );
    let tc = TcDecoder::load(&backend, &open(&c.model_dir(), "TCDecoder.ckpt")).unwrap();
    let decoded = decode_tiny(&backend, &tc, &c, &head, &frames, h, w);
    let finals = adain_frames(
        &decoded,
        &frames,
        &c.frame_indices("final_adain_sel"),
        h * w,
    );
    let err = rel_l2(&finals, &c.get("final_adain_sel").f32);
    assert!(err <= tol(), "{name}: final_adain_sel rel L2 {err:e}");
}

/// Latents `noise − head_out` per chunk, decoded chunk by chunk; returns decoded frames (3, H, W).
fn decode_tiny(
    backend: &BackendRef,
    tc: &TcDecoder,
    c: &Case,
    head: &[Vec<f32>],
    frames: &[Vec<f32>],
    h: usize,
    w: usize,
) -> Vec<Vec<f32>> {
    let noise = c.get("noise");
    let (t, rows, cols) = (noise.shape[2], noise.shape[3], noise.shape[4]);
    let plane = rows * cols;
    let mut memory = tc.new_memory();
    let mut out = Vec::new();
    for (chunk, v) in head.iter().enumerate() {
        let (l0, n) = chunk_latents(chunk);
        let mut lat = Vec::new();
        for ch in 0..16 {
            for f in 0..n {
                let z = &noise.f32[(ch * t + l0 + f) * plane..][..plane];
                let vel = &v[(ch * n + f) * plane..][..plane];
                lat.extend(z.iter().zip(vel).map(|(a, b)| a - b));
            }
        }
        let lat = Tensor::from_slice(backend, &lat, &[16, n, rows, cols]).unwrap();
        let (o0, on) = chunk_output_frames(chunk);
        let mut cond = Vec::new();
        for ch in 0..3 {
            for f in &frames[o0..o0 + on] {
                cond.extend_from_slice(&f[ch * h * w..(ch + 1) * h * w]);
            }
        }
        let cond = Tensor::from_slice(backend, &cond, &[3, on, h, w]).unwrap();
        let y = tc.decode(&lat, &cond, &mut memory).unwrap();
        assert_eq!(y.dim(1), on);
        let y = y.to_vec().unwrap();
        out.extend(per_frame(&y, on, h * w));
    }
    out
}

fn adain_frames(
    decoded: &[Vec<f32>],
    lq: &[Vec<f32>],
    indices: &[usize],
    plane: usize,
) -> Vec<f32> {
    let fixed: Vec<Vec<f32>> = indices
        .iter()
        .map(|&i| {
            let mut f = decoded[i].clone();
            color_fix::adain(&mut f, &lq[i]);
            f
        })
        .collect();
    select_frames(&fixed, &(0..indices.len()).collect::<Vec<_>>(), plane)
}

/// `(3, n, H, W)` channel-major pixels → n frames of `(3, H, W)`.
fn per_frame(y: &[f32], n: usize, plane: usize) -> Vec<Vec<f32>> {
    (0..n)
        .map(|f| {
            (0..3)
                .flat_map(|ch| y[(ch * n + f) * plane..][..plane].to_vec())
                .collect()
        })
        .collect()
}

/// The stored decoder frames and the AdaIN-fixed final frames of a case.
fn check_decoded_and_final(c: &Case, decoded: &[Vec<f32>], lq: &[Vec<f32>], plane: usize) {
    let sel = select_frames(decoded, &c.frame_indices("decoded_sel"), plane);
    let err = rel_l2(&sel, &c.get("decoded_sel").f32);
    assert!(err <= tol(), "decoded_sel rel L2 {err:e}");
    let finals = adain_frames(decoded, lq, &c.frame_indices("final_adain_sel"), plane);
    let err = rel_l2(&finals, &c.get("final_adain_sel").f32);
    assert!(err <= tol(), "final_adain_sel rel L2 {err:e}");
}

#[test]
fn tcdecoder_and_adain_match() {
    let backend = golden::backend();
    let c = case("tiny_block_v11");
    let (frames, plan) = golden::prepared_lq(&c, false);
    let (w, h) = plan.model;
    let head: Vec<Vec<f32>> = (0..3)
        .map(|k| c.get(&format!("head_out_{k}")).f32.clone())
        .collect();
    let tc = TcDecoder::load(&backend, &open(&c.model_dir(), "TCDecoder.ckpt")).unwrap();
    let decoded = decode_tiny(&backend, &tc, &c, &head, &frames, h, w);
    assert_eq!(decoded.len(), 37);
    check_decoded_and_final(&c, &decoded, &frames, h * w);
}

#[test]
fn wan_vae_untiled_tiled_and_colour_fixes_match() {
    let backend = golden::backend();
    let c = case("full_block_v11");
    let (frames, plan) = golden::prepared_lq(&c, false);
    let (w, h) = plan.model;
    let noise = c.get("noise");
    let head = c.get("head_out_0");
    let (t, rows, cols) = (noise.shape[2], noise.shape[3], noise.shape[4]);
    let lat: Vec<f32> = noise
        .f32
        .iter()
        .zip(&head.f32)
        .map(|(a, b)| a - b)
        .collect();
    let lat = Tensor::from_slice(&backend, &lat, &[16, t, rows, cols]).unwrap();
    let vae = WanVaeDecoder::load(&backend, &open(&c.model_dir(), "Wan2.1_VAE.pth")).unwrap();

    let y_t = vae
        .decode(&lat, &mut vae.new_state())
        .unwrap()
        .clamp(-1.0, 1.0)
        .unwrap();
    let n = y_t.dim(1);
    assert_eq!(n, 21);
    let y = y_t.to_vec().unwrap();
    let decoded: Vec<Vec<f32>> = per_frame(&y, n, h * w);
    check_decoded_and_final(&c, &decoded, &frames, h * w);

    let wavelet: Vec<Vec<f32>> = (0..4)
        .map(|i| {
            let mut f = decoded[i].clone();
            color_fix::wavelet(&mut f, &frames[i], h, w);
            f
        })
        .collect();
    let err = rel_l2(
        &select_frames(&wavelet, &[0, 1, 2, 3], h * w),
        &c.get("final_wavelet_first4").f32,
    );
    assert!(err <= tol(), "final_wavelet_first4 rel L2 {err:e}");

    // The same fix on the backend, the four frames as one chunk (the engine's path when the LQ
    // frames are on the decoder's device).
    let mut lq4 = Vec::with_capacity(12 * h * w);
    for ch in 0..3 {
        for f in &frames[..4] {
            lq4.extend_from_slice(&f[ch * h * w..(ch + 1) * h * w]);
        }
    }
    let lq4 = Tensor::from_slice(&backend, &lq4, &[3, 4, h, w]).unwrap();
    let fixed = color_fix::wavelet_on_device(&y_t.narrow(1, 0, 4).unwrap(), &lq4)
        .unwrap()
        .to_vec()
        .unwrap();
    let err = rel_l2(
        &select_frames(&per_frame(&fixed, 4, h * w), &[0, 1, 2, 3], h * w),
        &c.get("final_wavelet_first4").f32,
    );
    assert!(
        err <= tol(),
        "final_wavelet_first4 on the backend: rel L2 {err:e}"
    );

    let tiling = VaeTiling {
        tile: (8, 8),
        stride: (4, 4),
    };
    let mut tiled = TiledVaeState::new(&vae, tiling, rows, cols);
    assert_eq!(tiled.tile_count(), 9);
    let (pixels, frames_out) = tiled.decode(&vae, &lat).unwrap();
    assert_eq!(frames_out, 21);
    let tiled_frames: Vec<Vec<f32>> = per_frame(&pixels, n, h * w);
    let sel = select_frames(&tiled_frames, &c.frame_indices("decoded_tiled_vae"), h * w);
    let err = rel_l2(&sel, &c.get("decoded_tiled_vae").f32);
    assert!(err <= tol(), "decoded_tiled_vae rel L2 {err:e}");
}

#[test]
fn vae_streaming_equals_whole_sequence() {
    let backend = golden::backend();
    let c = case("full_block_v11");
    let noise = c.get("noise");
    let (t, rows, cols) = (noise.shape[2], noise.shape[3], noise.shape[4]);
    let lat = Tensor::from_slice(&backend, &noise.f32, &[16, t, rows, cols]).unwrap();
    let vae = WanVaeDecoder::load(&backend, &open(&c.model_dir(), "Wan2.1_VAE.pth")).unwrap();
    let whole = vae
        .decode(&lat, &mut vae.new_state())
        .unwrap()
        .to_vec()
        .unwrap();
    let mut state = vae.new_state();
    let a = vae
        .decode(&lat.narrow(1, 0, 2).unwrap(), &mut state)
        .unwrap();
    let b = vae
        .decode(&lat.narrow(1, 2, t - 2).unwrap(), &mut state)
        .unwrap();
    let streamed = Tensor::cat(&[&a, &b], 1).unwrap().to_vec().unwrap();
    // TF32 GEMMs of different shapes round differently; exact fp32 must agree to rounding.
    let bound = if golden::fast_mode() { tol() } else { 1e-6 };
    let err = rel_l2(&streamed, &whole);
    assert!(
        err < bound,
        "streamed vs whole rel L2 {err:e} (bound {bound:e})"
    );
}
