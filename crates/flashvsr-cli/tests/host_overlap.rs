//! Host work beside the engine (preparing frames ahead, colour fix and conversion on the host
//! workers) changes where it runs, never the output: runs with and without overlap are
//! byte-identical on every path (direct, tiled with the wavelet fix, a segmented job).

mod cli_support;

use std::path::Path;

use cli_support::{stderr, upscale_on_cpu, write_y4m};

fn upscale(input: &Path, output: &Path, overlap: bool, extra: &[&str]) -> Vec<u8> {
    let args: Vec<&str> = ["-q", "-y"]
        .into_iter()
        .chain(extra.iter().copied())
        .collect();
    let flag = if overlap { "1" } else { "0" };
    let out = upscale_on_cpu(input, output, &args, &[("FLASHVSR_HOST_OVERLAP", flag)]);
    assert!(out.status.success(), "{}", stderr(&out));
    std::fs::read(output).unwrap()
}

#[test]
fn overlapping_host_work_gives_the_same_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in.y4m");
    write_y4m(&input, 21, 64, 32);
    for (name, extra) in [
        ("direct", &[][..]),
        (
            "tiled",
            &[
                "--tile-size",
                "32",
                "--tile-overlap",
                "8",
                "--color-fix",
                "wavelet",
            ][..],
        ),
        ("segments", &["--segment-frames", "8"][..]),
    ] {
        let output = tmp.path().join(format!("{name}.y4m"));
        let serial = upscale(&input, &output, false, extra);
        let overlapped = upscale(&input, &output, true, extra);
        assert_eq!(serial.len(), overlapped.len(), "{name}");
        assert!(serial == overlapped, "{name}: outputs differ");
        assert!(
            serial.len() > 21 * 256 * 128 * 3,
            "{name}: 21 frames of 256×128"
        );
    }
}
