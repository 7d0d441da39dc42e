mod common;

use std::fs;

use common::{listing, rgb8};
use flashvsr_media::{create_sink, open_source, DpxColor, MediaError, OutputFormat, SinkOptions};

const OVERWRITE: SinkOptions = SinkOptions {
    overwrite: true,
    fps: None,
    pixel_aspect: None,
    names: None,
    dpx: DpxColor::BT709,
    video: flashvsr_media::VideoOptions {
        input: None,
        no_audio: false,
        no_subtitles: false,
        codec: None,
        crf: None,
        preset: None,
        pix_fmt: None,
        encoder_options: Vec::new(),
        colour: None,
    },
};

#[test]
fn dropped_sinks_leave_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, format) in [
        ("frames", OutputFormat::Png),
        ("f16", OutputFormat::Png16),
        ("clip.y4m", OutputFormat::Y4m),
    ] {
        let out = tmp.path().join(name);
        let mut sink = create_sink(&out, format, &SinkOptions::default()).unwrap();
        for i in 0..5 {
            sink.write_frame(&rgb8(8, 6, i)).unwrap();
        }
        assert_eq!(
            listing(tmp.path()).len(),
            1,
            "one hidden temporary while writing"
        );
        assert!(listing(tmp.path())[0].starts_with(&format!(".{name}.partial-")));
        drop(sink);
        assert!(
            listing(tmp.path()).is_empty(),
            "{name}: {:?}",
            listing(tmp.path())
        );
    }
}

#[test]
fn existing_output_needs_overwrite() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("frames");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("000000.png"), "old").unwrap();
    let e = create_sink(&out, OutputFormat::Png, &SinkOptions::default())
        .err()
        .unwrap();
    assert!(
        matches!(e, MediaError::OutputExists { .. }) && e.to_string().contains("frames"),
        "{e}"
    );

    let file = tmp.path().join("clip.y4m");
    fs::write(&file, "old").unwrap();
    let e = create_sink(&file, OutputFormat::Y4m, &SinkOptions::default())
        .err()
        .unwrap();
    assert!(
        matches!(e, MediaError::OutputExists { .. }) && e.to_string().contains("clip.y4m"),
        "{e}"
    );
    assert_eq!(fs::read(&file).unwrap(), b"old");
}

#[test]
fn overwrite_replaces_the_old_output_only_at_finish() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("frames");
    fs::create_dir(&out).unwrap();
    for i in 0..4 {
        fs::write(out.join(format!("old{i}.png")), "old").unwrap();
    }
    let mut sink = create_sink(&out, OutputFormat::Png, &OVERWRITE).unwrap();
    sink.write_frame(&rgb8(3, 2, 1)).unwrap();
    assert_eq!(listing(&out).len(), 4, "old output untouched before finish");
    sink.finish().unwrap();
    assert_eq!(listing(&out), ["000000.png"]);
    assert_eq!(listing(tmp.path()), ["frames"]);

    // A dropped overwriting sink keeps the old output.
    let mut sink = create_sink(&out, OutputFormat::Png, &OVERWRITE).unwrap();
    sink.write_frame(&rgb8(3, 2, 2)).unwrap();
    sink.write_frame(&rgb8(3, 2, 3)).unwrap();
    drop(sink);
    assert_eq!(listing(&out), ["000000.png"]);
    assert_eq!(listing(tmp.path()), ["frames"]);

    let file = tmp.path().join("clip.y4m");
    fs::write(&file, "old").unwrap();
    let mut sink = create_sink(&file, OutputFormat::Y4m, &OVERWRITE).unwrap();
    sink.write_frame(&rgb8(4, 4, 1)).unwrap();
    assert_eq!(fs::read(&file).unwrap(), b"old");
    sink.finish().unwrap();
    assert_eq!(open_source(&file).unwrap().info().frame_count, Some(1));
}

#[test]
fn overwrite_refuses_directories_that_are_not_frame_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("home");
    fs::create_dir_all(out.join("Documents")).unwrap();
    fs::write(out.join("thesis.tex"), "precious").unwrap();
    let e = create_sink(&out, OutputFormat::Png, &OVERWRITE)
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("home") && e.to_string().contains("refusing"),
        "{e}"
    );
    assert!(out.join("thesis.tex").exists());
    assert_eq!(listing(tmp.path()), ["home"]);
}

#[test]
fn sinks_reject_frames_of_another_size_and_bad_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let mut sink = create_sink(
        &tmp.path().join("f"),
        OutputFormat::Png,
        &SinkOptions::default(),
    )
    .unwrap();
    sink.write_frame(&rgb8(4, 4, 1)).unwrap();
    let e = sink.write_frame(&rgb8(5, 4, 1)).unwrap_err();
    assert!(e.to_string().contains("5x4"), "{e}");

    let e = create_sink(
        &tmp.path().join("no/such/dir/out"),
        OutputFormat::Png,
        &SinkOptions::default(),
    )
    .err()
    .unwrap();
    assert!(
        matches!(e, MediaError::Write { .. }) && e.to_string().contains("no/such/dir/out"),
        "{e}"
    );

    let e = create_sink(
        std::path::Path::new("-"),
        OutputFormat::Png,
        &SinkOptions::default(),
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("stdout"), "{e}");

    // A y4m sink with no frames cannot produce a valid file: finish fails and leaves nothing.
    let sink = create_sink(
        &tmp.path().join("empty.y4m"),
        OutputFormat::Y4m,
        &SinkOptions::default(),
    )
    .unwrap();
    assert!(sink.finish().is_err());
    assert!(!tmp.path().join("empty.y4m").exists());
}

#[test]
fn output_format_follows_the_path() {
    use std::path::Path;
    assert_eq!(OutputFormat::from_path(Path::new("-")), OutputFormat::Y4m);
    assert_eq!(
        OutputFormat::from_path(Path::new("a/b.Y4M")),
        OutputFormat::Y4m
    );
    assert_eq!(
        OutputFormat::from_path(Path::new("a/frames")),
        OutputFormat::Png
    );
}
