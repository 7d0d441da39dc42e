//! Tiled DiT against the untiled stream (same model, same noise): no dark border, and the seams
//! measured (mean |gradient| across tile boundaries vs elsewhere).

mod golden;

use flashvsr_model::color_fix::ColorFix;
use flashvsr_model::dit::mask::{AttentionMode, SparseSettings};
use flashvsr_model::dit::Dit;
use flashvsr_model::lq_proj::{LqProjector, ProjectorVersion};
use flashvsr_model::noise::NoiseSource;
use flashvsr_model::pipeline::{Decoder, Engine, EngineSettings, Models};
use flashvsr_model::stream::FrameStream;
use flashvsr_model::tcdecoder::TcDecoder;
use flashvsr_model::tiled::{TileLayout, TiledEngine};
use flashvsr_model::weights::WeightFile;

fn settings(h: usize, w: usize) -> EngineSettings {
    EngineSettings {
        sparse: SparseSettings::new(AttentionMode::Block, 2.0, 3.0, 11, h, w).unwrap(),
        color_fix: ColorFix::AdaIn,
        noise: NoiseSource::Seeded(3),
        injected_masks: None,
        profile: false,
    }
}

/// A frame out of a stream, colour fix applied.
struct Finished {
    index: usize,
    pixels: Vec<f32>,
}

fn run(stream: &mut dyn FrameStream, frames: &[Vec<f32>]) -> Vec<Finished> {
    let mut out = Vec::new();
    for f in frames {
        out.extend(stream.push(f.clone()).unwrap());
    }
    out.extend(stream.finish(frames.len()).unwrap());
    out.into_iter()
        .map(|f| Finished {
            index: f.index,
            pixels: f.finish().unwrap(),
        })
        .collect()
}

#[test]
fn tiled_output_has_no_dark_border_and_bounded_seams() {
    let backend = golden::backend();
    let dir = golden::golden_dir().join("models/flashvsr_v11_small");
    let open = |n: &str| WeightFile::open(&dir.join(n)).unwrap();
    let models = Models {
        dit: Dit::load(
            &backend,
            &open("diffusion_pytorch_model_streaming_dmd.safetensors"),
            &open("posi_prompt.pth"),
        )
        .unwrap(),
        projector: LqProjector::load(&backend, &open("LQ_proj_in.ckpt"), ProjectorVersion::V1_1)
            .unwrap(),
        decoder: Decoder::Tiny(TcDecoder::load(&backend, &open("TCDecoder.ckpt")).unwrap()),
    };
    // 96×32 input ×4 → 384×128 canvas; tiles of 128 px with 32 px overlap → 4 tiles across.
    let c = golden::case("tiny_block_v11");
    let (lq, _) = golden::prepared_lq(&c, false);
    let (h, w) = (128, 384);
    let frames: Vec<Vec<f32>> = lq[..21]
        .iter()
        .map(|f| {
            // Widen the 256-px golden frames to 384 by mirroring, so content crosses every seam.
            let mut out = vec![0.0f32; 3 * h * w];
            for ch in 0..3 {
                for y in 0..h {
                    for x in 0..w {
                        let sx = if x < 256 { x } else { 511 - x };
                        out[(ch * h + y) * w + x] = f[(ch * h + y) * 256 + sx];
                    }
                }
            }
            out
        })
        .collect();

    let mut untiled = Engine::new(&models, settings(h, w), &backend, h, w).unwrap();
    let plain = run(&mut untiled, &frames);
    let layout = TileLayout {
        tile: 128,
        overlap: 32,
    };
    let mut tiled = TiledEngine::new(
        &models,
        |_| Ok(settings(128, 128)),
        &backend,
        h,
        w,
        layout,
        ColorFix::AdaIn,
    )
    .unwrap();
    assert_eq!(tiled.tile_count(), 4);
    let blended = run(&mut tiled, &frames);

    // Parking the tiles' stream state in host memory between chunks changes nothing.
    let mut parked = TiledEngine::new(
        &models,
        |_| Ok(settings(128, 128)),
        &backend,
        h,
        w,
        layout,
        ColorFix::AdaIn,
    )
    .unwrap();
    parked.set_parking(true).unwrap();
    let parked_out = run(&mut parked, &frames);
    assert_eq!(parked_out.len(), blended.len());
    for (a, b) in parked_out.iter().zip(&blended) {
        assert_eq!(a.index, b.index);
        assert!(
            a.pixels == b.pixels,
            "frame {}: parked tiles differ",
            a.index
        );
    }
    assert_eq!(blended.len(), 21);
    assert_eq!(
        blended.iter().map(|f| f.index).collect::<Vec<_>>(),
        (0..21).collect::<Vec<_>>()
    );

    let plane = h * w;
    let mean = |v: &[f32]| v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
    let border = |p: &[f32]| -> Vec<f32> {
        let mut b = Vec::new();
        for ch in 0..3 {
            let q = &p[ch * plane..(ch + 1) * plane];
            b.extend_from_slice(&q[..w]);
            b.extend_from_slice(&q[(h - 1) * w..]);
            b.extend((0..h).flat_map(|y| [q[y * w], q[y * w + w - 1]]));
        }
        b
    };
    // Boundaries: the centres of the overlaps between consecutive tiles.
    let rects = tiled.tile_rects();
    let seams: Vec<usize> = rects
        .windows(2)
        .map(|r| (r[0].0 + r[0].2 + r[1].0) / 2)
        .collect();
    let (mut seam_grad, mut seam_n, mut other_grad, mut other_n) = (0.0, 0, 0.0, 0);
    let mut worst_border_gap = 0.0f64;
    for (t, p) in blended.iter().zip(&plain) {
        worst_border_gap =
            worst_border_gap.max(mean(&border(&p.pixels)) - mean(&border(&t.pixels)));
        for ch in 0..3 {
            for y in 0..h {
                for x in 1..w {
                    let g = (t.pixels[ch * plane + y * w + x]
                        - t.pixels[ch * plane + y * w + x - 1])
                        .abs() as f64;
                    if seams.contains(&x) {
                        seam_grad += g;
                        seam_n += 1;
                    } else {
                        other_grad += g;
                        other_n += 1;
                    }
                }
            }
        }
    }
    let ratio = (seam_grad / seam_n as f64) / (other_grad / other_n as f64);
    eprintln!("seam measure (mean |dx| at tile boundaries / elsewhere): {ratio:.3}; border darker by at most {worst_border_gap:.4}");
    // One 8-bit code in [-1, 1] units is 2/255.
    assert!(
        worst_border_gap <= 2.0 / 255.0,
        "border darker than untiled by {worst_border_gap}"
    );
    assert!(ratio < 1.5, "seams stand out: ratio {ratio}");
}
