mod common;

use std::fs;
use std::path::Path;

use common::{noise, rgb16, smooth8, u16_data, u8_data};
use flashvsr_media::{
    create_sink, open_source, Frame, FrameSource, MediaError, OutputFormat, SinkOptions, YuvMatrix,
    YuvRange,
};

fn open(path: &Path) -> Box<dyn FrameSource> {
    open_source(path).unwrap_or_else(|e| panic!("{e}"))
}

fn first_frame(path: &Path) -> Frame {
    open(path).next_frame().unwrap().unwrap()
}

fn write_y4m(path: &Path, frames: &[Frame], options: &SinkOptions) {
    let mut sink = create_sink(path, OutputFormat::Y4m, options).unwrap();
    for f in frames {
        sink.write_frame(f).unwrap();
    }
    sink.finish().unwrap();
}

fn header_line(path: &Path) -> String {
    let bytes = fs::read(path).unwrap();
    let end = bytes.iter().position(|&b| b == b'\n').unwrap();
    String::from_utf8(bytes[..end].to_vec()).unwrap()
}

fn max_abs_diff8(a: &[u8], b: &[u8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| (x as i32 - y as i32).abs())
        .max()
        .unwrap()
}

#[test]
fn rgb8_round_trips_through_y4m_within_two_codes() {
    let tmp = tempfile::tempdir().unwrap();
    // Below 720 rows (BT.601) and at 720 rows (BT.709), smooth content and noise.
    for (w, h) in [(64, 48), (1280, 720)] {
        let frames = vec![smooth8(w, h), Frame::from_u8(w, h, noise(w * h * 3, 3))];
        let path = tmp.path().join(format!("rt{h}.y4m"));
        write_y4m(&path, &frames, &SinkOptions::default());
        assert_eq!(
            header_line(&path),
            format!("YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C444 XCOLORRANGE=LIMITED")
        );
        let mut src = open(&path);
        let info = src.info().clone();
        assert_eq!(
            (info.width, info.height, info.bit_depth, info.frame_count),
            (w, h, 8, Some(2))
        );
        let yuv = info.yuv.unwrap();
        assert_eq!(
            yuv.matrix,
            if h >= 720 {
                YuvMatrix::Bt709
            } else {
                YuvMatrix::Bt601
            }
        );
        assert_eq!(yuv.range, YuvRange::Limited);
        for f in &frames {
            let back = src.next_frame().unwrap().unwrap();
            let d = max_abs_diff8(u8_data(f), u8_data(&back));
            assert!(d <= 2, "{w}x{h}: max difference {d}");
        }
        assert!(src.next_frame().unwrap().is_none());
    }
}

#[test]
fn rgb16_round_trips_through_c444p16() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("rt16.y4m");
    let frame = rgb16(20, 10, 9);
    let opts = SinkOptions {
        fps: Some((24000, 1001)),
        pixel_aspect: Some((4, 3)),
        ..Default::default()
    };
    write_y4m(&path, std::slice::from_ref(&frame), &opts);
    assert_eq!(
        header_line(&path),
        "YUV4MPEG2 W20 H10 F24000:1001 Ip A4:3 C444p16 XCOLORRANGE=LIMITED"
    );
    let mut src = open(&path);
    assert_eq!(src.info().fps, Some((24000, 1001)));
    assert_eq!(src.info().pixel_aspect, Some((4, 3)));
    assert_eq!((src.info().bit_depth, src.info().source_bits), (16, 16));
    let back = src.next_frame().unwrap().unwrap();
    let d = u16_data(&frame)
        .iter()
        .zip(u16_data(&back))
        .map(|(&a, &b)| (a as i32 - b as i32).abs())
        .max()
        .unwrap();
    assert!(d <= 4, "max difference {d}");
}

/// A y4m stream from a header and per-frame plane bytes.
fn y4m_bytes(header: &str, frames: &[Vec<u8>]) -> Vec<u8> {
    let mut v = format!("{header}\n").into_bytes();
    for f in frames {
        v.extend_from_slice(b"FRAME\n");
        v.extend_from_slice(f);
    }
    v
}

fn planes(w: usize, h: usize, cw: usize, ch: usize, y: u8, u: u8, v: u8) -> Vec<u8> {
    let mut out = vec![y; w * h];
    out.extend(vec![u; cw * ch]);
    out.extend(vec![v; cw * ch]);
    out
}

#[test]
fn reads_420_limited_range_colours() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("c.y4m");
    // BT.601 limited: white, black, and the classic red (81, 90, 240).
    let frames = [
        planes(4, 4, 2, 2, 235, 128, 128),
        planes(4, 4, 2, 2, 16, 128, 128),
        planes(4, 4, 2, 2, 81, 90, 240),
    ];
    fs::write(
        &path,
        y4m_bytes("YUV4MPEG2 W4 H4 F25:1 Ip A0:0 C420jpeg", &frames),
    )
    .unwrap();
    let mut src = open(&path);
    assert_eq!(src.info().fps, Some((25, 1)));
    assert_eq!(src.info().pixel_aspect, None);
    assert_eq!(src.info().frame_count, Some(3));
    let px = |f: &Frame| u8_data(f)[..3].to_vec();
    assert_eq!(px(&src.next_frame().unwrap().unwrap()), [255, 255, 255]);
    assert_eq!(px(&src.next_frame().unwrap().unwrap()), [0, 0, 0]);
    let red = px(&src.next_frame().unwrap().unwrap());
    assert!(red[0] >= 253 && red[1] <= 2 && red[2] <= 2, "{red:?}");
}

#[test]
fn full_range_tag_and_default_420() {
    let tmp = tempfile::tempdir().unwrap();
    let full = tmp.path().join("full.y4m");
    fs::write(
        &full,
        y4m_bytes(
            "YUV4MPEG2 W2 H2 XCOLORRANGE=FULL",
            &[
                planes(2, 2, 1, 1, 0, 128, 128),
                planes(2, 2, 1, 1, 255, 128, 128),
            ],
        ),
    )
    .unwrap();
    let mut src = open(&full);
    assert_eq!(src.info().yuv.unwrap().range, YuvRange::Full);
    assert_eq!(src.info().yuv.unwrap().colorspace, "420jpeg");
    assert_eq!(u8_data(&src.next_frame().unwrap().unwrap()), &[0; 12]);
    assert_eq!(u8_data(&src.next_frame().unwrap().unwrap()), &[255; 12]);
}

#[test]
fn chroma_is_upsampled_bilinearly_at_the_tagged_siting() {
    let tmp = tempfile::tempdir().unwrap();
    // Full range, BT.601, Y = 128, Cr = 128, Cb = 128 | 168 in the two chroma columns:
    // blue = 128 + 1.772 · (Cb − 128) at the interpolated chroma position.
    let mut data = vec![128u8; 4 * 2];
    data.extend([128, 168]);
    data.extend([128, 128]);
    let blue = |tag: &str| {
        let path = tmp.path().join(format!("{tag}.y4m"));
        fs::write(
            &path,
            y4m_bytes(
                &format!("YUV4MPEG2 W4 H2 C{tag} XCOLORRANGE=FULL"),
                &[data.clone()],
            ),
        )
        .unwrap();
        let f = first_frame(&path);
        (0..4).map(|x| u8_data(&f)[x * 3 + 2]).collect::<Vec<u8>>()
    };
    // Centred: chroma positions −0.25 (clamped), 0.25, 0.75, 1.25 (clamped).
    assert_eq!(blue("420jpeg"), [128, 146, 181, 199]);
    // Left co-sited: 0, 0.5, 1, 1.5 (clamped).
    assert_eq!(blue("420mpeg2"), [128, 163, 199, 199]);
}

#[test]
fn reads_high_bit_depth_mono_and_alpha() {
    let tmp = tempfile::tempdir().unwrap();
    let le = |v: u16, n: usize| v.to_le_bytes().repeat(n);
    let p10 = tmp.path().join("p10.y4m");
    let mut frame = le(940, 4);
    frame.extend(le(512, 2));
    fs::write(&p10, y4m_bytes("YUV4MPEG2 W2 H2 F30:1 C420p10", &[frame])).unwrap();
    let src = open(&p10);
    assert_eq!((src.info().bit_depth, src.info().source_bits), (16, 10));
    assert_eq!(u16_data(&first_frame(&p10)), &[65535; 12]);

    let mono = tmp.path().join("mono.y4m");
    fs::write(
        &mono,
        y4m_bytes("YUV4MPEG2 W3 H1 Cmono", &[vec![16, 126, 235]]),
    )
    .unwrap();
    let f = first_frame(&mono);
    assert_eq!(u8_data(&f), &[0, 0, 0, 128, 128, 128, 255, 255, 255]);

    let alpha = tmp.path().join("alpha.y4m");
    let mut frame = vec![235u8; 2];
    frame.extend([128, 128, 128, 128, 7, 7]);
    fs::write(
        &alpha,
        y4m_bytes("YUV4MPEG2 W2 H1 C444alpha", &[frame.clone(), frame]),
    )
    .unwrap();
    let mut src = open(&alpha);
    assert_eq!(u8_data(&src.next_frame().unwrap().unwrap()), &[255; 6]);
    assert_eq!(u8_data(&src.next_frame().unwrap().unwrap()), &[255; 6]);
    assert!(src.next_frame().unwrap().is_none());
}

#[test]
fn frame_parameters_are_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("params.y4m");
    let mut bytes = b"YUV4MPEG2 W2 H2 C444 It\nFRAME Ixyz\n".to_vec();
    bytes.extend(planes(2, 2, 2, 2, 235, 128, 128));
    fs::write(&path, bytes).unwrap();
    let mut src = open(&path);
    assert!(src.info().interlaced);
    assert_eq!(src.info().frame_count, None);
    assert_eq!(u8_data(&src.next_frame().unwrap().unwrap()), &[255; 12]);
    assert!(src.next_frame().unwrap().is_none());
}

#[test]
fn truncated_and_malformed_streams_are_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let frame = planes(4, 4, 2, 2, 100, 128, 128);
    let good = y4m_bytes("YUV4MPEG2 W4 H4 C420jpeg", &[frame.clone(), frame]);

    let cut = tmp.path().join("cut.y4m");
    fs::write(&cut, &good[..good.len() - 5]).unwrap();
    let mut src = open(&cut);
    assert!(src.next_frame().unwrap().is_some());
    let e = src.next_frame().unwrap_err();
    assert!(
        matches!(
            e,
            MediaError::TruncatedY4m {
                index: 1,
                expected: 30,
                got: 25,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("cut.y4m") && e.to_string().contains("truncated"),
        "{e}"
    );

    let cut_marker = tmp.path().join("cut_marker.y4m");
    fs::write(&cut_marker, &good[..good.len() - 27]).unwrap();
    let mut src = open(&cut_marker);
    assert!(src.next_frame().unwrap().is_some());
    let e = src.next_frame().unwrap_err();
    assert!(
        matches!(e, MediaError::TruncatedY4m { index: 1, .. })
            && e.to_string().contains("cut_marker.y4m"),
        "{e}"
    );

    let bad_cs = tmp.path().join("cs.y4m");
    fs::write(&bad_cs, y4m_bytes("YUV4MPEG2 W4 H4 C420p11", &[])).unwrap();
    let e = open_source(&bad_cs).err().unwrap();
    assert!(
        e.to_string().contains("cs.y4m") && e.to_string().contains("C420p11"),
        "{e}"
    );

    let no_size = tmp.path().join("nosize.y4m");
    fs::write(&no_size, "YUV4MPEG2 W4 C420\n").unwrap();
    let e = open_source(&no_size).err().unwrap();
    assert!(e.to_string().contains("nosize.y4m"), "{e}");

    let huge = tmp.path().join("huge.y4m");
    fs::write(&huge, "YUV4MPEG2 W4000000000 H4000000000\n").unwrap();
    assert!(open_source(&huge)
        .err()
        .unwrap()
        .to_string()
        .contains("huge.y4m"));

    let not_y4m = tmp.path().join("plain.y4m");
    fs::write(&not_y4m, "hello world").unwrap();
    let e = open_source(&not_y4m).err().unwrap();
    assert!(
        matches!(e, MediaError::Unsupported { .. }) && e.to_string().contains("plain.y4m"),
        "{e}"
    );

    let wrong_marker = tmp.path().join("marker.y4m");
    let mut bytes = good.clone();
    let second = bytes.len() - 30;
    bytes[second..second + 5].copy_from_slice(b"FRAMX");
    fs::write(&wrong_marker, bytes).unwrap();
    let mut src = open(&wrong_marker);
    assert!(src.next_frame().unwrap().is_some());
    let e = src.next_frame().unwrap_err();
    assert!(
        e.to_string().contains("marker.y4m") && e.to_string().contains("FRAME"),
        "{e}"
    );
}
