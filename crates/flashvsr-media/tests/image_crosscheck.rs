//! Our DPX and EXR files checked from outside: DPX header bytes at the SMPTE 268M offsets, and,
//! where `ffmpeg` is installed, decoding by libavcodec (and files libavcodec wrote read by us).
//! Without ffmpeg those parts are skipped with a message (CI installs it).

mod common;

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{rgb16, u16_data};
use exr::prelude::f16;
use flashvsr_media::{create_sink, open_source, DpxColor, Frame, OutputFormat, SinkOptions};

fn write_one(dir: &Path, format: OutputFormat, frame: &Frame, options: &SinkOptions) -> Vec<u8> {
    let mut sink = create_sink(dir, format, options).unwrap();
    sink.write_frame(frame).unwrap();
    sink.finish().unwrap();
    let ext = format.extension().unwrap();
    fs::read(dir.join(format!("000000.{ext}"))).unwrap()
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(b[at..at + 2].try_into().unwrap())
}

fn to10(v: u16) -> u32 {
    (v as u32 * 1023 + 32767) / 65535
}

#[test]
fn dpx_header_fields_sit_at_the_smpte_offsets() {
    let tmp = tempfile::tempdir().unwrap();
    let (w, h) = (7usize, 3usize);
    let frame = rgb16(w, h, 11);
    let b = write_one(
        &tmp.path().join("a"),
        OutputFormat::Dpx10,
        &frame,
        &SinkOptions {
            fps: Some((24000, 1001)),
            ..SinkOptions::default()
        },
    );
    assert_eq!(&b[0..4], b"SDPX", "magic, big-endian");
    let offset = be32(&b, 4) as usize;
    assert_eq!(offset, 2048, "offset to image data");
    assert_eq!(&b[8..13], b"V2.0\0");
    assert_eq!(be32(&b, 16) as usize, b.len(), "file size field");
    assert_eq!(b.len(), offset + w * h * 4);
    assert_eq!(be32(&b, 24), 1664, "generic header size");
    assert_eq!(be32(&b, 28), 384, "industry header size");
    assert_eq!(&b[36..47], b"000000.dpx\0", "file name");
    assert_eq!(be16(&b, 768), 0, "orientation");
    assert_eq!(be16(&b, 770), 1, "number of elements");
    assert_eq!(be32(&b, 772) as usize, w);
    assert_eq!(be32(&b, 776) as usize, h);
    assert_eq!(be32(&b, 780), 0, "unsigned");
    assert_eq!((be32(&b, 784), be32(&b, 792)), (0, 1023), "reference codes");
    assert_eq!(b[800], 50, "descriptor RGB");
    assert_eq!(b[801], 6, "transfer BT.709 by default");
    assert_eq!(b[802], 6, "colorimetric BT.709 by default");
    assert_eq!(b[803], 10, "bit depth");
    assert_eq!(be16(&b, 804), 1, "packing method A");
    assert_eq!(be16(&b, 806), 0, "no encoding");
    assert_eq!(be32(&b, 808) as usize, offset, "element data offset");
    assert_eq!((be32(&b, 812), be32(&b, 816)), (0, 0), "no padding");
    let fps = 24000.0f32 / 1001.0;
    assert_eq!(f32::from_bits(be32(&b, 1724)), fps, "film frame rate");
    assert_eq!(f32::from_bits(be32(&b, 1940)), fps, "television frame rate");
    // Pixels: R in bits 31-22, G in 21-12, B in 11-2, one big-endian word per pixel.
    let d = u16_data(&frame);
    for p in 0..w * h {
        let word = be32(&b, offset + 4 * p);
        assert_eq!(word & 3, 0);
        assert_eq!(
            [word >> 22, word >> 12 & 0x3ff, word >> 2 & 0x3ff],
            [to10(d[3 * p]), to10(d[3 * p + 1]), to10(d[3 * p + 2])],
            "pixel {p}"
        );
    }

    // Transfer and colorimetric codes are settable.
    let b = write_one(
        &tmp.path().join("b"),
        OutputFormat::Dpx10,
        &frame,
        &SinkOptions {
            dpx: DpxColor::PRINTING_DENSITY,
            ..SinkOptions::default()
        },
    );
    assert_eq!((b[801], b[802]), (1, 1));
    assert_eq!(
        be32(&b, 1724),
        u32::MAX,
        "frame rate undefined when not given"
    );
}

fn have_ffmpeg() -> bool {
    let ok = Command::new("ffmpeg")
        .arg("-version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        eprintln!("ffmpeg not found: skipping the libavcodec cross-check (CI installs ffmpeg)");
    }
    ok
}

fn ffmpeg(args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-nostdin", "-v", "error"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Decodes an image with ffmpeg to planar G, B, R of the given raw pixel format.
fn ffmpeg_decode(path: &Path, pix_fmt: &str) -> Vec<u8> {
    ffmpeg(&[
        "-i",
        path.to_str().unwrap(),
        "-f",
        "rawvideo",
        "-pix_fmt",
        pix_fmt,
        "-",
    ])
}

/// Planar G, B, R (as ffmpeg's gbrp formats lay them out) to interleaved R, G, B.
fn gbr_planes_to_rgb<T: Copy>(planes: &[T], n: usize) -> Vec<T> {
    let (g, rest) = planes.split_at(n);
    let (b, r) = rest.split_at(n);
    (0..n).flat_map(|i| [r[i], g[i], b[i]]).collect()
}

fn le16s(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

#[test]
fn ffmpeg_reads_our_dpx_and_exr() {
    if !have_ffmpeg() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (w, h) = (12usize, 5usize);
    let frame = rgb16(w, h, 21);
    let n = w * h;

    write_one(
        &tmp.path().join("d"),
        OutputFormat::Dpx10,
        &frame,
        &SinkOptions::default(),
    );
    let raw = ffmpeg_decode(&tmp.path().join("d/000000.dpx"), "gbrp10le");
    let got = gbr_planes_to_rgb(&le16s(&raw), n);
    let want: Vec<u16> = u16_data(&frame).iter().map(|&v| to10(v) as u16).collect();
    assert_eq!(got, want, "ffmpeg's 10-bit codes of our DPX");
    // libavcodec maps the header's transfer and colorimetric codes (6 = BT.709) to its tags.
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=color_transfer,color_primaries",
        ])
        .arg(tmp.path().join("d/000000.dpx"))
        .output();
    match probe {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains("color_transfer=bt709") && text.contains("color_primaries=bt709"),
                "{text}"
            );
        }
        _ => eprintln!("ffprobe not usable: skipping the DPX colour tag check"),
    }

    write_one(
        &tmp.path().join("e"),
        OutputFormat::Exr,
        &frame,
        &SinkOptions::default(),
    );
    let raw = ffmpeg_decode(&tmp.path().join("e/000000.exr"), "gbrpf32le");
    let floats: Vec<f32> = raw
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let got = gbr_planes_to_rgb(&floats, n);
    let want: Vec<f32> = u16_data(&frame)
        .iter()
        .map(|&v| f16::from_f32(v as f32 / 65535.0).to_f32())
        .collect();
    assert_eq!(got, want, "ffmpeg's floats of our EXR");
}

#[test]
fn we_read_dpx_and_exr_written_by_ffmpeg() {
    if !have_ffmpeg() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let (w, h) = (10usize, 4usize);
    let n = w * h;
    let size = format!("{w}x{h}");
    let codes: Vec<u16> = rgb16(w, h, 5)
        .to_u16_samples()
        .iter()
        .map(|&v| v >> 6)
        .collect(); // 10-bit codes, interleaved RGB
    let planes: Vec<u16> = [1, 2, 0]
        .iter()
        .flat_map(|&c| (0..n).map(move |i| (i, c)))
        .map(|(i, c)| codes[3 * i + c])
        .collect(); // planar G, B, R
    let scale10 = |c: u16| ((c as u32 * 65535 + 511) / 1023) as u16;
    let want10: Vec<u16> = codes.iter().map(|&c| scale10(c)).collect();

    // 10-bit DPX in both byte orders (ffmpeg follows the input's).
    for (pix_fmt, bytes) in [
        (
            "gbrp10le",
            planes
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect::<Vec<u8>>(),
        ),
        (
            "gbrp10be",
            planes.iter().flat_map(|v| v.to_be_bytes()).collect(),
        ),
    ] {
        let raw = tmp.path().join(format!("{pix_fmt}.raw"));
        fs::write(&raw, bytes).unwrap();
        let dpx = tmp.path().join(format!("{pix_fmt}.dpx"));
        ffmpeg(&[
            "-f",
            "rawvideo",
            "-pix_fmt",
            pix_fmt,
            "-s",
            &size,
            "-i",
            raw.to_str().unwrap(),
            dpx.to_str().unwrap(),
        ]);
        let magic = &fs::read(&dpx).unwrap()[..4];
        assert_eq!(
            magic,
            if pix_fmt.ends_with("le") {
                b"XPDS"
            } else {
                b"SDPX"
            }
        );
        let mut src = open_source(&dpx).unwrap();
        assert_eq!(src.info().source_bits, 10);
        let f = src.next_frame().unwrap().unwrap();
        assert_eq!(u16_data(&f), want10, "{pix_fmt}");
    }

    // 16-bit little-endian and 8-bit DPX.
    let rgb48: Vec<u16> = rgb16(w, h, 6).to_u16_samples();
    let raw = tmp.path().join("rgb48le.raw");
    fs::write(
        &raw,
        rgb48
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let dpx = tmp.path().join("rgb48le.dpx");
    ffmpeg(&[
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb48le",
        "-s",
        &size,
        "-i",
        raw.to_str().unwrap(),
        dpx.to_str().unwrap(),
    ]);
    let f = open_source(&dpx).unwrap().next_frame().unwrap().unwrap();
    assert_eq!(u16_data(&f), rgb48);

    let rgb24: Vec<u8> = rgb48.iter().map(|&v| (v >> 8) as u8).collect();
    let raw = tmp.path().join("rgb24.raw");
    fs::write(&raw, &rgb24).unwrap();
    let dpx = tmp.path().join("rgb24.dpx");
    ffmpeg(&[
        "-f",
        "rawvideo",
        "-pix_fmt",
        "rgb24",
        "-s",
        &size,
        "-i",
        raw.to_str().unwrap(),
        dpx.to_str().unwrap(),
    ]);
    let f = open_source(&dpx).unwrap().next_frame().unwrap().unwrap();
    assert_eq!(f.to_u8_samples(), rgb24);

    // Half-float EXR with out-of-range values: clamped to [0, 1].
    let mut floats: Vec<f32> = rgb48.iter().map(|&v| v as f32 / 65535.0).collect();
    floats[0] = 1.75;
    floats[1] = -0.5;
    let planes: Vec<f32> = [1, 2, 0]
        .iter()
        .flat_map(|&c| (0..n).map(move |i| (i, c)))
        .map(|(i, c)| floats[3 * i + c])
        .collect();
    let raw = tmp.path().join("f32.raw");
    fs::write(
        &raw,
        planes
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    let exr = tmp.path().join("ff.exr");
    ffmpeg(&[
        "-f",
        "rawvideo",
        "-pix_fmt",
        "gbrpf32le",
        "-s",
        &size,
        "-i",
        raw.to_str().unwrap(),
        "-c:v",
        "exr",
        "-format",
        "half",
        "-compression",
        "zip16",
        exr.to_str().unwrap(),
    ]);
    let mut src = open_source(&exr).unwrap();
    assert_eq!(src.info().source_bits, 16, "half floats");
    let f = src.next_frame().unwrap().unwrap();
    // ffmpeg rounds to half its own way (towards zero): compare with the halves it stored, as
    // ffmpeg itself decodes them, and check they are within one half step of the input.
    let stored = ffmpeg_decode(&exr, "gbrpf32le");
    let stored: Vec<f32> = stored
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let stored = gbr_planes_to_rgb(&stored, n);
    for (&s, &v) in stored.iter().zip(&floats) {
        assert!(
            (s - v).abs() <= v.abs() / 1024.0 + 1e-7,
            "{v} stored as {s}"
        );
    }
    let want: Vec<u16> = stored
        .iter()
        .map(|&v| (v.clamp(0.0, 1.0) * 65535.0).round() as u16)
        .collect();
    assert_eq!(u16_data(&f), want);
}
