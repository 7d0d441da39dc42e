//! Golden parity through the command line: the case's LR frames as 8-bit PNGs in, 16-bit PNGs
//! out, compared with the reference's final frames (relative L2 ≤ 1e-3).

mod cli_support;
#[path = "../../flashvsr-model/tests/golden/mod.rs"]
mod golden;

use cli_support::{flashvsr, read_png, sorted_files, stderr, write_png_rgb8};
use golden::{case, rel_l2};

fn run_case(name: &str) {
    let c = case(name);
    let lr = c.get("lr_frames");
    let (n, h0, w0) = (lr.shape[0], lr.shape[1], lr.shape[2]);
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    std::fs::create_dir(&input).unwrap();
    for i in 0..n {
        let frame = &lr.u8[i * h0 * w0 * 3..(i + 1) * h0 * w0 * 3];
        write_png_rgb8(&input.join(format!("f{i}.png")), w0, h0, frame);
    }
    let output = tmp.path().join("out");
    let noise = golden::golden_dir().join(name).join("outputs.safetensors");
    let model_dir = c.model_dir();
    let mut args: Vec<String> = vec![
        "upscale".into(),
        input.display().to_string(),
        "-o".into(),
        output.display().to_string(),
    ];
    let variant = c.json["variant"].as_str().unwrap();
    let flags: &[&str] = match variant {
        "official_full" => &[
            "--mode",
            "full",
            "--attention",
            "block",
            "--tiled-vae",
            "off",
        ],
        _ => &["--mode", "tiny", "--attention", "block"],
    };
    args.extend(flags.iter().map(|s| s.to_string()));
    if c.crop_to_128() {
        args.push("--crop-to-128".into());
    }
    for (flag, knob) in [
        ("--sparse-ratio", "sparse_ratio"),
        ("--kv-ratio", "kv_ratio"),
        ("--local-range", "local_range"),
    ] {
        args.push(flag.into());
        args.push(c.knob(knob).to_string());
    }
    args.extend(
        [
            "--seed",
            "0",
            "--scale",
            "4",
            "--models",
            &model_dir.display().to_string(),
            "--noise",
            &noise.display().to_string(),
            "--color-fix",
            "adain",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--output-format",
            "png16",
            "-q",
        ]
        .iter()
        .map(|s| s.to_string()),
    );
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = flashvsr(&refs);
    assert!(out.status.success(), "{name}: {}", stderr(&out));

    let files = sorted_files(&output);
    assert_eq!(files.len(), n, "{name}: one output frame per input frame");
    assert_eq!(files[0].file_name().unwrap(), "000000.png");
    let golden = c.get("final_adain_sel");
    let (h, w) = (golden.shape[2], golden.shape[3]);
    let indices = c.frame_indices("final_adain_sel");
    let mut ours = vec![0.0f32; 3 * indices.len() * h * w];
    for (k, &i) in indices.iter().enumerate() {
        let (fw, fh, depth, samples) = read_png(&files[i]);
        assert_eq!((fw, fh, depth), (w, h, 16));
        for (p, px) in samples.chunks_exact(3).enumerate() {
            for ch in 0..3 {
                ours[(ch * indices.len() + k) * h * w + p] = px[ch] as f32 / 65535.0 * 2.0 - 1.0;
            }
        }
    }
    let err = rel_l2(&ours, &golden.f32);
    assert!(
        err <= 1e-3,
        "{name}: final_adain_sel through the CLI, rel L2 {err:e}"
    );
}

#[test]
fn cli_tiny_block_v11() {
    run_case("tiny_block_v11");
}

#[test]
fn cli_full_block_v11() {
    run_case("full_block_v11");
}

#[test]
fn cli_tiny_block_v11_crop72x40() {
    run_case("tiny_block_v11_crop72x40");
}
