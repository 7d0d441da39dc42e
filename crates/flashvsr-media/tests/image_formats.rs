//! Image sequences beyond PNG: TIFF, EXR, DPX and JPEG in; TIFF16, EXR and DPX10 out; output
//! names mirroring the input; errors for corrupt files.

mod common;

use std::fs;
use std::path::Path;

use common::{listing, rgb16, rgb8, smooth8, u16_data, u8_data};
use exr::prelude::f16;
use flashvsr_media::{
    create_sink, open_source, Frame, ImageFormat, MediaError, OutputFormat, SinkOptions, SourceKind,
};
use image::ImageEncoder;

fn read_all(path: &Path) -> Vec<Frame> {
    let mut src = open_source(path).unwrap();
    let mut frames = Vec::new();
    while let Some(f) = src.next_frame().unwrap() {
        frames.push(f);
    }
    frames
}

fn write_seq(out: &Path, format: OutputFormat, frames: &[Frame], options: &SinkOptions) {
    let mut sink = create_sink(out, format, options).unwrap();
    for f in frames {
        sink.write_frame(f).unwrap();
    }
    assert!(!out.exists(), "nothing under the final name before finish");
    sink.finish().unwrap();
}

/// The error opening or reading `path` to the end gives (it must give one).
fn err_of(path: &Path) -> MediaError {
    match open_source(path) {
        Ok(mut src) => loop {
            match src.next_frame() {
                Ok(Some(_)) => {}
                Ok(None) => panic!("{} opened and read without error", path.display()),
                Err(e) => break e,
            }
        },
        Err(e) => e,
    }
}

/// A 16-bit frame of noise with the extreme codes in its first pixels.
fn rgb16_edges(w: usize, h: usize, seed: u64) -> Frame {
    let mut f = rgb16(w, h, seed);
    if let flashvsr_media::FrameData::U16(d) = &mut f.data {
        let edges = [0u16, 65535, 1, 65534, 32767, 32768, 257, 64, 65];
        d[..edges.len()].copy_from_slice(&edges);
    }
    f
}

/// 16-bit code → 10-bit code → 16-bit code, rounding to nearest both ways.
fn dpx10_quantised(v: u16) -> u16 {
    let c = (v as u32 * 1023 + 32767) / 65535;
    ((c * 65535 + 511) / 1023) as u16
}

/// 16-bit code → half float of `v / 65535` → 16-bit code.
fn half_quantised(v: u16, max: f32) -> u16 {
    let h = f16::from_f32(v as f32 / max).to_f32();
    (h.clamp(0.0, 1.0) * 65535.0).round() as u16
}

#[test]
fn tiff16_round_trips_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("tif");
    let frames: Vec<Frame> = (0..4).map(|i| rgb16_edges(13, 7, i)).collect();
    write_seq(&out, OutputFormat::Tiff16, &frames, &SinkOptions::default());
    assert_eq!(
        listing(&out),
        ["000000.tif", "000001.tif", "000002.tif", "000003.tif"]
    );
    let src = open_source(&out).unwrap();
    let info = src.info().clone();
    assert_eq!(info.kind, SourceKind::ImageSequence(ImageFormat::Tiff));
    assert_eq!(
        (info.width, info.height, info.bit_depth, info.source_bits),
        (13, 7, 16, 16)
    );
    assert_eq!((info.frame_count, info.fps), (Some(4), None));
    assert_eq!(read_all(&out), frames);

    // 8-bit frames are widened exactly.
    let f8 = rgb8(5, 3, 9);
    let out8 = tmp.path().join("tif8");
    write_seq(
        &out8,
        OutputFormat::Tiff16,
        std::slice::from_ref(&f8),
        &SinkOptions::default(),
    );
    let back = read_all(&out8);
    assert_eq!(u16_data(&back[0]), f8.to_u16_samples());
}

#[test]
fn exr_round_trips_within_half_float_precision() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("exr");
    let frames: Vec<Frame> = (0..3).map(|i| rgb16_edges(11, 6, 40 + i)).collect();
    write_seq(&out, OutputFormat::Exr, &frames, &SinkOptions::default());
    assert_eq!(listing(&out), ["000000.exr", "000001.exr", "000002.exr"]);
    let src = open_source(&out).unwrap();
    let info = src.info().clone();
    assert_eq!(info.kind, SourceKind::ImageSequence(ImageFormat::Exr));
    assert_eq!((info.bit_depth, info.source_bits), (16, 16));
    let back = read_all(&out);
    for (f, b) in frames.iter().zip(&back) {
        for (&v, &r) in u16_data(f).iter().zip(u16_data(b)) {
            assert_eq!(r, half_quantised(v, 65535.0), "code {v}");
            // Half floats keep 11 significant bits: relative error at most 2^-11.
            let err = (r as f64 - v as f64).abs();
            assert!(err <= v as f64 / 2048.0 + 1.0, "code {v} came back as {r}");
        }
    }

    // 8-bit frames are written as v / 255.
    let f8 = rgb8(4, 4, 3);
    let out8 = tmp.path().join("exr8");
    write_seq(
        &out8,
        OutputFormat::Exr,
        std::slice::from_ref(&f8),
        &SinkOptions::default(),
    );
    let back = read_all(&out8);
    let want: Vec<u16> = u8_data(&f8)
        .iter()
        .map(|&v| half_quantised(v as u16, 255.0))
        .collect();
    assert_eq!(u16_data(&back[0]), want);
}

#[test]
fn dpx10_round_trips_within_10_bit_quantisation() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("dpx");
    let frames: Vec<Frame> = (0..3).map(|i| rgb16_edges(9, 5, 70 + i)).collect();
    write_seq(&out, OutputFormat::Dpx10, &frames, &SinkOptions::default());
    assert_eq!(listing(&out), ["000000.dpx", "000001.dpx", "000002.dpx"]);
    let src = open_source(&out).unwrap();
    let info = src.info().clone();
    assert_eq!(info.kind, SourceKind::ImageSequence(ImageFormat::Dpx));
    assert_eq!(
        (info.width, info.height, info.bit_depth, info.source_bits),
        (9, 5, 16, 10)
    );
    let back = read_all(&out);
    for (f, b) in frames.iter().zip(&back) {
        for (&v, &r) in u16_data(f).iter().zip(u16_data(b)) {
            assert_eq!(r, dpx10_quantised(v), "code {v}");
            // Within one 10-bit code of the original.
            assert!(
                (r as f64 - v as f64).abs() <= 65535.0 / 1023.0,
                "{v} -> {r}"
            );
        }
    }

    // 8-bit frames: round(v * 1023 / 255), read back as 16-bit.
    let f8 = rgb8(3, 2, 5);
    let out8 = tmp.path().join("dpx8");
    write_seq(
        &out8,
        OutputFormat::Dpx10,
        std::slice::from_ref(&f8),
        &SinkOptions::default(),
    );
    let want: Vec<u16> = u8_data(&f8)
        .iter()
        .map(|&v| {
            let c = (v as u32 * 1023 + 127) / 255;
            ((c * 65535 + 511) / 1023) as u16
        })
        .collect();
    assert_eq!(u16_data(&read_all(&out8)[0]), want);
}

fn encode_with_image(path: &Path, w: u32, h: u32, data: &[u8], color: image::ExtendedColorType) {
    let file = fs::File::create(path).unwrap();
    let ext = path
        .extension()
        .unwrap()
        .to_str()
        .unwrap()
        .to_ascii_lowercase();
    match ext.as_str() {
        "jpg" => image::codecs::jpeg::JpegEncoder::new_with_quality(file, 95)
            .write_image(data, w, h, color)
            .unwrap(),
        "tif" | "tiff" => image::codecs::tiff::TiffEncoder::new(std::io::BufWriter::new(file))
            .write_image(data, w, h, color)
            .unwrap(),
        other => panic!("no encoder for {other}"),
    }
}

#[test]
fn jpeg_from_another_encoder_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let src = smooth8(48, 32);
    let path = tmp.path().join("still.jpg");
    // image's own JPEG encoder; the reader decodes with zune-jpeg.
    encode_with_image(&path, 48, 32, u8_data(&src), image::ExtendedColorType::Rgb8);
    let mut s = open_source(&path).unwrap();
    let info = s.info().clone();
    assert_eq!(info.kind, SourceKind::Image(ImageFormat::Jpeg));
    assert_eq!(
        (info.width, info.height, info.bit_depth, info.frame_count),
        (48, 32, 8, Some(1))
    );
    assert_eq!(s.frame_name(0).as_deref(), Some("still"));
    let f = s.next_frame().unwrap().unwrap();
    assert!(s.next_frame().unwrap().is_none());
    let diffs: Vec<i32> = u8_data(&f)
        .iter()
        .zip(u8_data(&src))
        .map(|(&a, &b)| (a as i32 - b as i32).abs())
        .collect();
    let mean = diffs.iter().sum::<i32>() as f64 / diffs.len() as f64;
    assert!(mean < 2.0, "mean error {mean}");
    assert!(*diffs.iter().max().unwrap() < 24);
}

#[test]
fn tiff_of_other_layouts_becomes_rgb() {
    let tmp = tempfile::tempdir().unwrap();
    // 8-bit RGB: an 8-bit source.
    let rgb = tmp.path().join("rgb.tif");
    let f8 = rgb8(6, 4, 1);
    encode_with_image(&rgb, 6, 4, u8_data(&f8), image::ExtendedColorType::Rgb8);
    let back = read_all(&rgb);
    assert_eq!(back, [f8]);

    // 16-bit gray: replicated; RGBA16: alpha dropped.
    let gray = tmp.path().join("gray.tiff");
    let g: Vec<u16> = vec![0, 1000, 65535, 30000];
    let bytes: Vec<u8> = g.iter().flat_map(|v| v.to_ne_bytes()).collect();
    encode_with_image(&gray, 2, 2, &bytes, image::ExtendedColorType::L16);
    let back = read_all(&gray);
    let want: Vec<u16> = g.iter().flat_map(|&v| [v; 3]).collect();
    assert_eq!(u16_data(&back[0]), want);

    let rgba = tmp.path().join("rgba.tif");
    let px: Vec<u16> = vec![1, 2, 3, 4, 65535, 0, 7, 0];
    let bytes: Vec<u8> = px.iter().flat_map(|v| v.to_ne_bytes()).collect();
    encode_with_image(&rgba, 2, 1, &bytes, image::ExtendedColorType::Rgba16);
    assert_eq!(u16_data(&read_all(&rgba)[0]), [1, 2, 3, 65535, 0, 7]);
}

#[test]
fn float_exr_is_clamped_to_unit_range() {
    use exr::prelude::*;
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("float.exr");
    // f32 RGBA with out-of-range values: clamped to [0, 1], NaN to 0, alpha dropped.
    let px: [(f32, f32, f32, f32); 4] = [
        (0.5, 1.5, -0.25, 1.0),
        (f32::NAN, 0.0, 1.0, 0.5),
        (0.25, 0.75, 1e-3, 0.0),
        (f32::INFINITY, f32::NEG_INFINITY, 0.1, 1.0),
    ];
    write_rgba_file(&path, 2, 2, |x, y| px[y * 2 + x]).unwrap();
    let src = open_source(&path).unwrap();
    assert_eq!(src.info().kind, SourceKind::Image(ImageFormat::Exr));
    assert_eq!(src.info().source_bits, 32);
    let back = read_all(&path);
    let q = |v: f32| (v * 65535.0).round() as u16;
    assert_eq!(
        u16_data(&back[0]),
        [
            q(0.5),
            65535,
            0,
            0,
            0,
            65535,
            q(0.25),
            q(0.75),
            q(1e-3),
            65535,
            0,
            q(0.1)
        ]
    );
}

/// A DPX file made by hand, independent of our writer: only the fields a reader needs.
#[allow(clippy::too_many_arguments)]
fn make_dpx(
    big_endian: bool,
    w: u32,
    h: u32,
    descriptor: u8,
    bits: u8,
    packing: u16,
    words_per_line: usize,
    line: impl Fn(u32) -> Vec<u32>,
) -> Vec<u8> {
    let offset = 2048u32;
    let mut b = vec![0u8; offset as usize];
    let put32 = |b: &mut Vec<u8>, at: usize, v: u32| {
        let bytes = if big_endian {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        b[at..at + 4].copy_from_slice(&bytes);
    };
    b[0..4].copy_from_slice(if big_endian { b"SDPX" } else { b"XPDS" });
    put32(&mut b, 4, offset);
    let el = if big_endian {
        1u16.to_be_bytes()
    } else {
        1u16.to_le_bytes()
    };
    b[770..772].copy_from_slice(&el);
    put32(&mut b, 772, w);
    put32(&mut b, 776, h);
    b[800] = descriptor;
    b[803] = bits;
    let pk = if big_endian {
        packing.to_be_bytes()
    } else {
        packing.to_le_bytes()
    };
    b[804..806].copy_from_slice(&pk);
    for y in 0..h {
        let words = line(y);
        assert_eq!(words.len(), words_per_line);
        for word in words {
            b.extend(if big_endian {
                word.to_be_bytes()
            } else {
                word.to_le_bytes()
            });
        }
    }
    let size = b.len() as u32;
    put32(&mut b, 16, size);
    b
}

#[test]
fn dpx_variants_are_read() {
    let tmp = tempfile::tempdir().unwrap();
    let scale10 = |c: u32| ((c * 65535 + 511) / 1023) as u16;
    let scale12 = |c: u32| ((c * 65535 + 2047) / 4095) as u16;
    // Pixel (x, y) has codes r = 100x + y, g = 1023 - r, b = 512.
    let codes = |x: u32, y: u32| [100 * x + y, 1023 - (100 * x + y), 512];
    let want10: Vec<u16> = (0..2)
        .flat_map(|y| (0..3).flat_map(move |x| codes(x, y)))
        .map(scale10)
        .collect();
    for big in [true, false] {
        for packing in [1u16, 2] {
            let shift = if packing == 1 { 2 } else { 0 };
            let bytes = make_dpx(big, 3, 2, 50, 10, packing, 3, |y| {
                (0..3)
                    .map(|x| {
                        let [r, g, b] = codes(x, y);
                        (r << 20 | g << 10 | b) << shift
                    })
                    .collect()
            });
            let p = tmp.path().join(format!("ten_{big}_{packing}.dpx"));
            fs::write(&p, bytes).unwrap();
            let back = read_all(&p);
            assert_eq!(u16_data(&back[0]), want10, "{}", p.display());
        }
    }

    // 10-bit RGBA: components run across words (4 per pixel, 3 per word); alpha dropped.
    let comps: Vec<u32> = vec![1, 2, 3, 1000, 4, 5, 6, 1000]; // two pixels
    let bytes = make_dpx(true, 2, 1, 51, 10, 1, 3, |_| {
        let mut c = comps.clone();
        c.resize(9, 0);
        c.chunks(3)
            .map(|t| (t[0] << 22) | (t[1] << 12) | (t[2] << 2))
            .collect()
    });
    let p = tmp.path().join("rgba.dpx");
    fs::write(&p, bytes).unwrap();
    assert_eq!(u16_data(&read_all(&p)[0]), [1, 2, 3, 4, 5, 6].map(scale10));

    // 8-bit RGB, little-endian, lines padded to whole words: 8-bit frames.
    let bytes = make_dpx(false, 3, 2, 50, 8, 1, 3, |y| {
        let line: Vec<u8> = (0..9).map(|i| (10 * y + i) as u8).chain([0; 3]).collect();
        line.chunks(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    });
    let p = tmp.path().join("eight.dpx");
    fs::write(&p, bytes).unwrap();
    let s = open_source(&p).unwrap();
    assert_eq!((s.info().bit_depth, s.info().source_bits), (8, 8));
    let want8: Vec<u8> = (0..2u8)
        .flat_map(|y| (0..9u8).map(move |i| 10 * y + i))
        .collect();
    assert_eq!(u8_data(&read_all(&p)[0]), want8);

    // 16-bit luma, big-endian: replicated to RGB.
    let bytes = make_dpx(true, 2, 1, 6, 16, 0, 1, |_| vec![0x1234_ffff]);
    let p = tmp.path().join("luma16.dpx");
    fs::write(&p, bytes).unwrap();
    assert_eq!(
        u16_data(&read_all(&p)[0]),
        [0x1234, 0x1234, 0x1234, 0xffff, 0xffff, 0xffff]
    );

    // 12-bit RGB, method A (value in the high 12 bits of each 16-bit word), big-endian.
    let bytes = make_dpx(true, 1, 1, 50, 12, 1, 2, |_| {
        vec![(4095 << 4) << 16 | (2048 << 4), (7 << 4) << 16]
    });
    let p = tmp.path().join("twelve.dpx");
    fs::write(&p, bytes).unwrap();
    assert_eq!(
        u16_data(&read_all(&p)[0]),
        [scale12(4095), scale12(2048), scale12(7)]
    );
}

#[test]
fn folders_sort_naturally_and_report_frame_names() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("shots");
    fs::create_dir(&dir).unwrap();
    // Frame k is a 1x1 TIFF of value k; the names sort wrongly as plain strings and mix
    // .tif/.TIFF.
    let names = [
        "shot1.tif",
        "shot2.TIFF",
        "shot10.tif",
        "Shot11.tiff",
        "shot100.tif",
    ];
    for (k, name) in names.iter().enumerate() {
        encode_with_image(
            &dir.join(name),
            1,
            1,
            &[k as u8; 3],
            image::ExtendedColorType::Rgb8,
        );
    }
    fs::write(dir.join("notes.txt"), "not a frame").unwrap();
    fs::write(dir.join(".hidden.tif"), "ignored").unwrap();
    let src = open_source(&dir).unwrap();
    let got: Vec<String> = (0..6).filter_map(|i| src.frame_name(i)).collect();
    assert_eq!(got, ["shot1", "shot2", "shot10", "Shot11", "shot100"]);
    let values: Vec<u8> = read_all(&dir).iter().map(|f| u8_data(f)[0]).collect();
    assert_eq!(values, [0, 1, 2, 3, 4]);
}

#[test]
fn output_names_can_mirror_the_input() {
    let tmp = tempfile::tempdir().unwrap();
    let input = tmp.path().join("in");
    fs::create_dir(&input).unwrap();
    let frames: Vec<Frame> = (0..3).map(|i| rgb16(4, 3, i)).collect();
    for (f, name) in frames.iter().zip(["a_7", "a_9", "a_10"]) {
        let mut sink = create_sink(
            &tmp.path().join("one"),
            OutputFormat::Dpx10,
            &SinkOptions::default(),
        )
        .unwrap();
        sink.write_frame(f).unwrap();
        sink.finish().unwrap();
        fs::rename(
            tmp.path().join("one/000000.dpx"),
            input.join(format!("{name}.dpx")),
        )
        .unwrap();
        fs::remove_dir(tmp.path().join("one")).unwrap();
    }
    let src = open_source(&input).unwrap();
    let names: Vec<String> = (0..3).map(|i| src.frame_name(i).unwrap()).collect();
    assert_eq!(names, ["a_7", "a_9", "a_10"]);
    assert_eq!(src.frame_name(3), None);

    for format in [
        OutputFormat::Png16,
        OutputFormat::Tiff16,
        OutputFormat::Exr,
        OutputFormat::Dpx10,
    ] {
        let out = tmp.path().join(format!("out_{format:?}"));
        let options = SinkOptions {
            names: Some(names.clone()),
            ..SinkOptions::default()
        };
        let mut sink = create_sink(&out, format, &options).unwrap();
        let mut src = open_source(&input).unwrap();
        while let Some(f) = src.next_frame().unwrap() {
            sink.write_frame(&f).unwrap();
        }
        sink.finish().unwrap();
        let ext = format.extension().unwrap();
        let mut want: Vec<String> = names.iter().map(|n| format!("{n}.{ext}")).collect();
        want.sort();
        assert_eq!(listing(&out), want);
        // Read back in natural order: the same frames (up to each format's precision).
        assert_eq!(read_all(&out).len(), 3);
    }

    // Names that cannot work are refused before anything is written.
    for bad in [
        vec!["a".to_string(), "A".to_string()],
        vec!["x/y".to_string()],
        vec![".hidden".to_string()],
        vec![String::new()],
    ] {
        let out = tmp.path().join("bad");
        let options = SinkOptions {
            names: Some(bad.clone()),
            ..SinkOptions::default()
        };
        let e = create_sink(&out, OutputFormat::Tiff16, &options)
            .err()
            .unwrap();
        assert!(
            matches!(e, MediaError::BadOutput { .. }) && e.to_string().contains("bad"),
            "{bad:?}: {e}"
        );
        assert!(!out.exists());
    }

    // More frames than names: an error at the frame without a name.
    let options = SinkOptions {
        names: Some(vec!["only".into()]),
        ..SinkOptions::default()
    };
    let mut sink = create_sink(&tmp.path().join("short"), OutputFormat::Exr, &options).unwrap();
    sink.write_frame(&frames[0]).unwrap();
    let e = sink.write_frame(&frames[1]).unwrap_err();
    assert!(e.to_string().contains("no output name"), "{e}");
}

#[test]
fn folders_hold_one_format() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("mixed");
    let frames = [rgb16(4, 4, 1), rgb16(4, 4, 2)];
    write_seq(&dir, OutputFormat::Tiff16, &frames, &SinkOptions::default());
    // A PNG among TIFFs.
    let png_dir = tmp.path().join("p");
    write_seq(
        &png_dir,
        OutputFormat::Png16,
        &frames[..1],
        &SinkOptions::default(),
    );
    fs::rename(png_dir.join("000000.png"), dir.join("000002.png")).unwrap();
    let e = open_source(&dir).err().unwrap();
    assert!(
        matches!(e, MediaError::Unsupported { .. })
            && e.to_string().contains("000002.png")
            && e.to_string().contains("one image format"),
        "{e}"
    );
    // A DPX named .tif is read as DPX: content decides, not the extension.
    let d = tmp.path().join("d");
    write_seq(
        &d,
        OutputFormat::Dpx10,
        &frames[..1],
        &SinkOptions::default(),
    );
    let disguised = tmp.path().join("frame.tif");
    fs::rename(d.join("000000.dpx"), &disguised).unwrap();
    assert_eq!(
        open_source(&disguised).unwrap().info().kind,
        SourceKind::Image(ImageFormat::Dpx)
    );
    // Formats we cannot read are refused, not skipped.
    let webp = tmp.path().join("w");
    fs::create_dir(&webp).unwrap();
    fs::write(webp.join("0001.webp"), "RIFF").unwrap();
    let e = open_source(&webp).err().unwrap();
    assert!(e.to_string().contains("0001.webp"), "{e}");
}

#[test]
fn eight_bit_dpx_next_to_ten_bit_gives_16_bit_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("seq");
    fs::create_dir(&dir).unwrap();
    let bytes8 = make_dpx(true, 1, 1, 50, 8, 1, 1, |_| vec![0x10_20_30_00]);
    fs::write(dir.join("1.dpx"), bytes8).unwrap();
    let bytes10 = make_dpx(true, 1, 1, 50, 10, 1, 1, |_| vec![(1023 << 22) | (2 << 2)]);
    fs::write(dir.join("2.dpx"), bytes10).unwrap();
    let src = open_source(&dir).unwrap();
    assert_eq!((src.info().bit_depth, src.info().source_bits), (16, 10));
    let back = read_all(&dir);
    assert_eq!(u16_data(&back[0]), [0x10 * 257, 0x20 * 257, 0x30 * 257]);
    assert_eq!(u16_data(&back[1]), [65535, 0, 128]);
}

/// Good bytes of one frame file of each format, by our writers or the image crate's.
fn good_files(dir: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let f = rgb16(24, 16, 7);
    let mut out = Vec::new();
    for (format, ext) in [
        (OutputFormat::Tiff16, "tif"),
        (OutputFormat::Exr, "exr"),
        (OutputFormat::Dpx10, "dpx"),
    ] {
        let d = dir.join(format!("good_{ext}"));
        write_seq(
            &d,
            format,
            std::slice::from_ref(&f),
            &SinkOptions::default(),
        );
        out.push((ext, fs::read(d.join(format!("000000.{ext}"))).unwrap()));
    }
    let jpg = dir.join("good.jpg");
    encode_with_image(
        &jpg,
        24,
        16,
        &f.to_u8_samples(),
        image::ExtendedColorType::Rgb8,
    );
    out.push(("jpg", fs::read(&jpg).unwrap()));
    out
}

#[test]
fn corrupt_files_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    for (ext, bytes) in good_files(tmp.path()) {
        // Truncated anywhere: header only, half way, one byte short.
        for (tag, len) in [
            ("magic", 4),
            ("head", 40.min(bytes.len())),
            ("half", bytes.len() / 2),
            ("short", bytes.len() - 1),
        ] {
            let p = tmp.path().join(format!("cut_{tag}.{ext}"));
            fs::write(&p, &bytes[..len]).unwrap();
            let e = err_of(&p);
            assert!(
                e.to_string().contains(&format!("cut_{tag}.{ext}")),
                "{ext} {tag}: {e}"
            );
            assert!(e.is_bad_input(), "{e}");
        }
        // Damaged bytes: an error or a frame, never a panic.
        for at in [bytes.len() / 3, bytes.len() / 2, bytes.len() - 8] {
            let mut bad = bytes.clone();
            for b in &mut bad[at..(at + 8).min(bytes.len())] {
                *b ^= 0x5a;
            }
            let p = tmp.path().join(format!("flip_{at}.{ext}"));
            fs::write(&p, &bad).unwrap();
            if let Ok(mut s) = open_source(&p) {
                let _ = s.next_frame();
            }
        }
        // Inside a folder the message names the bad frame.
        let dir = tmp.path().join(format!("seq_{ext}"));
        fs::create_dir(&dir).unwrap();
        fs::write(dir.join(format!("f1.{ext}")), &bytes).unwrap();
        fs::write(dir.join(format!("f2.{ext}")), &bytes[..bytes.len() / 2]).unwrap();
        let e = err_of(&dir);
        assert!(e.to_string().contains(&format!("f2.{ext}")), "{ext}: {e}");
    }
}

#[test]
fn image_sinks_refuse_stdout_and_clean_up_when_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    for format in [OutputFormat::Tiff16, OutputFormat::Exr, OutputFormat::Dpx10] {
        let e = create_sink(Path::new("-"), format, &SinkOptions::default())
            .err()
            .unwrap();
        assert!(e.to_string().contains("stdout"), "{e}");
        let out = tmp.path().join("x");
        let mut sink = create_sink(&out, format, &SinkOptions::default()).unwrap();
        sink.write_frame(&rgb8(8, 8, 1)).unwrap();
        drop(sink);
        assert!(listing(tmp.path()).is_empty());
    }
}
