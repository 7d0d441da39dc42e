//! The Wan VAE decoded in temporal pieces (the streaming form, FLASHVSR.md §6.2) gives the frames
//! of one whole-sequence decode, bit for bit on the CPU: the untiled decode's memory bound rests
//! on it. Random weights of the golden models' widths.

use flashvsr_model::random_weights::{ModelSize, RandomWeights};
use flashvsr_model::vae::WanVaeDecoder;
use flashvsr_tensor::cpu::CpuBackend;
use flashvsr_tensor::{random, Tensor};

#[test]
fn pieces_and_calls_give_the_whole_decode() {
    let backend = CpuBackend::new_ref();
    let vae = WanVaeDecoder::load(&backend, &RandomWeights::vae(ModelSize::SMALL, 5)).unwrap();
    let (t, rows, cols) = (5, 3, 4);
    let mut values = vec![0.0f32; 16 * t * rows * cols];
    random::normal_fill(random::stream_base(17, 0), 1.0, &mut values);
    let latents = Tensor::from_slice(&backend, &values, &[16, t, rows, cols]).unwrap();
    let whole = vae
        .decode_in_pieces(&latents, &mut vae.new_state(), t)
        .unwrap();
    assert_eq!(whole.shape(), &[3, 4 * t - 3, 8 * rows, 8 * cols]);
    let whole = whole.to_vec().unwrap();
    for per in [1, 2] {
        let pieces = vae
            .decode_in_pieces(&latents, &mut vae.new_state(), per)
            .unwrap();
        assert!(pieces.to_vec().unwrap() == whole, "pieces of {per}");
    }
    // Two calls of a stream (chunks of 3 and 2 latents), each in pieces of 2.
    let mut state = vae.new_state();
    let first = vae
        .decode_in_pieces(&latents.narrow(1, 0, 3).unwrap(), &mut state, 2)
        .unwrap();
    let rest = vae
        .decode_in_pieces(&latents.narrow(1, 3, 2).unwrap(), &mut state, 2)
        .unwrap();
    let streamed = Tensor::cat(&[&first, &rest], 1).unwrap();
    assert!(streamed.to_vec().unwrap() == whole, "streamed calls");
}
