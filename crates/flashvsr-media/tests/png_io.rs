mod common;

use std::fs;

use common::{listing, rgb16, rgb8, u16_data, u8_data, write_png, write_png_with};
use flashvsr_media::{
    create_sink, open_source, Frame, MediaError, OutputFormat, SinkOptions, SourceKind,
};
use png::{BitDepth, ColorType};

fn read_all(path: &std::path::Path) -> Vec<Frame> {
    let mut src = open_source(path).unwrap();
    let mut frames = Vec::new();
    while let Some(f) = src.next_frame().unwrap() {
        frames.push(f);
    }
    frames
}

#[test]
fn png8_sequence_round_trips_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("frames");
    let frames: Vec<Frame> = (0..12).map(|i| rgb8(17, 9, i)).collect();
    let mut sink = create_sink(&out, OutputFormat::Png, &SinkOptions::default()).unwrap();
    for f in &frames {
        sink.write_frame(f).unwrap();
    }
    assert!(
        !out.exists(),
        "nothing may appear under the final name before finish"
    );
    sink.finish().unwrap();
    let names = listing(&out);
    assert_eq!(names.len(), 12);
    assert_eq!(
        (names[0].as_str(), names[11].as_str()),
        ("000000.png", "000011.png")
    );
    assert_eq!(
        listing(tmp.path()),
        ["frames"],
        "no temporary directory left"
    );

    let src = open_source(&out).unwrap();
    let info = src.info().clone();
    assert_eq!(
        (info.kind, info.width, info.height, info.bit_depth),
        (SourceKind::PngSequence, 17, 9, 8)
    );
    assert_eq!(info.frame_count, Some(12));
    assert_eq!(read_all(&out), frames);
}

#[test]
fn png16_sequence_round_trips_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("frames16");
    let frames: Vec<Frame> = (0..3).map(|i| rgb16(5, 7, 100 + i)).collect();
    let mut sink = create_sink(&out, OutputFormat::Png16, &SinkOptions::default()).unwrap();
    for f in &frames {
        sink.write_frame(f).unwrap();
    }
    sink.finish().unwrap();
    let back = read_all(&out);
    assert_eq!(back[0].bit_depth, 16);
    assert_eq!(back, frames);
}

#[test]
fn png_formats_convert_between_depths() {
    let tmp = tempfile::tempdir().unwrap();
    // 8-bit frames written as PNG16 are widened by 257; 16-bit frames written as PNG are rounded.
    let f8 = rgb8(4, 3, 1);
    let out16 = tmp.path().join("wide");
    let mut sink = create_sink(&out16, OutputFormat::Png16, &SinkOptions::default()).unwrap();
    sink.write_frame(&f8).unwrap();
    sink.finish().unwrap();
    let back = read_all(&out16);
    assert_eq!(u16_data(&back[0]), f8.to_u16_samples().as_slice());

    let f16 = Frame::from_u16(1, 1, vec![0, 128, 65535]);
    let out8 = tmp.path().join("narrow");
    let mut sink = create_sink(&out8, OutputFormat::Png, &SinkOptions::default()).unwrap();
    sink.write_frame(&f16).unwrap();
    sink.finish().unwrap();
    assert_eq!(u8_data(&read_all(&out8)[0]), &[0, 0, 255]);
}

#[test]
fn folder_is_read_in_natural_order_ignoring_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // Frame k is a 1x1 pixel of value k; the file names sort wrongly as plain strings.
    for (k, name) in [
        "frame1.png",
        "frame2.png",
        "frame10.png",
        "Frame11.PNG",
        "frame100.png",
    ]
    .iter()
    .enumerate()
    {
        write_png(
            &dir.join(name),
            1,
            1,
            ColorType::Rgb,
            BitDepth::Eight,
            &[k as u8; 3],
        );
    }
    fs::write(dir.join("notes.txt"), "not a frame").unwrap();
    fs::write(dir.join("._frame0.png"), "macOS resource fork").unwrap();
    fs::create_dir(dir.join("sub")).unwrap();
    write_png(
        &dir.join("sub/frame0.png"),
        1,
        1,
        ColorType::Rgb,
        BitDepth::Eight,
        &[99; 3],
    );

    let values: Vec<u8> = read_all(dir).iter().map(|f| u8_data(f)[0]).collect();
    assert_eq!(values, [0, 1, 2, 3, 4]);
}

#[test]
fn gray_rgba_palette_and_low_depth_pngs_become_rgb() {
    let tmp = tempfile::tempdir().unwrap();
    let p = |n: &str| tmp.path().join(n);
    write_png(
        &p("gray.png"),
        2,
        1,
        ColorType::Grayscale,
        BitDepth::Eight,
        &[10, 200],
    );
    write_png(
        &p("graya.png"),
        2,
        1,
        ColorType::GrayscaleAlpha,
        BitDepth::Eight,
        &[10, 0, 200, 255],
    );
    write_png(
        &p("rgba.png"),
        2,
        1,
        ColorType::Rgba,
        BitDepth::Eight,
        &[1, 2, 3, 0, 4, 5, 6, 128],
    );
    write_png(
        &p("gray16.png"),
        1,
        1,
        ColorType::Grayscale,
        BitDepth::Sixteen,
        &[0x12, 0x34],
    );
    write_png(
        &p("rgba16.png"),
        1,
        1,
        ColorType::Rgba,
        BitDepth::Sixteen,
        &[0, 1, 0, 2, 0, 3, 0, 4],
    );
    write_png(
        &p("gray1.png"),
        3,
        1,
        ColorType::Grayscale,
        BitDepth::One,
        &[0b1010_0000],
    );
    write_png_with(
        &p("pal.png"),
        2,
        1,
        ColorType::Indexed,
        BitDepth::Eight,
        &[1, 0],
        |e| {
            e.set_palette(vec![9, 8, 7, 50, 60, 70]);
        },
    );

    let one = |n: &str| {
        let f = read_all(&p(n));
        assert_eq!(f.len(), 1);
        f.into_iter().next().unwrap()
    };
    assert_eq!(u8_data(&one("gray.png")), &[10, 10, 10, 200, 200, 200]);
    assert_eq!(u8_data(&one("graya.png")), &[10, 10, 10, 200, 200, 200]);
    assert_eq!(u8_data(&one("rgba.png")), &[1, 2, 3, 4, 5, 6]);
    assert_eq!(u16_data(&one("gray16.png")), &[0x1234; 3]);
    assert_eq!(u16_data(&one("rgba16.png")), &[1, 2, 3]);
    assert_eq!(
        u8_data(&one("gray1.png")),
        &[255, 255, 255, 0, 0, 0, 255, 255, 255]
    );
    assert_eq!(u8_data(&one("pal.png")), &[50, 60, 70, 9, 8, 7]);
    assert_eq!(
        open_source(&p("pal.png")).unwrap().info().kind,
        SourceKind::PngImage
    );
}

#[test]
fn mixed_depth_folder_yields_16_bit_frames() {
    let tmp = tempfile::tempdir().unwrap();
    write_png(
        &tmp.path().join("a1.png"),
        1,
        1,
        ColorType::Rgb,
        BitDepth::Eight,
        &[1, 2, 255],
    );
    write_png(
        &tmp.path().join("a2.png"),
        1,
        1,
        ColorType::Rgb,
        BitDepth::Sixteen,
        &[0, 1, 0, 2, 0, 3],
    );
    let frames = read_all(tmp.path());
    assert_eq!(u16_data(&frames[0]), &[257, 514, 65535]);
    assert_eq!(u16_data(&frames[1]), &[1, 2, 3]);
}

fn err_of(path: &std::path::Path) -> MediaError {
    match open_source(path) {
        Ok(mut src) => loop {
            match src.next_frame() {
                Ok(Some(_)) => continue,
                Ok(None) => panic!("{} opened and read without error", path.display()),
                Err(e) => break e,
            }
        },
        Err(e) => e,
    }
}

#[test]
fn corrupt_png_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.png");
    write_png(
        &good,
        16,
        16,
        ColorType::Rgb,
        BitDepth::Eight,
        &common::noise(16 * 16 * 3, 5),
    );
    let bytes = fs::read(&good).unwrap();

    let truncated = tmp.path().join("cut.png");
    fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let e = err_of(&truncated);
    assert!(matches!(e, MediaError::CorruptPng { .. }), "{e}");
    assert!(e.to_string().contains("cut.png"), "{e}");

    let mut flipped = bytes.clone();
    let n = flipped.len();
    flipped[n - 20] ^= 0xff; // inside the IDAT data or its CRC
    let bad = tmp.path().join("flipped.png");
    fs::write(&bad, &flipped).unwrap();
    let e = err_of(&bad);
    assert!(e.to_string().contains("flipped.png"), "{e}");

    let fake = tmp.path().join("fake.png");
    fs::write(&fake, "hello").unwrap();
    let e = err_of(&fake);
    assert!(
        matches!(e, MediaError::Unsupported { .. }) && e.to_string().contains("fake.png"),
        "{e}"
    );

    // Inside a folder the message names the bad frame, not just the folder.
    let dir = tmp.path().join("seq");
    fs::create_dir(&dir).unwrap();
    fs::copy(&good, dir.join("f1.png")).unwrap();
    fs::write(dir.join("f2.png"), &bytes[..bytes.len() - 30]).unwrap();
    let e = err_of(&dir);
    assert!(e.to_string().contains("f2.png"), "{e}");
}

#[test]
fn inconsistent_sizes_empty_folders_and_bad_paths_are_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("seq");
    fs::create_dir(&dir).unwrap();
    write_png(
        &dir.join("1.png"),
        2,
        2,
        ColorType::Rgb,
        BitDepth::Eight,
        &[0; 12],
    );
    write_png(
        &dir.join("2.png"),
        3,
        2,
        ColorType::Rgb,
        BitDepth::Eight,
        &[0; 18],
    );
    let e = open_source(&dir).err().unwrap();
    assert!(matches!(e, MediaError::SizeMismatch { .. }), "{e}");
    assert!(
        e.to_string().contains("2.png") && e.to_string().contains("3x2"),
        "{e}"
    );

    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    fs::write(empty.join("readme.txt"), "x").unwrap();
    let e = open_source(&empty).err().unwrap();
    assert!(
        matches!(e, MediaError::NoFrames { .. }) && e.to_string().contains("no frames"),
        "{e}"
    );

    let jpgs = tmp.path().join("jpgs");
    fs::create_dir(&jpgs).unwrap();
    fs::write(jpgs.join("0001.jpg"), "x").unwrap();
    let e = open_source(&jpgs).err().unwrap();
    assert!(e.to_string().contains("0001.jpg"), "{e}");

    let missing = tmp.path().join("nope.png");
    let e = open_source(&missing).err().unwrap();
    assert!(
        matches!(e, MediaError::NotFound { .. }) && e.to_string().contains("nope.png"),
        "{e}"
    );

    let video = tmp.path().join("clip.mp4");
    fs::write(&video, [0u8, 0, 0, 0x20, b'f', b't', b'y', b'p']).unwrap();
    let e = open_source(&video).err().unwrap();
    assert!(
        matches!(e, MediaError::Unsupported { .. }) && e.to_string().contains("clip.mp4"),
        "{e}"
    );
}
