//! Model files missing, corrupt, or in the wrong place: a clear error naming the file, exit 2.

mod cli_support;

use cli_support::{flashvsr, golden_models, stderr, write_png_rgb8};

fn one_frame(dir: &std::path::Path) -> std::path::PathBuf {
    let input = dir.join("in.png");
    write_png_rgb8(&input, 8, 8, &[128; 8 * 8 * 3]);
    input
}

#[test]
fn a_file_in_the_wrong_place_says_where_it_belongs() {
    let tmp = tempfile::tempdir().unwrap();
    let input = one_frame(tmp.path());
    let models = golden_models();
    let tcd = models.join("TCDecoder.ckpt");
    let out = flashvsr(&[
        "upscale",
        input.to_str().unwrap(),
        "-o",
        tmp.path().join("o").to_str().unwrap(),
        "--models",
        models.to_str().unwrap(),
        "--dit",
        tcd.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let msg = stderr(&out);
    assert!(
        msg.contains("TCDecoder.ckpt") && msg.contains("--tcdecoder"),
        "{msg}"
    );
    assert!(
        !tmp.path().join("o").exists(),
        "nothing partial left behind"
    );
}

#[test]
fn missing_and_corrupt_model_files() {
    let tmp = tempfile::tempdir().unwrap();
    let input = one_frame(tmp.path());
    let empty = tmp.path().join("models");
    std::fs::create_dir(&empty).unwrap();
    let out = flashvsr(&[
        "upscale",
        input.to_str().unwrap(),
        "-o",
        tmp.path().join("o").to_str().unwrap(),
        "--models",
        empty.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("diffusion_pytorch_model_streaming_dmd.safetensors"),
        "{}",
        stderr(&out)
    );

    let corrupt = tmp.path().join("corrupt.safetensors");
    let real =
        std::fs::read(golden_models().join("diffusion_pytorch_model_streaming_dmd.safetensors"))
            .unwrap();
    std::fs::write(&corrupt, &real[..real.len() / 2]).unwrap();
    let out = flashvsr(&[
        "upscale",
        input.to_str().unwrap(),
        "-o",
        tmp.path().join("o").to_str().unwrap(),
        "--models",
        golden_models().to_str().unwrap(),
        "--dit",
        corrupt.to_str().unwrap(),
        "--device",
        "cpu",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("corrupt.safetensors"),
        "{}",
        stderr(&out)
    );
    assert!(!tmp.path().join("o").exists());
}

#[test]
fn models_verify_reports_each_file() {
    let out = flashvsr(&["models", "verify", golden_models().to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "TCDecoder.ckpt: a TCDecoder",
        "LQ_proj_in.ckpt: an LQ projector",
        "posi_prompt.pth: a prompt tensor",
        "a FlashVSR DiT",
        "a Wan2.1 VAE",
        "width 256, 2 heads, 2 layers",
    ] {
        assert!(text.contains(needle), "missing `{needle}` in:\n{text}");
    }
}

#[test]
fn cuda_request_without_backend_is_a_usage_error() {
    let tmp = tempfile::tempdir().unwrap();
    let input = one_frame(tmp.path());
    let out = flashvsr(&[
        "upscale",
        input.to_str().unwrap(),
        "-o",
        tmp.path().join("o").to_str().unwrap(),
        "--models",
        golden_models().to_str().unwrap(),
        "--device",
        "cuda",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let msg = stderr(&out);
    assert!(msg.contains("--device cuda"), "{msg}");
}
