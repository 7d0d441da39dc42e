mod common;

use flashvsr_media::resize::{pil_bicubic_u16_to_f32, pil_bicubic_u8};
use safetensors::{Dtype, SafeTensors};

#[test]
fn golden_lq_up_sel_is_reproduced_bit_exactly() {
    let path = common::golden_dir().join("tiny_block_v11_crop72x40/outputs.safetensors");
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let lr = st.tensor("lr_frames").unwrap();
    assert_eq!((lr.dtype(), lr.shape()), (Dtype::U8, &[21, 40, 72, 3][..]));
    let want = st.tensor("lq_up_sel").unwrap();
    assert_eq!(
        (want.dtype(), want.shape()),
        (Dtype::U8, &[1, 128, 256, 3][..])
    );

    let (w0, h0) = (72, 40);
    let frame0 = &lr.data()[..w0 * h0 * 3];
    let (sw, sh) = (4 * w0, 4 * h0);
    let up = pil_bicubic_u8(frame0, w0, h0, 3, sw, sh);
    let (tw, th) = (sw / 128 * 128, sh / 128 * 128);
    let (left, top) = ((sw - tw) / 2, (sh - th) / 2);
    assert_eq!((left, top), (16, 16));
    let mut crop = Vec::with_capacity(tw * th * 3);
    for y in top..top + th {
        crop.extend_from_slice(&up[(y * sw + left) * 3..(y * sw + left + tw) * 3]);
    }
    let mismatches = crop.iter().zip(want.data()).filter(|(a, b)| a != b).count();
    assert_eq!(
        mismatches,
        0,
        "{mismatches} of {} samples differ from lq_up_sel",
        crop.len()
    );
}

/// Outputs of Pillow 13 on noise images for up-, down- and mixed scaling (tests/data).
#[test]
fn matches_pillow_on_up_down_and_mixed_scales() {
    let table = include_str!("data/pil_reference.txt");
    let mut cases = 0;
    for line in table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let f: Vec<&str> = line.split(' ').collect();
        let n: Vec<usize> = f[..6].iter().map(|v| v.parse().unwrap()).collect();
        let (w, h, c, ow, oh, seed) = (n[0], n[1], n[2], n[3], n[4], n[5] as u64);
        let want: Vec<u8> = (0..f[6].len() / 2)
            .map(|i| u8::from_str_radix(&f[6][2 * i..2 * i + 2], 16).unwrap())
            .collect();
        let got = pil_bicubic_u8(&common::noise(w * h * c, seed), w, h, c, ow, oh);
        assert_eq!(got, want, "{w}x{h}x{c} -> {ow}x{oh}");
        cases += 1;
    }
    assert_eq!(cases, 16);
}

#[test]
fn constant_images_stay_constant() {
    for (w, h, ow, oh) in [(7, 5, 28, 20), (30, 20, 7, 3), (5, 9, 13, 2)] {
        let src = vec![201u8; w * h * 3];
        assert!(pil_bicubic_u8(&src, w, h, 3, ow, oh)
            .iter()
            .all(|&v| v == 201));
        let src16 = vec![40000u16; w * h * 3];
        for v in pil_bicubic_u16_to_f32(&src16, w, h, 3, ow, oh) {
            assert!((v - 40000.0).abs() < 0.02, "{v}");
        }
    }
}

#[test]
fn sixteen_bit_variant_tracks_the_eight_bit_one() {
    let (w, h) = (24, 16);
    let src = common::smooth8(w, h);
    let src8 = src.to_u8_samples();
    let src16 = src.to_u16_samples();
    let up8 = pil_bicubic_u8(&src8, w, h, 3, 4 * w, 4 * h);
    let up16 = pil_bicubic_u16_to_f32(&src16, w, h, 3, 4 * w, 4 * h);
    for (a, b) in up8.iter().zip(&up16) {
        // The 8-bit path rounds twice; the float path not at all.
        assert!((*a as f32 - b / 257.0).abs() <= 1.0, "{a} vs {}", b / 257.0);
    }
    assert!(up16.iter().all(|v| (0.0..=65535.0).contains(v)));
}
