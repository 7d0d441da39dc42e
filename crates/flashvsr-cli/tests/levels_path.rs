//! 8-bit frames go to the engine as their source levels and are upscaled where the engine runs
//! (lq_levels.rs); `FLASHVSR_RESAMPLE_ON_HOST=1` prepares them on the host instead. Both give the
//! same bytes on every path that reads LQ frames: the projector and decoder condition, the colour
//! fix on the device and on the host (parked tiles, full mode), tiles' windows of the canvas,
//! the centre crop, odd widths, and stream checkpoints between segments.

mod cli_support;

use std::path::Path;

use cli_support::{stderr, upscale_on_cpu, write_png_clip, write_y4m};

/// The output's bytes and the run's log.
fn upscale(input: &Path, output: &Path, on_host: bool, extra: &[&str]) -> (Vec<u8>, String) {
    let args: Vec<&str> = ["-y"].into_iter().chain(extra.iter().copied()).collect();
    let flag = if on_host { "1" } else { "0" };
    let out = upscale_on_cpu(input, output, &args, &[("FLASHVSR_RESAMPLE_ON_HOST", flag)]);
    assert!(out.status.success(), "{}", stderr(&out));
    (std::fs::read(output).unwrap(), stderr(&out))
}

#[test]
fn frames_upscaled_by_the_engine_give_the_host_prepared_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    // 37×21 ×4: an odd width, padded right and bottom onto 256×128. 40×36 ×4 = 160×144 crops
    // to 128×128 from (16, 8).
    let odd = tmp.path().join("odd.y4m");
    write_y4m(&odd, 21, 37, 21);
    let crop = tmp.path().join("crop.y4m");
    write_y4m(&crop, 9, 40, 36);
    // 96×64 ×4 under 200 MB: two 256×256 tiles taking turns, colour-fixed on the host.
    let clip = tmp.path().join("clip");
    write_png_clip(&clip, 9, 96, 64);
    let tiles = ["--tile-size", "32", "--tile-overlap", "8"];
    let cases: [(&str, &Path, Vec<&str>); 6] = [
        ("direct", &odd, vec![]),
        ("crop", &crop, vec!["--crop-to-128"]),
        (
            "tiled",
            &odd,
            [&tiles[..], &["--color-fix", "wavelet"]].concat(),
        ),
        ("parked tiles", &clip, vec!["--max-vram", "200M"]),
        ("segments", &odd, vec!["--segment-frames", "8"]),
        (
            "full",
            &crop,
            vec!["--mode", "full", "--color-fix", "wavelet"],
        ),
    ];
    for (name, input, extra) in cases {
        let output = tmp
            .path()
            .join(format!("out_{}.y4m", name.replace(" ", "_")));
        let (on_host, _) = upscale(input, &output, true, &extra);
        let (on_engine, log) = upscale(input, &output, false, &extra);
        if name == "parked tiles" {
            assert!(
                log.contains("2 tiles of 256×256 model pixels, stream state parked"),
                "{log}"
            );
        }
        assert_eq!(on_host.len(), on_engine.len(), "{name}");
        assert!(on_host == on_engine, "{name}: outputs differ");
    }
}
