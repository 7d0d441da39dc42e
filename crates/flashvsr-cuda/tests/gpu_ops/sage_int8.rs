//! SageAttention's int8 Q·Kᵀ for sage masks (`FLASHVSR_CUDA_SAGE_INT8=1`, read per call; sm_90
//! only, elsewhere the knob keeps the bf16 kernel and these cases are skipped) against
//! - a CPU emulation of the same quantisation, written here in f64 (spec §5.6.3): K rounded to
//!   bf16 as the cache holds it, smoothed by its per-head mean over a sample of the call's keys
//!   (the first 256 of every 2048), per 64-key block `scale_k = max|k| / 127` and
//!   `k8 = round-half-away(k / scale_k)`; Q per 128-row
//!   block scaled by log2(e) / √128 and quantised the same way; logits `(q8·k8) · scale_q ·
//!   scale_k` with the integer dot products exact; the online softmax on exp2 over the kernel's
//!   iterations of two selected key blocks (ascending), P rounded to bf16 for P·V (the kernel
//!   keeps V in bf16, as the KV cache holds it, where the references cast V and P to fp16), the
//!   row sums of the unrounded P: relative L2 ≤ `VS_EMULATION`;
//! - exact attention (f64, the f32 inputs as given): relative L2 ≤ `VS_EXACT`, the spec's
//!   measured error of the reference kernel for N(0,1) q, k (1.3e-2 .. 3.9e-2).
//!
//! Each case also checks the kernel with session 11's unfolded softmax
//! (`FLASHVSR_CUDA_SAGE8_FOLD=0`) and the other softmax forms (`FLASHVSR_CUDA_SAGE8_EXP`, `mufu`:
//! helper h28's) against the same references: how the default's error moved.
//!
//! And: a query block with no key block gives exactly +0, every output written (the backend
//! poisons outputs with NaN first), key blocks that smooth to all zeros (scale 0) give logits 0,
//! block masks (128-key blocks) keep the bf16 kernel's bits with the knob on. The emulation and the
//! exact reference run on the CPU for sampled work items (head, query block) of the large case.

use flashvsr_tensor::{BlockMask, Tensor};

use super::{mask_input, random_mask, rel_l2, round_bf16, Input, Suite};

const KNOB: &str = "FLASHVSR_CUDA_SAGE_INT8";
/// `0`: the int8 kernel with session 11's softmax, the logits scaled before it (ops/attention.rs
/// `SageInt8::kernel_name`).
const FOLD_KNOB: &str = "FLASHVSR_CUDA_SAGE8_FOLD";
/// `<form>`: another softmax form of the int8 kernel (ops/attention.rs `SageInt8::kernel_name`).
const EXP_KNOB: &str = "FLASHVSR_CUDA_SAGE8_EXP";
/// The forms checked besides the default (kernels/mod.rs FLASH_SAGE8_FORMS).
const FORMS: [&str; 1] = ["mufu"];
/// Against the emulation: both quantise the same bf16 K and f32 Q (the kernel in f32, the
/// emulation in f64: a value within an f32 rounding of a .5 tie may round the other way) and
/// sum the same exact integer products; they differ in exp2 (ex2.approx vs f64), the fp32
/// accumulation of P·V and the row sums, and where a P lies within that error of a bf16 rounding
/// boundary. Measured on an H100: see PERF_NOTES.md (far below this bound).
const VS_EMULATION: f64 = 1e-3;
/// Against exact attention: the int8 quantisation's error (spec §5.6.3, measured 1.3e-2 for
/// N(0,1) q, k on the reference kernel).
const VS_EXACT: f64 = 4e-2;

/// One case's host data: q [lq, heads·128], K and V segments [rows, heads·128], the mask.
struct Case {
    name: String,
    heads: usize,
    lq: usize,
    sizes: Vec<usize>,
    q: Vec<f32>,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
    mask: BlockMask,
    /// The (head, query block) items the CPU checks (all when None).
    sampled: Option<Vec<(usize, usize)>>,
}

impl Case {
    fn inputs(&self) -> Vec<Input> {
        let dim = self.heads * 128;
        let mut inputs = vec![(self.q.clone(), vec![self.lq, dim])];
        for seg in self.k.iter().chain(&self.v) {
            inputs.push((seg.clone(), vec![seg.len() / dim, dim]));
        }
        inputs.push(mask_input(&self.mask));
        inputs
    }

    fn lk(&self) -> usize {
        self.sizes.iter().sum()
    }

    /// Row `key` of the joined K (or V) as f64, bf16-rounded when `bf16`.
    fn joined(&self, segs: &[Vec<f32>], head: usize, bf16: bool) -> Vec<f64> {
        let dim = self.heads * 128;
        let mut out = Vec::with_capacity(self.lk() * 128);
        for seg in segs {
            for row in seg.chunks(dim) {
                for &x in &row[head * 128..head * 128 + 128] {
                    out.push(if bf16 { round_bf16(x) } else { x } as f64);
                }
            }
        }
        out
    }

    fn selected(&self, head: usize, qb: usize) -> Vec<usize> {
        let kbs = self.mask.key_blocks;
        let at = (head * self.mask.query_blocks + qb) * kbs;
        (0..kbs)
            .filter(|&b| self.mask.selected[at + b] != 0)
            .collect()
    }
}

/// x / scale rounded half away from zero (f64 `round`), 0 where the scale is 0.
fn quantise(x: f64, scale: f64) -> i32 {
    if scale > 0.0 {
        (x / scale).round().clamp(-127.0, 127.0) as i32
    } else {
        0
    }
}

/// (emulated, exact) outputs of one head's query block: 128 x 128 values (rows past lq: none).
struct HeadData {
    k8: Vec<i32>,
    k_scale: Vec<f64>,
    k_exact: Vec<f64>,
    v_bf16: Vec<f64>,
    v_exact: Vec<f64>,
}

fn head_data(case: &Case, head: usize) -> HeadData {
    let lk = case.lk();
    let k_bf16 = case.joined(&case.k, head, true);
    // The backend's sample (ops/attention.rs `sage_mean_sample`): the first 256 keys of every
    // 2048.
    let mut mean = [0.0f64; 128];
    let mut summed = 0;
    for (key, row) in k_bf16.chunks(128).enumerate() {
        if key % 2048 < 256 {
            summed += 1;
            for (m, x) in mean.iter_mut().zip(row) {
                *m += x;
            }
        }
    }
    mean.iter_mut().for_each(|m| *m /= summed as f64);
    let blocks = lk.div_ceil(64);
    let mut k8 = vec![0; blocks * 64 * 128];
    let mut k_scale = vec![0.0; blocks];
    let smooth = |i: usize| k_bf16[i] - mean[i % 128];
    for (b, scale) in k_scale.iter_mut().enumerate() {
        let range = b * 64 * 128..lk.min(b * 64 + 64) * 128;
        let amax = range.clone().map(|i| smooth(i).abs()).fold(0.0, f64::max);
        *scale = amax / 127.0;
        for i in range {
            k8[i] = quantise(smooth(i), *scale);
        }
    }
    HeadData {
        k8,
        k_scale,
        k_exact: case.joined(&case.k, head, false),
        v_bf16: case.joined(&case.v, head, true),
        v_exact: case.joined(&case.v, head, false),
    }
}

/// The emulated and the exact output of item (head, qb): rows qb·128 .. (below lq) x 128 dims.
fn reference_item(case: &Case, hd: &HeadData, head: usize, qb: usize) -> (Vec<f64>, Vec<f64>) {
    let (dim, lk) = (case.heads * 128, case.lk());
    let rows: Vec<usize> = (qb * 128..case.lq.min(qb * 128 + 128)).collect();
    let q_mul = std::f64::consts::LOG2_E / 128f64.sqrt();
    let q_at = |r: usize, d: usize| case.q[r * dim + head * 128 + d] as f64;
    let amax = rows
        .iter()
        .flat_map(|&r| (0..128).map(move |d| (r, d)))
        .map(|(r, d)| (q_at(r, d) * q_mul).abs())
        .fold(0.0, f64::max);
    let q_scale = amax / 127.0;
    let blocks = case.selected(head, qb);
    let mut emulated = vec![0.0; rows.len() * 128];
    let mut exact = vec![0.0; rows.len() * 128];
    for (i, &r) in rows.iter().enumerate() {
        let q8: Vec<i32> = (0..128)
            .map(|d| quantise(q_at(r, d) * q_mul, q_scale))
            .collect();
        // Emulation: iterations of two selected blocks, the running max over each.
        let (mut m, mut l) = (f64::NEG_INFINITY, 0.0f64);
        let mut acc = [0.0f64; 128];
        for pair in blocks.chunks(2) {
            let keys: Vec<(usize, f64)> = pair
                .iter()
                .flat_map(|&b| (b * 64..lk.min(b * 64 + 64)).map(move |key| (key, b)))
                .map(|(key, b)| {
                    let dot: i64 = (0..128)
                        .map(|d| (q8[d] * hd.k8[key * 128 + d]) as i64)
                        .sum();
                    (key, dot as f64 * q_scale * hd.k_scale[b])
                })
                .collect();
            let m_new = keys.iter().map(|k| k.1).fold(m, f64::max);
            let alpha = (m - m_new).exp2();
            l *= alpha;
            acc.iter_mut().for_each(|a| *a *= alpha);
            for &(key, s) in &keys {
                let p = (s - m_new).exp2();
                l += p;
                let p_bf16 = round_bf16(p as f32) as f64;
                for (a, v) in acc.iter_mut().zip(&hd.v_bf16[key * 128..key * 128 + 128]) {
                    *a += p_bf16 * v;
                }
            }
            m = m_new;
        }
        if l > 0.0 {
            for d in 0..128 {
                emulated[i * 128 + d] = acc[d] / l;
            }
        }
        // Exact: softmax(q·k / √128) over the same keys.
        let keys: Vec<usize> = blocks
            .iter()
            .flat_map(|&b| b * 64..lk.min(b * 64 + 64))
            .collect();
        let logits: Vec<f64> = keys
            .iter()
            .map(|&key| {
                let dot: f64 = (0..128)
                    .map(|d| q_at(r, d) * hd.k_exact[key * 128 + d])
                    .sum();
                dot / 128f64.sqrt()
            })
            .collect();
        let mx = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut sum = 0.0;
        let mut out = [0.0f64; 128];
        for (&key, &s) in keys.iter().zip(&logits) {
            let p = (s - mx).exp();
            sum += p;
            for (o, v) in out.iter_mut().zip(&hd.v_exact[key * 128..key * 128 + 128]) {
                *o += p * v;
            }
        }
        if sum > 0.0 {
            for d in 0..128 {
                exact[i * 128 + d] = out[d] / sum;
            }
        }
    }
    (emulated, exact)
}

fn set_knob(value: Option<&str>) {
    // The suite runs on one thread: nothing reads the environment concurrently.
    match value {
        Some(v) => std::env::set_var(KNOB, v),
        None => std::env::remove_var(KNOB),
    }
}

fn attention(
    case: &Case,
    key_block: usize,
) -> impl Fn(&[Tensor]) -> flashvsr_tensor::Result<Tensor> {
    let n = case.sizes.len();
    move |t: &[Tensor]| {
        let keys: Vec<&Tensor> = t[1..1 + n].iter().collect();
        let values: Vec<&Tensor> = t[1 + n..1 + 2 * n].iter().collect();
        t[0].block_sparse_attention_segments(&keys, &values, &t[1 + 2 * n], key_block)
    }
}

fn check_case(s: &mut Suite, case: &Case) {
    let name = format!("sage int8 {}", case.name);
    if s.skip(&name) {
        return;
    }
    s.cases += 1;
    let inputs = case.inputs();
    let op = attention(case, 64);
    set_knob(Some("1"));
    let got = Suite::run_on(&s.gpu_bf16, &inputs, &op);
    // Session 11's softmax form of the int8 kernel, checked alike (how the default's error moved).
    std::env::set_var(FOLD_KNOB, "0");
    let mut outs = vec![(String::new(), got)];
    outs.push((
        " (unfolded)".to_string(),
        Suite::run_on(&s.gpu_bf16, &inputs, &op),
    ));
    std::env::remove_var(FOLD_KNOB);
    for form in FORMS {
        std::env::set_var(EXP_KNOB, form);
        outs.push((
            format!(" ({form})"),
            Suite::run_on(&s.gpu_bf16, &inputs, &op),
        ));
    }
    std::env::remove_var(EXP_KNOB);
    set_knob(Some("0"));
    let bf16 = match Suite::run_on(&s.gpu_bf16, &inputs, &op) {
        Ok((_, b)) => b,
        Err(e) => return s.fail(&name, format!("CUDA error: {e}")),
    };
    // How many of the default's values differ in their bits from helper h28's form.
    if let (Ok((_, d)), Some((_, Ok((_, h))))) =
        (&outs[0].1, outs.iter().find(|o| o.0 == " (mufu)"))
    {
        let differ = d
            .iter()
            .zip(h)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        println!(
            "      {name}: {differ} of {} values differ in bits from (mufu)",
            d.len()
        );
    }
    for (form, got) in outs {
        match got {
            Ok((_, got)) => compare_case(s, case, &format!("{name}{form}"), &got, &bf16),
            Err(e) => s.fail(&format!("{name}{form}"), format!("CUDA error: {e}")),
        }
    }
}

/// The checks of `check_case` on one output of the int8 kernel.
fn compare_case(s: &mut Suite, case: &Case, name: &str, got: &[f32], bf16: &[f32]) {
    let dim = case.heads * 128;
    let nan = got.iter().filter(|v| v.is_nan()).count();
    if nan > 0 {
        return s.fail(name, format!("{nan} NaN in the output (unwritten?)"));
    }
    let items: Vec<(usize, usize)> = case.sampled.clone().unwrap_or_else(|| {
        (0..case.heads)
            .flat_map(|h| (0..case.mask.query_blocks).map(move |qb| (h, qb)))
            .collect()
    });
    let (mut g_all, mut e_all, mut x_all) = (Vec::new(), Vec::new(), Vec::new());
    let mut empty_not_zero = 0;
    let mut heads: Vec<(usize, HeadData)> = Vec::new();
    for &(head, qb) in &items {
        if !heads.iter().any(|h| h.0 == head) {
            heads.push((head, head_data(case, head)));
        }
        let hd = &heads.iter().find(|h| h.0 == head).unwrap().1;
        let (emulated, exact) = reference_item(case, hd, head, qb);
        let empty = case.selected(head, qb).is_empty();
        for (i, r) in (qb * 128..case.lq.min(qb * 128 + 128)).enumerate() {
            for d in 0..128 {
                let g = got[r * dim + head * 128 + d];
                if empty && g.to_bits() != 0 {
                    empty_not_zero += 1;
                }
                g_all.push(g);
                e_all.push(emulated[i * 128 + d] as f32);
                x_all.push(exact[i * 128 + d] as f32);
            }
        }
    }
    let (vs_emul, _) = rel_l2(&g_all, &e_all);
    let (vs_exact, _) = rel_l2(&g_all, &x_all);
    let (vs_bf16, _) = rel_l2(got, bf16);
    let what = format!(
        "{} items: rel L2 {vs_emul:.2e} to the emulation (tol {VS_EMULATION:.0e}), \
         {vs_exact:.2e} to exact (tol {VS_EXACT:.0e}), {vs_bf16:.2e} to the bf16 kernel",
        items.len()
    );
    if empty_not_zero > 0 {
        s.fail(
            name,
            format!("{empty_not_zero} values not +0 in query blocks with no key block; {what}"),
        );
    } else if vs_emul.is_nan() || vs_emul > VS_EMULATION || vs_exact.is_nan() || vs_exact > VS_EXACT
    {
        s.fail(name, what);
    } else {
        println!("ok    {name:<44} {what}");
    }
}

/// With the knob on, a block mask (128-key blocks) keeps the bf16 kernel: its bits.
fn block_mask_keeps_bf16(s: &mut Suite, case: &Case) {
    let name = format!("sage int8 knob on, block mask: bf16 bits ({})", case.name);
    if s.skip(&name) {
        return;
    }
    s.cases += 1;
    let mut inputs = case.inputs();
    let block_mask = random_mask(
        &mut s.rng,
        case.heads,
        case.lq / 128,
        case.lk() / 128,
        128,
        0.6,
    );
    *inputs.last_mut().unwrap() = mask_input(&block_mask);
    let op = attention(case, 128);
    set_knob(Some("1"));
    let on = Suite::run_on(&s.gpu_bf16, &inputs, &op);
    set_knob(Some("0"));
    let off = Suite::run_on(&s.gpu_bf16, &inputs, &op);
    match (on, off) {
        (Ok((_, a)), Ok((_, b))) => {
            let differ = a
                .iter()
                .zip(&b)
                .filter(|(x, y)| x.to_bits() != y.to_bits())
                .count();
            if differ > 0 {
                s.fail(&name, format!("{differ} values differ"));
            } else {
                println!("ok    {name:<44} {} values, same bits", a.len());
            }
        }
        (Err(e), _) | (_, Err(e)) => s.fail(&name, format!("CUDA error: {e}")),
    }
}

fn random_case(
    s: &mut Suite,
    name: &str,
    heads: usize,
    lq: usize,
    sizes: &[usize],
    density: f32,
    sampled: Option<Vec<(usize, usize)>>,
) -> Case {
    let dim = heads * 128;
    let lk: usize = sizes.iter().sum();
    let q = s.rng.normal_vec(lq * dim, 1.0);
    let k = sizes
        .iter()
        .map(|&n| s.rng.normal_vec(n * dim, 1.0))
        .collect();
    let v = sizes
        .iter()
        .map(|&n| s.rng.normal_vec(n * dim, 1.0))
        .collect();
    let mask = random_mask(&mut s.rng, heads, lq / 128, lk / 64, 64, density);
    Case {
        name: name.to_string(),
        heads,
        lq,
        sizes: sizes.to_vec(),
        q,
        k,
        v,
        mask,
        sampled,
    }
}

pub fn run(s: &mut Suite, hopper: bool) {
    if !hopper {
        if !s.skip("sage int8") {
            println!("skip  sage int8: not an sm_90 device (the knob keeps the bf16 kernel)");
        }
        return;
    }
    let saved = std::env::var(KNOB).ok();
    // Dense-ish: one segment, 90 % of the blocks.
    let case = random_case(s, "dense-ish q256 k512 2 heads", 2, 256, &[512], 0.9, None);
    check_case(s, &case);
    block_mask_keeps_bf16(s, &case);
    // 5 query blocks over 3 heads, 3 segments (one of a single key block). (The op takes whole
    // query and key blocks only.)
    let case = random_case(
        s,
        "q640 k[128, 64, 128] 3 heads",
        3,
        640,
        &[128, 64, 128],
        0.5,
        None,
    );
    check_case(s, &case);
    // Every key the same vector (multiples of 1/4: the key mean is exact): every block smooths to
    // zeros, scale 0, logits 0, the plain average of the selected values.
    {
        let mut case = random_case(s, "all keys equal: zero blocks", 2, 256, &[512], 0.5, None);
        let row: Vec<f32> = (0..256)
            .map(|_| (s.rng.uniform() * 8.0).round() / 4.0)
            .collect();
        for seg in &mut case.k {
            for r in seg.chunks_mut(256) {
                r.copy_from_slice(&row);
            }
        }
        check_case(s, &case);
    }
    // The 1920x1080 steady chunk's geometry: 17280 query rows, 4 KV segments of 17280 keys, about
    // 11 % of the 64-key blocks (sage's ~7,680 keys per query), 3 heads (of the model's 12, to
    // keep the inputs small); the CPU checks sampled items, (0, 1) the empty one.
    let sampled = vec![(0, 0), (0, 1), (1, 67), (2, 5), (2, 134)];
    let case = random_case(
        s,
        "1080p chunk q17280 k4x17280 3 heads",
        3,
        17280,
        &[17280; 4],
        0.11,
        Some(sampled),
    );
    check_case(s, &case);
    set_knob(saved.as_deref());
}
