//! The geometry of conv3d staged for cuDNN: output channels padded to a multiple of 8, a replicate
//! border baked into the staged input (cuDNN pads only with zeros), and the output frames cut into
//! groups so that the bf16 staging buffers stay within a byte budget and cuDNN's 32-bit sizes.
//! `kt == 1` convolves each group as a batch of 2-D frames (any temporal stride is applied while
//! staging); `kt > 1` convolves each group as one 3-D volume with cuDNN's temporal stride, or, with
//! the time folded, as a batch of 2-D frames whose channels are the kt source frames of one output
//! frame side by side: cuDNN's 2-D kernels are much faster than its 3-D ones (the LQ projector).

/// Which temporal kernels are folded into the channels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FoldTime {
    Off,
    /// Where the staged input at most doubles (`kt ≤ 2·stride_t`): the LQ projector's 4-tap,
    /// stride-2 convs.
    WhereCheap,
    /// Every temporal kernel, the Wan VAE's causal 3-tap, stride-1 convs too, whose staged input
    /// triples (an experiment: `FLASHVSR_CUDA_FOLD_CAUSAL=1`).
    Always,
}

use crate::buffer::ChannelsLast;
use crate::dnn::ConvShape;

/// cuDNN's bf16 tensor-core kernels want channel counts that are multiples of 8. Input channels
/// must be (the im2col path takes the rest: the narrow golden models, where bf16 operands in every
/// layer put the decoder's output 2.5e-2 off, past the fast mode's 2e-2 bound, against 1.6e-2 this
/// way); output channels are zero-padded (the decoder's last conv has 3).
pub(crate) const CHANNEL_ALIGN: usize = 8;
/// The staging kernels put frames on the grid's z axis.
const MAX_FRAMES: usize = 65_535;
const MAX_ELEMS: usize = i32::MAX as usize;
pub(crate) const BF16_BYTES: usize = 2;

/// One cuDNN call: output frames `first .. first + frames`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Group {
    pub first: usize,
    pub frames: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct StagedConv {
    /// Source x (C, T, H, W) and w (O, C, kt, kh, kw).
    pub c: usize,
    pub t: usize,
    pub h: usize,
    pub w: usize,
    pub o: usize,
    pub kt: usize,
    pub kh: usize,
    pub kw: usize,
    pub stride_t: usize,
    pub pad: usize,
    pub replicate: bool,
    /// Source frames side by side in the channels of a staged frame: kt when the time is folded
    /// into the channels, else 1.
    pub fold: usize,
    /// Staged channel counts (zero-padded; `cp == c` while inputs must be aligned).
    pub cp: usize,
    pub op: usize,
    /// Staged input plane: the source plane, plus the replicate border when there is one.
    pub hs: usize,
    pub ws: usize,
    pub ho: usize,
    pub wo: usize,
    pub t_out: usize,
    /// Output frames per cuDNN call (the last call may have fewer).
    pub group: usize,
}

fn round_up(v: usize, to: usize) -> usize {
    v.div_ceil(to) * to
}

/// The largest `g` in `1..=hi` with `fits(g)`, for a `fits` that holds up to some point and not
/// after; None when `fits(1)` fails.
fn largest(hi: usize, fits: impl Fn(usize) -> bool) -> Option<usize> {
    if !fits(1) {
        return None;
    }
    let (mut lo, mut hi) = (1, hi.max(1));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if fits(mid) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    Some(lo)
}

impl StagedConv {
    /// None when the conv is not staged (input channels not a multiple of 8, one output frame
    /// already beyond cuDNN's 32-bit sizes, or nothing to compute); the caller keeps the im2col
    /// path then. `fold_time`: which temporal kernels are folded into the channels.
    pub fn new(
        x: [usize; 4],
        w: [usize; 5],
        stride_t: usize,
        pad: usize,
        (replicate, fold_time): (bool, FoldTime),
        budget_bytes: usize,
    ) -> Option<StagedConv> {
        let [c, t, h, wd] = x;
        let [o, _, kt, kh, kw] = w;
        if c == 0
            || c % CHANNEL_ALIGN != 0
            || o == 0
            || stride_t == 0
            || kt > t
            || kt == 0
            || kh == 0
            || kw == 0
        {
            return None;
        }
        let border = if replicate { 2 * pad } else { 0 };
        let (ho, wo) = (
            (h + 2 * pad).checked_sub(kh)? + 1,
            (wd + 2 * pad).checked_sub(kw)? + 1,
        );
        let mut s = StagedConv {
            c,
            t,
            h,
            w: wd,
            o,
            kt,
            kh,
            kw,
            stride_t,
            pad,
            replicate,
            fold: match fold_time {
                FoldTime::WhereCheap if kt > 1 && kt <= 2 * stride_t => kt,
                FoldTime::Always if kt > 1 => kt,
                _ => 1,
            },
            cp: round_up(c, CHANNEL_ALIGN),
            op: round_up(o, CHANNEL_ALIGN),
            hs: h + border,
            ws: wd + border,
            ho,
            wo,
            t_out: (t - kt) / stride_t + 1,
            group: 0,
        };
        if ho * wo == 0 || s.op * kt * kh * kw * s.cp > MAX_ELEMS {
            return None;
        }
        let limits = |g: usize| {
            s.input_frames(g) <= MAX_FRAMES
                && s.input_elems(g) <= MAX_ELEMS
                && s.output_elems(g) <= MAX_ELEMS
        };
        let most = largest(s.t_out, limits)?;
        let within_budget = largest(most, |g| s.staging_bytes(g) <= budget_bytes).unwrap_or(1);
        // Even groups: one cuDNN shape (one plan) for all calls where the frames divide.
        let calls = s.t_out.div_ceil(within_budget);
        s.group = s.t_out.div_ceil(calls);
        Some(s)
    }

    /// Whether cuDNN reads a channels-last input in place: no replicate border to bake in, no
    /// channel padding, and the frames of a group consecutive (a frame conv with a temporal
    /// stride picks every stride-th frame while staging).
    pub fn reads_channels_last_directly(&self) -> bool {
        let consecutive_frames = self.kt > 1 || self.stride_t == 1;
        let unfolded = self.fold == 1;
        self.hs == self.h
            && self.ws == self.w
            && self.cp == self.c
            && consecutive_frames
            && unfolded
    }

    /// Whether a channels-last source can be staged with the time folded by plain copies of
    /// 8-channel groups (ops/channels_last.rs): consecutive source frames, no border, no channel
    /// padding.
    pub fn folds_channels_last_by_copies(&self) -> bool {
        self.fold > 1
            && self.stride_t == 1
            && self.hs == self.h
            && self.ws == self.w
            && self.cp == self.c
    }

    /// The geometry of the output when cuDNN writes it channels-last, as the next op reads it:
    /// zero-padded convolutions without output channel padding. cuDNN's NHWC (a batch of frames)
    /// and NDHWC (one volume of frames) outputs are both frame-major, position-major. The
    /// TCDecoder's frame convs feed convs, the Wan VAE's causal ones its fused norm (norm_silu.rs)
    /// and residual adds, which read channels-last. Replicate-padded convs (the LQ projector) are
    /// followed by f32 channel norms and re-staged for their border anyway: they keep writing f32
    /// row-major.
    pub fn channels_last_output(&self) -> Option<ChannelsLast> {
        let plain = !self.replicate && self.op == self.o;
        plain.then_some(ChannelsLast {
            c: self.o,
            t: self.t_out,
            h: self.ho,
            w: self.wo,
        })
    }

    /// Frames staged for a group of `outs` output frames (with the time folded, one per output
    /// frame, each of `fold` source frames).
    pub fn input_frames(&self, outs: usize) -> usize {
        if self.kt == 1 || self.fold > 1 {
            outs
        } else {
            (outs - 1) * self.stride_t + self.kt
        }
    }

    pub fn input_elems(&self, outs: usize) -> usize {
        self.input_frames(outs) * self.hs * self.ws * self.cp * self.fold
    }

    pub fn output_elems(&self, outs: usize) -> usize {
        outs * self.ho * self.wo * self.op
    }

    pub fn weight_elems(&self) -> usize {
        self.op * self.taps() * self.cp
    }

    pub fn taps(&self) -> usize {
        self.kt * self.kh * self.kw
    }

    fn staging_bytes(&self, outs: usize) -> usize {
        (self.input_elems(outs) + self.output_elems(outs)) * BF16_BYTES
    }

    /// Zeros cuDNN adds on each side (none when the border is replicated while staging).
    pub fn dnn_pad(&self) -> usize {
        if self.replicate {
            0
        } else {
            self.pad
        }
    }

    /// Source frame of staged frame 0 of `group`, and the step between staged frames.
    pub fn source_frames(&self, group: &Group) -> (usize, usize) {
        let step = if self.kt == 1 || self.fold > 1 {
            self.stride_t
        } else {
            1
        };
        (group.first * self.stride_t, step)
    }

    pub fn groups(&self) -> impl Iterator<Item = Group> + '_ {
        (0..self.t_out).step_by(self.group).map(|first| Group {
            first,
            frames: self.group.min(self.t_out - first),
        })
    }

    /// What cuDNN computes for a group of `outs` output frames.
    pub fn shape(&self, outs: usize) -> ConvShape {
        let frames_2d = self.kt == 1 || self.fold > 1;
        let (n, d) = if frames_2d {
            (outs, 1)
        } else {
            (1, self.input_frames(outs))
        };
        ConvShape {
            n,
            c: self.cp * self.fold,
            k: self.op,
            d,
            h: self.hs,
            w: self.ws,
            kt: if frames_2d { 1 } else { self.kt },
            kh: self.kh,
            kw: self.kw,
            stride_t: if frames_2d { 1 } else { self.stride_t },
            pad: self.dnn_pad(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: usize = 1 << 30;

    #[test]
    fn outputs_are_padded_to_eight_and_replicate_border_is_staged() {
        let s = StagedConv::new(
            [16, 3, 9, 11],
            [3, 16, 1, 3, 3],
            1,
            1,
            (true, FoldTime::Off),
            GIB,
        )
        .unwrap();
        assert_eq!((s.cp, s.op), (16, 8));
        assert_eq!((s.hs, s.ws, s.ho, s.wo), (11, 13, 9, 11));
        assert_eq!(s.dnn_pad(), 0);
        let z = StagedConv::new(
            [16, 3, 9, 11],
            [3, 16, 1, 3, 3],
            1,
            1,
            (false, FoldTime::Off),
            GIB,
        )
        .unwrap();
        assert_eq!((z.hs, z.ws, z.ho, z.wo), (9, 11, 9, 11));
        assert_eq!(z.dnn_pad(), 1);
    }

    #[test]
    fn unaligned_input_channels_stay_on_im2col() {
        assert!(StagedConv::new(
            [12, 3, 9, 11],
            [16, 12, 1, 3, 3],
            1,
            1,
            (false, FoldTime::Off),
            GIB
        )
        .is_none());
        assert!(StagedConv::new(
            [6, 3, 9, 11],
            [3, 6, 1, 3, 3],
            1,
            1,
            (true, FoldTime::Off),
            GIB
        )
        .is_none());
    }

    #[test]
    fn frame_convs_are_batches_of_2d_frames() {
        let s = StagedConv::new(
            [16, 5, 10, 12],
            [24, 16, 1, 1, 1],
            2,
            0,
            (false, FoldTime::Off),
            GIB,
        )
        .unwrap();
        assert_eq!(s.t_out, 3);
        let groups: Vec<Group> = s.groups().collect();
        assert_eq!(
            groups,
            vec![Group {
                first: 0,
                frames: 3
            }]
        );
        // Output frame k reads source frame 2k.
        assert_eq!(s.source_frames(&groups[0]), (0, 2));
        let shape = s.shape(3);
        assert_eq!((shape.n, shape.d, shape.kt, shape.stride_t), (3, 1, 1, 1));
    }

    #[test]
    fn temporal_kernels_are_3d_volumes_with_the_temporal_stride() {
        let s = StagedConv::new(
            [8, 10, 7, 8],
            [8, 8, 4, 3, 3],
            2,
            1,
            (true, FoldTime::Off),
            GIB,
        )
        .unwrap();
        assert_eq!(s.t_out, 4);
        assert_eq!(s.input_frames(4), 10);
        let shape = s.shape(4);
        assert_eq!((shape.n, shape.d, shape.kt, shape.stride_t), (1, 10, 4, 2));
        assert_eq!(shape.output_dims(), vec![1, 8, 4, 7, 8]);
    }

    #[test]
    fn a_small_budget_makes_even_groups() {
        // 16 channels of 10×10 bf16, in and out: 6400 bytes per output frame.
        let per_frame = 2 * 16 * 100 * 2;
        let s = StagedConv::new(
            [16, 9, 10, 10],
            [16, 16, 1, 3, 3],
            1,
            1,
            (false, FoldTime::Off),
            4 * per_frame,
        )
        .unwrap();
        assert_eq!(s.group, 3, "9 frames at most 4 a call: 3 calls of 3");
        let groups: Vec<Group> = s.groups().collect();
        assert_eq!(groups.len(), 3);
        assert_eq!(
            groups[2],
            Group {
                first: 6,
                frames: 3
            }
        );
        // A budget below one frame still makes progress, one frame at a time.
        let tiny = StagedConv::new(
            [16, 9, 10, 10],
            [16, 16, 1, 3, 3],
            1,
            1,
            (false, FoldTime::Off),
            1,
        )
        .unwrap();
        assert_eq!(tiny.group, 1);
        assert_eq!(tiny.groups().count(), 9);
    }

    #[test]
    fn temporal_groups_overlap_in_their_source_frames() {
        let s = StagedConv::new(
            [8, 10, 4, 4],
            [8, 8, 4, 3, 3],
            2,
            1,
            (false, FoldTime::Off),
            1,
        )
        .unwrap();
        let groups: Vec<Group> = s.groups().collect();
        assert_eq!(groups.len(), 4);
        // Output frame 3 reads source frames 6..10.
        assert_eq!(s.source_frames(&groups[3]), (6, 1));
        assert_eq!(s.input_frames(groups[3].frames), 4);
    }

    #[test]
    fn folded_time_makes_2d_frames_of_kt_source_frames() {
        // The projector's conv: kt 4, stride 2, replicate border.
        let s = StagedConv::new(
            [8, 10, 7, 8],
            [8, 8, 4, 3, 3],
            2,
            1,
            (true, FoldTime::WhereCheap),
            GIB,
        )
        .unwrap();
        assert_eq!((s.fold, s.t_out), (4, 4));
        assert_eq!(s.input_frames(4), 4, "one staged frame per output frame");
        assert_eq!(s.input_elems(4), 4 * 9 * 10 * 8 * 4);
        let groups: Vec<Group> = s.groups().collect();
        // Output frame k reads source frames 2k .. 2k + 4.
        assert_eq!(s.source_frames(&groups[0]), (0, 2));
        let shape = s.shape(4);
        assert_eq!((shape.n, shape.c, shape.d, shape.kt), (4, 32, 1, 1));
        assert_eq!(shape.output_dims(), vec![4, 8, 7, 8]);
        assert!(!s.reads_channels_last_directly());
    }

    #[test]
    fn time_is_folded_only_where_it_at_most_doubles_the_staging() {
        // The Wan VAE's causal 3-tap conv, stride 1: stays a 3-D volume.
        let vae = StagedConv::new(
            [8, 6, 4, 4],
            [8, 8, 3, 3, 3],
            1,
            1,
            (false, FoldTime::WhereCheap),
            GIB,
        )
        .unwrap();
        assert_eq!(vae.fold, 1);
        assert!(vae.reads_channels_last_directly());
        let off = StagedConv::new(
            [8, 10, 4, 4],
            [8, 8, 4, 3, 3],
            2,
            1,
            (false, FoldTime::Off),
            GIB,
        )
        .unwrap();
        assert_eq!(off.fold, 1);
        let pair = StagedConv::new(
            [8, 10, 4, 4],
            [8, 8, 2, 3, 3],
            1,
            1,
            (false, FoldTime::WhereCheap),
            GIB,
        )
        .unwrap();
        assert_eq!(pair.fold, 2);
        assert!(
            !pair.reads_channels_last_directly(),
            "folded frames are staged"
        );
        let frames = StagedConv::new(
            [8, 10, 4, 4],
            [8, 8, 1, 3, 3],
            2,
            1,
            (false, FoldTime::WhereCheap),
            GIB,
        )
        .unwrap();
        assert_eq!(frames.fold, 1, "a frame conv has no time to fold");
    }

    #[test]
    fn causal_convs_fold_only_when_asked() {
        let x = [96, 10, 6, 8];
        let w = [96, 96, 3, 3, 3];
        let folded = StagedConv::new(x, w, 1, 1, (false, FoldTime::Always), GIB).unwrap();
        assert_eq!((folded.fold, folded.t_out), (3, 8));
        assert!(folded.folds_channels_last_by_copies());
        // Output frame k reads source frames k .. k + 3, one staged frame each.
        let g = folded.groups().next().unwrap();
        assert_eq!(folded.source_frames(&g), (0, 1));
        let shape = folded.shape(8);
        assert_eq!((shape.n, shape.c, shape.d, shape.kt), (8, 288, 1, 1));
        // A replicate border is staged by the kernel, not by copies.
        let border = StagedConv::new(x, w, 1, 1, (true, FoldTime::Always), GIB).unwrap();
        assert!(!border.folds_channels_last_by_copies());
        let unfolded = StagedConv::new(x, w, 1, 1, (false, FoldTime::Off), GIB).unwrap();
        assert!(!unfolded.folds_channels_last_by_copies());
    }

    #[test]
    fn zero_padded_convs_write_channels_last() {
        let causal = StagedConv::new(
            [96, 10, 6, 8],
            [96, 96, 3, 3, 3],
            1,
            1,
            (false, FoldTime::Off),
            GIB,
        )
        .unwrap();
        assert_eq!(
            causal.channels_last_output(),
            Some(ChannelsLast {
                c: 96,
                t: 8,
                h: 6,
                w: 8
            })
        );
        let projector = StagedConv::new(
            [16, 10, 6, 8],
            [16, 16, 4, 3, 3],
            2,
            1,
            (true, FoldTime::WhereCheap),
            GIB,
        )
        .unwrap();
        assert_eq!(projector.channels_last_output(), None);
        // Padded output channels (the decoder heads' 3) are unstaged to f32.
        let head = StagedConv::new(
            [96, 10, 6, 8],
            [3, 96, 3, 3, 3],
            1,
            1,
            (false, FoldTime::Off),
            GIB,
        )
        .unwrap();
        assert_eq!(head.channels_last_output(), None);
    }

    #[test]
    fn frames_beyond_32_bit_sizes_are_refused() {
        // 8 channels × 2¹⁵ × 2¹⁴ = 2³² elements in one frame.
        assert!(StagedConv::new(
            [8, 1, 1 << 15, 1 << 14],
            [8, 8, 1, 1, 1],
            1,
            0,
            (false, FoldTime::Off),
            GIB
        )
        .is_none());
        assert!(StagedConv::new(
            [0, 1, 4, 4],
            [8, 0, 1, 1, 1],
            1,
            0,
            (false, FoldTime::Off),
            GIB
        )
        .is_none());
    }

    #[test]
    fn largest_finds_the_boundary() {
        assert_eq!(largest(100, |g| g <= 37), Some(37));
        assert_eq!(largest(10, |_| true), Some(10));
        assert_eq!(largest(10, |_| false), None);
    }
}
