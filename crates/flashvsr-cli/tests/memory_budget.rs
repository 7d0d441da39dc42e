//! `--max-vram` on the CPU backend (its tensor memory is metered the way a device's is): tiles
//! chosen to fit, stream state parked between tiles' turns without changing a bit, smaller tiles
//! after running out, and a clean failure when nothing fits.

mod cli_support;

use std::path::Path;

use cli_support::{sorted_files, stderr, upscale_on_cpu, write_png_clip};

fn read_all(dir: &Path) -> Vec<Vec<u8>> {
    sorted_files(dir)
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect()
}

#[test]
fn a_budget_picks_parked_tiles_that_match_the_same_tiles_by_hand() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write_png_clip(&input, 9, 96, 64);
    let budget = tmp.path().join("budget");
    let out = upscale_on_cpu(&input, &budget, &["--max-vram", "200M"], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(
        log.contains("2 tiles of 256×256 model pixels, stream state parked"),
        "{log}"
    );
    let by_hand = tmp.path().join("by_hand");
    let by_hand_args = ["--tile-size", "64", "--tile-overlap", "24"];
    let out = upscale_on_cpu(&input, &by_hand, &by_hand_args, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (a, b) = (read_all(&budget), read_all(&by_hand));
    assert_eq!(a.len(), 9);
    assert!(
        a == b,
        "parked tiles under --max-vram differ from the same tiles by hand"
    );

    // Without a budget the whole canvas is one stream.
    let plain = tmp.path().join("plain");
    let out = upscale_on_cpu(&input, &plain, &[], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("tiled DiT"));
}

#[test]
fn running_out_of_memory_starts_again_with_smaller_tiles() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write_png_clip(&input, 9, 96, 64);
    let output = tmp.path().join("out");
    // Tiles as wide as the canvas do not fit in 80 MiB; 128-pixel tiles do.
    let extra = [
        "--max-vram",
        "80M",
        "--tile-size",
        "96",
        "--tile-overlap",
        "8",
    ];
    let out = upscale_on_cpu(&input, &output, &extra, &[]);
    let log = stderr(&out);
    assert!(out.status.success(), "{log}");
    assert!(
        log.contains("out of device memory with tiles of 384 model pixels; starting again"),
        "{log}"
    );
    // Then 256-pixel tiles, and 128-pixel ones if those run out too (how close the 256 run comes
    // to the limit depends on when worker threads free their buffers).
    assert!(log.contains("2 tiles of 256×256 model pixels"), "{log}");
    assert_eq!(sorted_files(&output).len(), 9);
}

#[test]
fn a_budget_nothing_fits_in_fails_with_exit_1_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    write_png_clip(&input, 9, 96, 64);
    let output = tmp.path().join("out.y4m");
    let out = upscale_on_cpu(
        &input,
        &output,
        &["--max-vram", "20M", "--tile-overlap", "8"],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log = stderr(&out);
    assert!(log.contains("out of memory"), "{log}");
    assert!(log.contains("raise --max-vram"), "{log}");
    let left: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "in")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}
