//! The colour fixes through the engine. The wavelet fix: where the chunk's LQ frames are on the
//! decoder's device the fix runs there on the whole chunk (`clamp(y + B(x − y), −1, 1)`), elsewhere on the
//! host per frame (`high(y) + L₅(x)`). Every path must give the host fix of the unfixed stream's
//! frames, up to f32 rounding: the tiny decoder (its condition is the LQ frames on the device,
//! parked or not), the Wan VAE (the engine's device copies; none while parked: host fix), the
//! tiled VAE decode (pixels on the host: host fix), and a stream split over two devices. Which
//! path ran shows in the result: the host fix gives the host fix's values bit for bit, the
//! device's formula rounds differently somewhere in a clip.

mod golden;

use flashvsr_model::color_fix::{self, ColorFix};
use flashvsr_model::dit::mask::{AttentionMode, SparseSettings};
use flashvsr_model::noise::NoiseSource;
use flashvsr_model::pipeline::{Decoder, Engine, EngineSettings, Models, StageDevice};
use flashvsr_model::tcdecoder::TcDecoder;
use flashvsr_model::vae::WanVaeDecoder;
use flashvsr_model::vae_tiling::VaeTiling;
use flashvsr_tensor::cpu::CpuBackend;
use flashvsr_tensor::BackendRef;

/// Values are in [-1, 1]; the two formulas differ by a few f32 roundings.
const TOLERANCE: f32 = 1e-5;

#[derive(Clone, Copy, Debug)]
enum DecoderKind {
    Tiny,
    Vae,
    TiledVae,
}

fn settings(h: usize, w: usize, color_fix: ColorFix) -> EngineSettings {
    EngineSettings {
        sparse: SparseSettings::new(AttentionMode::Block, 2.0, 3.0, 11, h, w).unwrap(),
        color_fix,
        noise: NoiseSource::Seeded(9),
        injected_masks: None,
        profile: false,
    }
}

fn load(backend: &BackendRef, kind: DecoderKind) -> Models {
    golden::small_v11_models(backend, |open| {
        let vae = || Box::new(WanVaeDecoder::load(backend, &open("Wan2.1_VAE.pth")).unwrap());
        match kind {
            DecoderKind::Tiny => {
                Decoder::Tiny(TcDecoder::load(backend, &open("TCDecoder.ckpt")).unwrap())
            }
            DecoderKind::Vae => Decoder::Full {
                vae: vae(),
                tiling: None,
            },
            // Four overlapping tiles over the 16 × 32 latent grid: tiled in both directions, at
            // a quarter of the work of 8 × 8 tiles (21 of them), which made this file the
            // slowest of the test suite.
            DecoderKind::TiledVae => Decoder::Full {
                vae: vae(),
                tiling: Some(VaeTiling {
                    tile: (12, 20),
                    stride: (4, 12),
                }),
            },
        }
    })
}

/// The first 26 prepared LQ frames of the golden clip (two chunks: the first chunk's 21 output
/// frames, then one of 8 whose LQ frames partly came before it) and the canvas `(h, w)`.
fn clip() -> (Vec<Vec<f32>>, usize, usize) {
    let c = golden::case("tiny_block_v11");
    let (mut lq, plan) = golden::prepared_lq(&c, false);
    lq.truncate(26);
    let (w, h) = plan.model;
    (lq, h, w)
}

/// Every finished frame, in index order.
fn run(engine: &mut Engine, frames: &[Vec<f32>]) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    for f in frames {
        out.extend(engine.push(f.clone()).unwrap());
    }
    out.extend(engine.finish(frames.len()).unwrap());
    out.sort_by_key(|f| f.index);
    assert_eq!(out.len(), frames.len());
    out.into_iter().map(|f| f.finish().unwrap()).collect()
}

fn max_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .flat_map(|(x, y)| {
            assert_eq!(x.len(), y.len());
            x.iter().zip(y).map(|(p, q)| (p - q).abs())
        })
        .fold(0.0, f32::max)
}

fn relative_l2(a: &[Vec<f32>], b: &[Vec<f32>]) -> f64 {
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
        num += (*x as f64 - *y as f64).powi(2);
        den += (*y as f64).powi(2);
    }
    (num / den.max(f64::MIN_POSITIVE)).sqrt()
}

/// The host fix of `unfixed`, each frame against its LQ frame.
fn host_fixed(unfixed: &[Vec<f32>], lq: &[Vec<f32>], h: usize, w: usize) -> Vec<Vec<f32>> {
    unfixed
        .iter()
        .zip(lq)
        .map(|(f, x)| {
            let mut f = f.clone();
            color_fix::wavelet(&mut f, x, h, w);
            f
        })
        .collect()
}

/// Where the fix is expected to run.
#[derive(Clone, Copy, Debug, PartialEq)]
enum FixedOn {
    Device,
    Host,
}

/// `fixed_on[parking]`: where the fix runs without and with parking.
fn check_decoder(kind: DecoderKind, fixed_on: [FixedOn; 2]) {
    let (frames, h, w) = clip();
    // The CPU, or the GPU with FLASHVSR_TEST_DEVICE=cuda (whose streams must then give the same
    // decoded frames with and without the fix, run to run).
    let backend = golden::backend();
    let models = load(&backend, kind);
    let stream = |color_fix: ColorFix, parking: bool| {
        let mut e = Engine::new(&models, settings(h, w, color_fix), &backend, h, w).unwrap();
        e.set_parking(parking).unwrap();
        run(&mut e, &frames)
    };
    let unfixed = stream(ColorFix::None, false);
    let want = host_fixed(&unfixed, &frames, h, w);
    assert!(
        max_difference(&want, &unfixed) > 1e-3,
        "{kind:?}: the fix changes nothing on this clip"
    );
    for (parking, on) in [false, true].into_iter().zip(fixed_on) {
        let got = stream(ColorFix::Wavelet, parking);
        let diff = max_difference(&got, &want);
        println!(
            "{kind:?}, parking {parking}: max difference {diff:e}, relative L2 {:e} from the \
             host fix",
            relative_l2(&got, &want)
        );
        let ok = match on {
            FixedOn::Host => diff == 0.0,
            FixedOn::Device => diff > 0.0 && diff <= TOLERANCE,
        };
        assert!(
            ok,
            "{kind:?}, parking {parking}, fixed on the {on:?} expected: max difference \
             {diff:e} from the host fix"
        );
    }
}

#[test]
#[ignore = "heavy (~45 s on 2 cores): .ci/run runs it after the README's command (--ignored)"]
fn the_tiny_decoder_stream_gets_the_host_fix() {
    // Its condition is the chunk's LQ frames on the device, uploaded while parking.
    check_decoder(DecoderKind::Tiny, [FixedOn::Device; 2]);
}

#[test]
#[ignore = "heavy (~45 s on 2 cores): .ci/run runs it after the README's command (--ignored)"]
fn the_vae_stream_gets_the_host_fix() {
    // A parking engine keeps no device copies of the LQ frames.
    check_decoder(DecoderKind::Vae, [FixedOn::Device, FixedOn::Host]);
}

#[test]
#[ignore = "heavy (~45 s on 2 cores): .ci/run runs it after the README's command (--ignored)"]
fn the_tiled_vae_stream_gets_the_host_fix() {
    check_decoder(DecoderKind::TiledVae, [FixedOn::Host; 2]);
}

#[test]
#[ignore = "heavy (~45 s on 2 cores): .ci/run runs it after the README's command (--ignored)"]
fn a_split_stream_fixes_on_its_last_device_as_one_device_does() {
    let (frames, h, w) = clip();
    for kind in [DecoderKind::Tiny, DecoderKind::Vae] {
        let backends: Vec<BackendRef> = (0..2).map(|_| CpuBackend::new_ref()).collect();
        let models: Vec<Models> = backends.iter().map(|b| load(b, kind)).collect();
        let mut one = Engine::new(
            &models[0],
            settings(h, w, ColorFix::Wavelet),
            &backends[0],
            h,
            w,
        )
        .unwrap();
        let want = run(&mut one, &frames);
        let stages = (0..2)
            .map(|i| StageDevice {
                models: &models[i],
                backend: backends[i].clone(),
            })
            .collect();
        let mut two =
            Engine::split_across(stages, settings(h, w, ColorFix::Wavelet), h, w).unwrap();
        assert!(
            run(&mut two, &frames) == want,
            "{kind:?}: the split stream's fixed frames differ"
        );
    }
}

/// AdaIN runs on the device wherever the wavelet fix does, with the host's per-plane statistics
/// (f64): the same values as the host fix of the unfixed stream, bit for bit on the CPU and up to
/// the order of the sums on a GPU.
#[test]
#[ignore = "heavy (~45 s on 2 cores): .ci/run runs it after the README's command (--ignored)"]
fn adain_streams_equal_the_host_fix() {
    let (frames, h, w) = clip();
    let backend = golden::backend();
    for kind in [DecoderKind::Tiny, DecoderKind::Vae, DecoderKind::TiledVae] {
        let models = load(&backend, kind);
        let stream = |color_fix: ColorFix| {
            let mut e = Engine::new(&models, settings(h, w, color_fix), &backend, h, w).unwrap();
            run(&mut e, &frames)
        };
        let unfixed = stream(ColorFix::None);
        let want: Vec<Vec<f32>> = unfixed
            .iter()
            .zip(&frames)
            .map(|(f, x)| {
                let mut f = f.clone();
                color_fix::adain(&mut f, x);
                f
            })
            .collect();
        assert!(
            max_difference(&want, &unfixed) > 1e-3,
            "{kind:?}: AdaIN changes nothing"
        );
        let diff = max_difference(&stream(ColorFix::AdaIn), &want);
        assert!(
            diff <= 1e-6,
            "{kind:?}: max difference {diff:e} from the host AdaIN"
        );
    }
}
