//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use flashvsr_media::{Frame, FrameData};

/// The golden folder: `$FLASHVSR_GOLDEN`, else `shared/golden` beside the workspace. Missing
/// golden data fails the test rather than skipping it.
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
        dir.is_dir(),
        "golden data not found at {} (set FLASHVSR_GOLDEN)",
        dir.display()
    );
    dir
}

/// The PCG-style byte stream the Pillow reference generator uses (tests/data/gen_pil_reference.py).
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed;
    (0..n)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 56) as u8
        })
        .collect()
}

pub fn noise16(n: usize, seed: u64) -> Vec<u16> {
    noise(2 * n, seed)
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

pub fn rgb8(w: usize, h: usize, seed: u64) -> Frame {
    Frame::from_u8(w, h, noise(w * h * 3, seed))
}

pub fn rgb16(w: usize, h: usize, seed: u64) -> Frame {
    Frame::from_u16(w, h, noise16(w * h * 3, seed))
}

/// A smooth 8-bit picture (gradients), closer to video than noise.
pub fn smooth8(w: usize, h: usize) -> Frame {
    let mut d = Vec::with_capacity(w * h * 3);
    for y in 0..h {
        for x in 0..w {
            d.push((x * 255 / w.max(1)) as u8);
            d.push((y * 255 / h.max(1)) as u8);
            d.push(((x + y) * 127 / (w + h)) as u8 + 64);
        }
    }
    Frame::from_u8(w, h, d)
}

pub fn write_png(
    path: &Path,
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
) {
    write_png_with(path, w, h, color, depth, data, |_| {});
}

pub fn write_png_with(
    path: &Path,
    w: u32,
    h: u32,
    color: png::ColorType,
    depth: png::BitDepth,
    data: &[u8],
    setup: impl FnOnce(&mut png::Encoder<std::io::BufWriter<std::fs::File>>),
) {
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut enc = png::Encoder::new(file, w, h);
    enc.set_color(color);
    enc.set_depth(depth);
    setup(&mut enc);
    let mut writer = enc.write_header().unwrap();
    writer.write_image_data(data).unwrap();
    writer.finish().unwrap();
}

pub fn u8_data(f: &Frame) -> &[u8] {
    match &f.data {
        FrameData::U8(d) => d,
        FrameData::U16(_) => panic!("expected an 8-bit frame"),
    }
}

pub fn u16_data(f: &Frame) -> &[u16] {
    match &f.data {
        FrameData::U16(d) => d,
        FrameData::U8(_) => panic!("expected a 16-bit frame"),
    }
}

/// Names in a directory, sorted, hidden ones included.
pub fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}
