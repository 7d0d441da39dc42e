//! Running the `flashvsr` binary and reading and writing PNG frames in tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn flashvsr(args: &[&str]) -> Output {
    flashvsr_with_env(args, &[])
}

/// `flashvsr` with extra environment variables.
pub fn flashvsr_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_flashvsr"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("FLASHVSR_MODELS")
        // Never fall back to (or download into) the user's real model cache.
        .env("HF_HUB_OFFLINE", "1")
        .env(
            "HF_HOME",
            std::env::temp_dir().join("flashvsr-tests-empty-hf-home"),
        )
        .output()
        .expect("run flashvsr")
}

/// `flashvsr upscale INPUT -o OUTPUT --models <small golden model> --device cpu EXTRA…`.
pub fn upscale_on_cpu(input: &Path, output: &Path, extra: &[&str], env: &[(&str, &str)]) -> Output {
    let models = golden_models();
    let mut args = vec![
        "upscale",
        input.to_str().unwrap(),
        "-o",
        output.to_str().unwrap(),
        "--models",
        models.to_str().unwrap(),
        "--device",
        "cpu",
    ];
    args.extend_from_slice(extra);
    flashvsr_with_env(&args, env)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A folder of `frames` PNGs of a deterministic moving gradient, so frames differ.
pub fn write_png_clip(dir: &Path, frames: usize, width: usize, height: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for f in 0..frames {
        let data: Vec<u8> = (0..width * height * 3)
            .map(|i| {
                let (p, c) = (i / 3, i % 3);
                ((p % width) * 7 + (p / width) * 5 + f * 11 + c * 60) as u8
            })
            .collect();
        write_png_rgb8(&dir.join(format!("{f:04}.png")), width, height, &data);
    }
}

pub fn write_png_rgb8(path: &Path, width: usize, height: usize, data: &[u8]) {
    let file = std::fs::File::create(path).unwrap();
    let mut enc = png::Encoder::new(std::io::BufWriter::new(file), width as u32, height as u32);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.write_header().unwrap().write_image_data(data).unwrap();
}

/// `(width, height, bit depth, samples widened to u16)` of an RGB PNG.
pub fn read_png(path: &Path) -> (usize, usize, u8, Vec<u16>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "{}", path.display());
    let data = &buf[..info.buffer_size()];
    let (depth, samples) = match info.bit_depth {
        png::BitDepth::Eight => (8, data.iter().map(|&v| v as u16).collect()),
        png::BitDepth::Sixteen => (
            16,
            data.chunks_exact(2)
                .map(|b| u16::from_be_bytes([b[0], b[1]]))
                .collect(),
        ),
        other => panic!("unexpected depth {other:?}"),
    };
    (info.width as usize, info.height as usize, depth, samples)
}

pub fn sorted_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

/// The golden small v1.1 model folder ($FLASHVSR_GOLDEN or ../shared/golden); missing data fails.
pub fn golden_models() -> PathBuf {
    let golden = std::env::var_os("FLASHVSR_GOLDEN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/golden"
            ))
        });
    let dir = golden.join("models/flashvsr_v11_small");
    assert!(
        dir.is_dir(),
        "golden models not found at {} (set FLASHVSR_GOLDEN)",
        dir.display()
    );
    dir
}

/// An 8-bit 4:4:4 y4m clip whose frames all differ.
pub fn write_y4m(path: &Path, frames: usize, width: usize, height: usize) {
    let mut bytes =
        format!("YUV4MPEG2 W{width} H{height} F24:1 Ip A1:1 C444 XYSCSS=444\n").into_bytes();
    for f in 0..frames {
        bytes.extend_from_slice(b"FRAME\n");
        for plane in 0..3 {
            for p in 0..width * height {
                let v = if plane == 0 {
                    16 + ((p % width) * 9 + (p / width) * 5 + f * 7) % 219
                } else {
                    128 + ((p + f * 3 + plane * 11) % 40) - 20
                };
                bytes.push(v as u8);
            }
        }
    }
    std::fs::write(path, bytes).unwrap();
}

/// Runs the ffmpeg CLI (tests make their media with it); fails the test on error.
pub fn ffmpeg(args: &[&str]) {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-nostdin", "-y"])
        .args(args)
        .output()
        .expect("ffmpeg must be installed (apt-get install ffmpeg)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
