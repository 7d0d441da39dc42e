//! Every input frame comes out, and the output is exactly scale × input.

mod cli_support;

use std::path::Path;

use cli_support::{read_png, sorted_files, stderr, upscale_on_cpu, write_png_clip};

fn upscale(input: &Path, output: &Path, extra: &[&str]) -> std::process::Output {
    let args: Vec<&str> = ["-q"].into_iter().chain(extra.iter().copied()).collect();
    upscale_on_cpu(input, output, &args, &[])
}

#[test]
fn every_input_frame_comes_out() {
    let tmp = tempfile::tempdir().unwrap();
    for n in [1usize, 5, 21, 22, 100] {
        let input = tmp.path().join(format!("in{n}"));
        let output = tmp.path().join(format!("out{n}"));
        write_png_clip(&input, n, 16, 12);
        let out = upscale(&input, &output, &[]);
        assert!(out.status.success(), "{n} frames: {}", stderr(&out));
        let files = sorted_files(&output);
        assert_eq!(files.len(), n, "{n} input frames");
        assert_eq!(
            files.last().unwrap().file_name().unwrap().to_str().unwrap(),
            format!("{:06}.png", n - 1)
        );
        let (w, h, depth, _) = read_png(&files[0]);
        assert_eq!((w, h, depth), (64, 48, 8));
    }
}

#[test]
fn output_is_exactly_scale_times_input() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write_png_clip(&input, 3, 50, 30);
    let output = tmp.path().join("out");
    let out = upscale(&input, &output, &["--output-format", "png16"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let files = sorted_files(&output);
    assert_eq!(files.len(), 3);
    for f in &files {
        let (w, h, depth, samples) = read_png(f);
        assert_eq!((w, h, depth), (200, 120, 16));
        // The padded canvas must not leak into the picture: the bottom-right pixel is real content.
        assert!(samples.iter().any(|&v| v != 0));
    }
}

#[test]
fn a_single_image_works_and_y4m_output_too() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write_png_clip(&input, 1, 20, 10);
    let image = input.join("0000.png");
    let output = tmp.path().join("out.y4m");
    let out = upscale(&image, &output, &["--scale", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let bytes = std::fs::read(&output).unwrap();
    let header_end = bytes.iter().position(|&b| b == b'\n').unwrap();
    let header = String::from_utf8_lossy(&bytes[..header_end]);
    assert!(header.starts_with("YUV4MPEG2 W40 H20 "), "{header}");
    let frames = bytes.windows(6).filter(|w| w == b"FRAME\n").count();
    assert_eq!(frames, 1);
}

#[test]
fn existing_output_needs_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write_png_clip(&input, 2, 8, 8);
    let output = tmp.path().join("out");
    assert!(upscale(&input, &output, &[]).status.success());
    let again = upscale(&input, &output, &[]);
    assert_eq!(again.status.code(), Some(2), "{}", stderr(&again));
    let forced = upscale(&input, &output, &["-y"]);
    assert!(forced.status.success(), "{}", stderr(&forced));
    assert_eq!(sorted_files(&output).len(), 2);
}

#[test]
fn torch_resize_is_a_different_valid_preparation() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write_png_clip(&input, 2, 12, 10);
    let (pil, torch) = (tmp.path().join("pil"), tmp.path().join("torch"));
    assert!(upscale(&input, &pil, &["--output-format", "png16"])
        .status
        .success());
    let out = upscale(
        &input,
        &torch,
        &["--output-format", "png16", "--resize", "torch"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (a, b) = (sorted_files(&pil), sorted_files(&torch));
    assert_eq!((a.len(), b.len()), (2, 2));
    let (wa, ha, _, pa) = read_png(&a[0]);
    let (wb, hb, _, pb) = read_png(&b[0]);
    assert_eq!((wa, ha), (wb, hb));
    assert_ne!(pa, pb, "the two bicubic kernels must give different inputs");
}

#[test]
fn keep_names_mirrors_the_input_file_names() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write_png_clip(&input, 3, 8, 8);
    for (i, name) in ["shot_9.png", "shot_10.png", "shot_11.png"]
        .iter()
        .enumerate()
    {
        std::fs::rename(input.join(format!("{i:04}.png")), input.join(name)).unwrap();
    }
    let output = tmp.path().join("out");
    let out = upscale(
        &input,
        &output,
        &["--keep-names", "--output-format", "tiff16"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let names: Vec<String> = sorted_files(&output)
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["shot_10.tif", "shot_11.tif", "shot_9.tif"]);
    let video = tmp.path().join("clip.y4m");
    let out = upscale(&input.join("shot_9.png"), &video, &[]);
    assert!(out.status.success());
    let refused = upscale(&video, &tmp.path().join("o2"), &["--keep-names"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
}
