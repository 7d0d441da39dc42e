//! Colour description, HDR10 static metadata and frame times of video streams. These types exist in
//! every build (they are fields of [`crate::SourceInfo`] and [`crate::SinkOptions`]); only the
//! `ffmpeg` feature fills or writes them.

use crate::frame::YuvRange;

macro_rules! code_point {
    ($(#[$doc:meta])* $name:ident, $table:ident, { $($(#[$cdoc:meta])* $konst:ident = $val:expr,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub struct $name(pub u8);

        impl $name {
            $($(#[$cdoc])* pub const $konst: $name = $name($val);)*

            /// FFmpeg's name of the value (`ffprobe` prints it, `ffmpeg` accepts it), e.g. "bt709";
            /// `None` for a value FFmpeg does not name.
            pub fn name(self) -> Option<&'static str> {
                $table.iter().find(|(v, _)| *v == self.0).map(|(_, n)| *n)
            }

            /// The value FFmpeg calls `name` (also accepting the aliases FFmpeg's CLI accepts).
            pub fn from_name(name: &str) -> Option<$name> {
                $table.iter().find(|(_, n)| n.eq_ignore_ascii_case(name)).map(|(v, _)| $name(*v))
            }
        }
    };
}

const PRIMARIES: &[(u8, &str)] = &[
    (1, "bt709"),
    (4, "bt470m"),
    (5, "bt470bg"),
    (6, "smpte170m"),
    (7, "smpte240m"),
    (8, "film"),
    (9, "bt2020"),
    (10, "smpte428"),
    (11, "smpte431"),
    (12, "smpte432"),
    (22, "ebu3213"),
];

const TRANSFERS: &[(u8, &str)] = &[
    (1, "bt709"),
    (4, "gamma22"),
    (5, "gamma28"),
    (6, "smpte170m"),
    (7, "smpte240m"),
    (8, "linear"),
    (9, "log100"),
    (10, "log316"),
    (11, "iec61966-2-4"),
    (12, "bt1361e"),
    (13, "iec61966-2-1"),
    (14, "bt2020-10"),
    (15, "bt2020-12"),
    (16, "smpte2084"),
    (17, "smpte428"),
    (18, "arib-std-b67"),
];

const MATRICES: &[(u8, &str)] = &[
    (0, "gbr"),
    (1, "bt709"),
    (4, "fcc"),
    (5, "bt470bg"),
    (6, "smpte170m"),
    (7, "smpte240m"),
    (8, "ycgco"),
    (9, "bt2020nc"),
    (10, "bt2020c"),
    (11, "smpte2085"),
    (12, "chroma-derived-nc"),
    (13, "chroma-derived-c"),
    (14, "ictcp"),
];

const CHROMA_LOCATIONS: &[(u8, &str)] = &[
    (1, "left"),
    (2, "center"),
    (3, "topleft"),
    (4, "top"),
    (5, "bottomleft"),
    (6, "bottom"),
];

code_point!(
    /// Colour primaries, as ITU-T H.273 `ColourPrimaries` (the numbering FFmpeg uses too).
    ColourPrimaries, PRIMARIES, {
        BT709 = 1,
        /// BT.601 625-line (PAL).
        BT470BG = 5,
        /// BT.601 525-line (NTSC).
        SMPTE170M = 6,
        BT2020 = 9,
        /// DCI-P3 with the D65 white point (Display P3).
        SMPTE432 = 12,
    }
);

code_point!(
    /// Transfer characteristics, as ITU-T H.273 `TransferCharacteristics`.
    TransferCharacteristic, TRANSFERS, {
        BT709 = 1,
        SMPTE170M = 6,
        LINEAR = 8,
        /// sRGB.
        IEC61966_2_1 = 13,
        BT2020_10 = 14,
        /// PQ, the HDR10 curve.
        SMPTE2084 = 16,
        /// HLG.
        ARIB_STD_B67 = 18,
    }
);

code_point!(
    /// Matrix coefficients (YUV ↔ RGB), as ITU-T H.273 `MatrixCoefficients`.
    MatrixCoefficients, MATRICES, {
        /// Identity: the samples are G, B, R.
        GBR = 0,
        BT709 = 1,
        BT470BG = 5,
        SMPTE170M = 6,
        /// BT.2020 non-constant luminance.
        BT2020NC = 9,
        /// BT.2020 constant luminance (decoded as non-constant: swscale has no CL path).
        BT2020C = 10,
    }
);

code_point!(
    /// Where 4:2:0 / 4:2:2 chroma samples sit, as FFmpeg's `AVChromaLocation` (H.273
    /// `chroma_sample_loc_type` + 1).
    ChromaLocation, CHROMA_LOCATIONS, {
        /// MPEG-2/H.264/HEVC default: co-sited horizontally, between lines vertically.
        LEFT = 1,
        /// MPEG-1/JPEG: centred both ways.
        CENTER = 2,
        /// Co-sited both ways (common for BT.2020 HDR masters).
        TOPLEFT = 3,
    }
);

impl TransferCharacteristic {
    /// PQ (SMPTE ST 2084) or HLG: an HDR transfer.
    pub fn is_hdr(self) -> bool {
        self == Self::SMPTE2084 || self == Self::ARIB_STD_B67
    }
}

/// SMPTE ST 2086 mastering display colour volume, in the units of the HEVC/AV1 SEI and of x265's
/// `master-display` parameter, so values survive every container without rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct MasteringDisplay {
    /// CIE 1931 (x, y) of the red, green and blue primaries and of the white point, in units of
    /// 0.00002 (50000 = 1.0). `None` when the metadata gives only luminance.
    pub primaries: Option<DisplayPrimaries>,
    /// Display luminance in units of 0.0001 cd/m². `None` when the metadata gives only
    /// primaries.
    pub luminance: Option<DisplayLuminance>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DisplayPrimaries {
    pub red: [u32; 2],
    pub green: [u32; 2],
    pub blue: [u32; 2],
    pub white_point: [u32; 2],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DisplayLuminance {
    /// 0.0001 cd/m² units (10_000_000 = 1000 nits).
    pub max: u32,
    /// 0.0001 cd/m² units (50 = 0.005 nits).
    pub min: u32,
}

impl MasteringDisplay {
    /// x265's `master-display` syntax: `G(x,y)B(x,y)R(x,y)WP(x,y)L(max,min)`; `None` unless both
    /// primaries and luminance are known (x265 needs both).
    pub fn x265_param(&self) -> Option<String> {
        let (p, l) = (self.primaries?, self.luminance?);
        Some(format!(
            "G({},{})B({},{})R({},{})WP({},{})L({},{})",
            p.green[0],
            p.green[1],
            p.blue[0],
            p.blue[1],
            p.red[0],
            p.red[1],
            p.white_point[0],
            p.white_point[1],
            l.max,
            l.min
        ))
    }
}

/// CTA-861.3 content light level, cd/m².
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ContentLight {
    /// MaxCLL: the brightest pixel of the stream.
    pub max_cll: u32,
    /// MaxFALL: the brightest frame average.
    pub max_fall: u32,
}

/// Colour description of a video stream: the tags a decoder needs to turn its samples into the
/// intended colours, and HDR10 static metadata. `None` where the stream leaves a property
/// unspecified.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VideoColour {
    /// Code-value range of the YUV samples.
    pub range: Option<YuvRange>,
    pub primaries: Option<ColourPrimaries>,
    pub transfer: Option<TransferCharacteristic>,
    pub matrix: Option<MatrixCoefficients>,
    pub chroma_location: Option<ChromaLocation>,
    /// HDR10 mastering display metadata, from the container or the first frame (SEI).
    pub mastering_display: Option<MasteringDisplay>,
    /// HDR10 content light level, from the container or the first frame (SEI).
    pub content_light: Option<ContentLight>,
}

impl VideoColour {
    /// A PQ or HLG transfer.
    pub fn is_hdr(&self) -> bool {
        self.transfer.is_some_and(|t| t.is_hdr())
    }
}

/// Presentation time of one frame: `pts` ticks of `time_base` (numerator, denominator) seconds.
/// Video sources report the stream's own values, so variable frame rates survive a round trip.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timestamp {
    pub pts: i64,
    pub time_base: (i32, i32),
}

impl Timestamp {
    /// Seconds (rounded to f64).
    pub fn seconds(&self) -> f64 {
        self.pts as f64 * self.time_base.0 as f64 / self.time_base.1 as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(TransferCharacteristic::SMPTE2084.name(), Some("smpte2084"));
        assert_eq!(
            MatrixCoefficients::from_name("BT2020NC"),
            Some(MatrixCoefficients::BT2020NC)
        );
        assert_eq!(ColourPrimaries(3).name(), None);
        assert!(TransferCharacteristic::ARIB_STD_B67.is_hdr());
    }

    #[test]
    fn x265_master_display_syntax() {
        let md = MasteringDisplay {
            primaries: Some(DisplayPrimaries {
                red: [34000, 16000],
                green: [13250, 34500],
                blue: [7500, 3000],
                white_point: [15635, 16450],
            }),
            luminance: Some(DisplayLuminance {
                max: 10_000_000,
                min: 1,
            }),
        };
        assert_eq!(
            md.x265_param().unwrap(),
            "G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1)"
        );
    }
}
