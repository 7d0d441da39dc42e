//! A stream split over several devices (here CPU backends standing in for GPUs) gives the
//! one-device stream's frames bit for bit: wherever the blocks are cut, when the cuts move mid-
//! stream, when a split stream's checkpoint is resumed on one device, and when its frames come as
//! source levels resampled on the devices (the last one makes the decoder's condition).

mod golden;

use flashvsr_model::color_fix::ColorFix;
use flashvsr_model::dit::mask::{AttentionMode, SparseSettings};
use flashvsr_model::lq_frame::LqInput;
use flashvsr_model::noise::NoiseSource;
use flashvsr_model::pipeline::{
    Decoder, Engine, EngineSettings, Models, OutputFrame, SplitMove, StageDevice,
};
use flashvsr_model::tcdecoder::TcDecoder;
use flashvsr_tensor::BackendRef;

fn settings(h: usize, w: usize) -> EngineSettings {
    EngineSettings {
        sparse: SparseSettings::new(AttentionMode::Sage, 2.0, 3.0, 11, h, w).unwrap(),
        color_fix: ColorFix::AdaIn,
        noise: NoiseSource::Seeded(5),
        injected_masks: None,
        profile: false,
    }
}

fn load(backend: &BackendRef) -> Models {
    golden::small_v11_models(backend, |open| {
        Decoder::Tiny(TcDecoder::load(backend, &open("TCDecoder.ckpt")).unwrap())
    })
}

/// The golden clip played forwards then backwards: 73 frames, 9 chunks; prepared, and as
/// source levels.
fn clip() -> (Vec<Vec<f32>>, Vec<LqInput>, usize, usize) {
    let c = golden::case("tiny_block_v11");
    let (lq, _) = golden::prepared_lq(&c, false);
    let mut frames = lq.clone();
    frames.extend(lq.iter().rev().skip(1).cloned());
    let levels = golden::lq_levels(&c);
    let mut sources = levels.clone();
    sources.extend(levels.iter().rev().skip(1).cloned());
    (frames, sources, 128, 256)
}

fn finished(out: Vec<OutputFrame>) -> Vec<(usize, Vec<f32>)> {
    out.into_iter()
        .map(|f| (f.index, f.finish().unwrap()))
        .collect()
}

/// Pushes every frame; `between(engine, chunk outputs so far)` runs after each push.
fn run<F: Clone + Into<LqInput>>(
    engine: &mut Engine,
    frames: &[F],
    mut between: impl FnMut(&mut Engine, usize),
) -> Vec<(usize, Vec<f32>)> {
    let mut out = Vec::new();
    for f in frames {
        out.extend(finished(engine.push_lq(f.clone().into()).unwrap()));
        between(engine, out.len());
    }
    out.extend(finished(engine.finish(frames.len()).unwrap()));
    out
}

fn assert_same(a: &[(usize, Vec<f32>)], b: &[(usize, Vec<f32>)], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}: frame counts");
    for ((ia, pa), (ib, pb)) in a.iter().zip(b) {
        assert_eq!(ia, ib, "{what}: frame order");
        assert!(pa == pb, "{what}: frame {ia} differs");
    }
}

#[test]
fn split_streams_equal_the_one_device_stream_bit_for_bit() {
    let (frames, sources, h, w) = clip();
    let backends: Vec<BackendRef> = (0..3)
        .map(|_| flashvsr_tensor::cpu::CpuBackend::new_ref())
        .collect();
    let models: Vec<Models> = backends.iter().map(load).collect();
    let stages = |n: usize| -> Vec<StageDevice> {
        (0..n)
            .map(|i| StageDevice {
                models: &models[i],
                backend: backends[i].clone(),
            })
            .collect()
    };

    let mut one = Engine::new(&models[0], settings(h, w), &backends[0], h, w).unwrap();
    let reference = run(&mut one, &frames, |_, _| {});
    assert_eq!(reference.len(), frames.len());

    // Two devices, the first cut as chosen at the start; frames resampled on the devices.
    let mut two = Engine::split_across(stages(2), settings(h, w), h, w).unwrap();
    assert_eq!(two.split_cuts().len(), 3);
    assert_same(
        &run(&mut two, &sources, |_, _| {}),
        &reference,
        "two devices",
    );

    // Three devices whose cuts move back and forth while chunks are in flight (a block and its
    // KV cache change devices; a stage may be left without blocks).
    let mut three = Engine::split_across(stages(3), settings(h, w), h, w).unwrap();
    let mut moves = 0;
    let mut last_seen = 0;
    let moving = run(&mut three, &frames, |e, seen| {
        if seen == last_seen {
            return;
        }
        last_seen = seen;
        let cuts = e.split_cuts().to_vec();
        let m = match moves % 4 {
            0 | 1 if cuts[1] > 0 => SplitMove::Later(1),
            0 | 1 => SplitMove::Earlier(1),
            _ if cuts[2] < cuts[3] => SplitMove::Earlier(2),
            _ => SplitMove::Later(2),
        };
        e.move_split(m).unwrap();
        moves += 1;
    });
    assert!(moves >= 5, "only {moves} moves");
    assert_same(&moving, &reference, "moving cuts");

    // A checkpoint of a split stream (chunks in flight between devices) resumed on one device;
    // frames as levels before and after (the checkpoint holds them prepared).
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.safetensors");
    let mut split = Engine::split_across(stages(2), settings(h, w), h, w).unwrap();
    let cut_at = 45;
    let mut before = Vec::new();
    for f in &sources[..cut_at] {
        before.extend(finished(split.push_lq(f.clone()).unwrap()));
    }
    split.save_checkpoint(&path).unwrap();
    drop(split);
    let mut resumed = Engine::new(&models[1], settings(h, w), &backends[1], h, w).unwrap();
    resumed.restore_checkpoint(&path).unwrap();
    assert_eq!(resumed.frames_received(), cut_at);
    for f in &sources[cut_at..] {
        before.extend(finished(resumed.push_lq(f.clone()).unwrap()));
    }
    before.extend(finished(resumed.finish(frames.len()).unwrap()));
    assert_same(
        &before,
        &reference,
        "split checkpoint resumed on one device",
    );
}

/// The decoder on a second stream of one device (CPU backends standing in for a GPU's two
/// streams; the models loaded once, their weights read by both): the one-stream frames bit for
/// bit, and checkpoints taken on either kind of engine resume on the other.
#[test]
fn a_decoder_stream_equals_one_stream_and_checkpoints_cross_over() {
    let (frames, sources, h, w) = clip();
    let (main, second) = (
        flashvsr_tensor::cpu::CpuBackend::new_ref(),
        flashvsr_tensor::cpu::CpuBackend::new_ref(),
    );
    let models = load(&main);
    let one_stream = || Engine::new(&models, settings(h, w), &main, h, w).unwrap();
    let two_streams =
        || Engine::with_decoder_stream(&models, settings(h, w), &main, &second, h, w).unwrap();
    let reference = run(&mut one_stream(), &frames, |_, _| {});

    let mut two = two_streams();
    assert_eq!(
        two.split_cuts(),
        &[0, models.dit.layers(), models.dit.layers()]
    );
    let out = run(&mut two, &sources, |_, _| {});
    assert_same(&out, &reference, "decoder stream");
    // The cuts stay: the stages share the device.
    assert_eq!(
        two.split_cuts(),
        &[0, models.dit.layers(), models.dit.layers()]
    );

    let dir = tempfile::tempdir().unwrap();
    let cut_at = 45;
    for (from_two, what) in [(true, "decoder stream → one stream"), (false, "one → two")] {
        let path = dir.path().join(format!("state{from_two}.safetensors"));
        let (mut first, mut then) = match from_two {
            true => (two_streams(), one_stream()),
            false => (one_stream(), two_streams()),
        };
        let mut out = Vec::new();
        for f in &frames[..cut_at] {
            out.extend(finished(first.push(f.clone()).unwrap()));
        }
        first.save_checkpoint(&path).unwrap();
        drop(first);
        then.restore_checkpoint(&path).unwrap();
        assert_eq!(then.frames_received(), cut_at);
        for f in &frames[cut_at..] {
            out.extend(finished(then.push(f.clone()).unwrap()));
        }
        out.extend(finished(then.finish(frames.len()).unwrap()));
        assert_same(&out, &reference, what);
    }
}
