//! y4m source: a file or any byte stream (stdin).

use std::io::{self, Read};
use std::path::{Path, PathBuf};

use super::header::{self, Header, Layout};
use crate::frame::{Frame, FrameData, FrameSource, SourceInfo, SourceKind, YuvInfo, YuvRange};
use crate::yuv::{default_matrix, yuv_to_rgb, Chroma, Planes, Rgb};
use crate::MediaError;

/// Longest header or FRAME line accepted before the stream is called corrupt.
const MAX_LINE: usize = 4096;

pub(crate) struct Y4mSource<R> {
    reader: R,
    /// Name used in messages (`<stdin>` for the standard input).
    label: PathBuf,
    header: Header,
    info: SourceInfo,
    index: usize,
    buf: Vec<u8>,
}

/// Reads up to `buf.len()` bytes; fewer only at the end of the stream.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// Reads a line up to '\n' (excluded). `Ok(None)` if the stream ended before its first byte;
/// the `Err(Ok(n))` case is a line cut short after `n` bytes.
fn read_line(r: &mut impl Read) -> io::Result<Result<Option<Vec<u8>>, usize>> {
    let mut line = Vec::new();
    let mut byte = [0u8];
    loop {
        if read_full(r, &mut byte)? == 0 {
            return Ok(if line.is_empty() {
                Ok(None)
            } else {
                Err(line.len())
            });
        }
        if byte[0] == b'\n' {
            return Ok(Ok(Some(line)));
        }
        line.push(byte[0]);
        if line.len() > MAX_LINE {
            return Ok(Err(line.len()));
        }
    }
}

impl<R: Read + Send> Y4mSource<R> {
    /// `path` is what `info().path` reports, `label` names the stream in messages; `file_len`
    /// (when the stream is a file) lets the frame count be computed.
    pub(crate) fn new(
        mut reader: R,
        path: &Path,
        label: &Path,
        file_len: Option<u64>,
    ) -> Result<Self, MediaError> {
        let bad = |detail: &str| MediaError::Y4m {
            path: label.to_path_buf(),
            detail: detail.into(),
        };
        let line = match read_line(&mut reader).map_err(|e| MediaError::read(label, e))? {
            Ok(Some(line)) => line,
            Ok(None) => {
                return Err(MediaError::NoFrames {
                    path: label.to_path_buf(),
                    detail: "empty stream".into(),
                })
            }
            Err(n) if n > MAX_LINE => return Err(bad("header line too long")),
            Err(_) => return Err(bad("header line is cut short")),
        };
        let header = header::parse(&line, label)?;
        let cs = header.colorspace;
        let frame_bytes = cs.frame_bytes(header.width, header.height);
        // Exact only with bare "FRAME\n" lines (what every common writer emits); otherwise unknown.
        let frame_count = file_len.and_then(|len| {
            let body = len.checked_sub(line.len() as u64 + 1)?;
            let per = frame_bytes as u64 + 6;
            (body % per == 0).then_some((body / per) as usize)
        });
        let range = header.range.unwrap_or(YuvRange::Limited);
        let info = SourceInfo {
            kind: SourceKind::Y4m,
            path: path.to_path_buf(),
            width: header.width,
            height: header.height,
            frame_count,
            fps: header.fps,
            bit_depth: if cs.bits > 8 { 16 } else { 8 },
            source_bits: cs.bits as u8,
            pixel_aspect: header.aspect,
            interlaced: header.interlaced,
            yuv: Some(YuvInfo {
                matrix: default_matrix(header.height),
                range,
                colorspace: cs.tag,
            }),
            colour: None,
            dpx_color: None,
        };
        Ok(Y4mSource {
            reader,
            label: label.to_path_buf(),
            header,
            info,
            index: 0,
            buf: vec![0; frame_bytes],
        })
    }

    fn truncated(&self, got: usize) -> MediaError {
        MediaError::TruncatedY4m {
            path: self.label.clone(),
            index: self.index,
            expected: self.buf.len() + 6,
            got,
        }
    }
}

impl<R: Read + Send> FrameSource for Y4mSource<R> {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self) -> Result<Option<Frame>, MediaError> {
        let line =
            match read_line(&mut self.reader).map_err(|e| MediaError::read(&self.label, e))? {
                Ok(Some(line)) => line,
                Ok(None) => return Ok(None),
                Err(n) => return Err(self.truncated(n)),
            };
        if !line.starts_with(b"FRAME") {
            return Err(MediaError::Y4m {
                path: self.label.clone(),
                detail: format!(
                    "frame {}: missing FRAME marker (wrong frame size in the header?)",
                    self.index
                ),
            });
        }
        let got = read_full(&mut self.reader, &mut self.buf)
            .map_err(|e| MediaError::read(&self.label, e))?;
        if got < self.buf.len() {
            return Err(self.truncated(got + line.len() + 1));
        }
        let frame = self.convert();
        self.index += 1;
        Ok(Some(frame))
    }
}

impl<R> Y4mSource<R> {
    fn convert(&self) -> Frame {
        let (w, h) = (self.header.width, self.header.height);
        let cs = self.header.colorspace;
        let samples: Vec<u16> = if cs.bits > 8 {
            self.buf
                .chunks_exact(2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
                .collect()
        } else {
            self.buf.iter().map(|&b| b as u16).collect()
        };
        let (cw, ch) = cs.chroma_size(w, h);
        let chroma = match cs.layout {
            Layout::Mono => None,
            Layout::Yuv { sub_x, sub_y, .. } => Some(Chroma {
                u: &samples[w * h..w * h + cw * ch],
                v: &samples[w * h + cw * ch..w * h + 2 * cw * ch],
                width: cw,
                height: ch,
                sub_x,
                sub_y,
                siting: cs.siting(),
            }),
        };
        let planes = Planes {
            width: w,
            height: h,
            y: &samples[..w * h],
            chroma,
        };
        let yuv = self.info.yuv.expect("y4m sources always carry YUV info");
        match yuv_to_rgb(&planes, cs.bits, yuv.range, yuv.matrix, cs.bits > 8) {
            Rgb::U8(d) => Frame {
                width: w,
                height: h,
                bit_depth: 8,
                data: FrameData::U8(d),
            },
            Rgb::U16(d) => Frame {
                width: w,
                height: h,
                bit_depth: 16,
                data: FrameData::U16(d),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_without_a_length_have_no_frame_count() {
        let mut bytes = b"YUV4MPEG2 W2 H1 C444 F50:1\nFRAME\n".to_vec();
        bytes.extend([235, 16, 128, 128, 128, 128]);
        let mut src = Y4mSource::new(
            io::Cursor::new(bytes),
            Path::new("-"),
            Path::new("<stdin>"),
            None,
        )
        .unwrap();
        assert_eq!(src.info().frame_count, None);
        assert_eq!(src.info().fps, Some((50, 1)));
        let f = src.next_frame().unwrap().unwrap();
        assert_eq!(f.data, FrameData::U8(vec![255, 255, 255, 0, 0, 0]));
        assert!(src.next_frame().unwrap().is_none());
    }

    #[test]
    fn empty_stream_has_no_frames() {
        let e = Y4mSource::new(
            io::Cursor::new(Vec::new()),
            Path::new("-"),
            Path::new("<stdin>"),
            None,
        )
        .err()
        .unwrap();
        assert!(e.to_string().starts_with("<stdin>: no frames"), "{e}");
    }
}
