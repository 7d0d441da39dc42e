//! Locality-constrained top-k block selection (FLASHVSR.md §5.3–5.4, §5.6): the reference the
//! device kernels must reproduce exactly in parity mode.

use rayon::prelude::*;

/// `scores` `(heads, query_blocks, key_blocks)`; `allowed` `(rows, cols)` tiles it (entry
/// (b_q, b_k) is eligible iff `allowed[b_q % rows][b_k % cols] != 0`), and each run of `rows`
/// query blocks of a head is one selection group. Returns 1 for the selected entries.
pub fn select_top_blocks(
    scores: &[f32],
    [heads, query_blocks, key_blocks]: [usize; 3],
    allowed: &[f32],
    [rows, cols]: [usize; 2],
    topk: i64,
    scale: f64,
) -> Vec<u8> {
    let (nq, nk) = (query_blocks, key_blocks);
    let mut selected = vec![0u8; heads * nq * nk];
    if selected.is_empty() {
        return selected;
    }
    // Heads are independent: mask, softmax and select each on its own thread.
    selected
        .par_chunks_mut(nq * nk)
        .enumerate()
        .for_each(|(h, head_selected)| {
            let mut probs = vec![0.0f64; nq * nk];
            for (bq, row) in probs.chunks_mut(nk).enumerate() {
                let raw = &scores[(h * nq + bq) * nk..][..nk];
                let eligible = &allowed[(bq % rows) * cols..][..cols];
                for (bk, p) in row.iter_mut().enumerate() {
                    *p = if eligible[bk % cols] != 0.0 {
                        raw[bk] as f64 * scale
                    } else {
                        f64::NEG_INFINITY
                    };
                }
                softmax(row);
            }
            for (group, dst) in probs
                .chunks(rows * nk)
                .zip(head_selected.chunks_mut(rows * nk))
            {
                select_top(group, topk, dst);
            }
        });
    selected
}

/// In place; a row with no finite entry (nothing eligible) becomes all 0, so it selects nothing.
fn softmax(row: &mut [f64]) {
    let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if max == f64::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    let mut sum = 0.0;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    row.iter_mut().for_each(|v| *v /= sum);
}

/// Keeps the entries strictly greater than the (K+1)-th largest, K = min(n − 1, topk) (§5.4).
fn select_top(values: &[f64], topk: i64, dst: &mut [u8]) {
    let n = values.len() as i64;
    let k = (n - 1).min(topk);
    if k <= 0 {
        return;
    }
    let mut sorted = values.to_vec();
    let (_, tau, _) = sorted.select_nth_unstable_by(k as usize, |a, b| b.total_cmp(a));
    let tau = *tau;
    for (d, &v) in dst.iter_mut().zip(values) {
        *d = u8::from(v > tau);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One head, one group of 2 rows × 3 keys, everything eligible, scale 1.
    fn one_group(scores: &[f32], topk: i64) -> Vec<u8> {
        select_top_blocks(scores, [1, 2, 3], &[1.0; 6], [2, 3], topk, 1.0)
    }

    #[test]
    fn keeps_the_topk_probabilities_of_the_group() {
        // Row probabilities: row 0 softmax(0, 1, 2) = .090 .245 .665, row 1 softmax(0, 0, 3)
        // = .045 .045 .909. The 3 largest of the group: .909, .665, .245.
        let sel = one_group(&[0.0, 1.0, 2.0, 0.0, 0.0, 3.0], 3);
        assert_eq!(sel, vec![0, 1, 1, 0, 0, 1]);
    }

    #[test]
    fn ties_at_the_threshold_are_all_dropped() {
        // Row 1 is flat: its three 1/3 are the 3rd to 5th largest, so K = 3 puts τ on them and
        // keeps only the two values above.
        let sel = one_group(&[0.0, 5.0, 5.0, 1.0, 1.0, 1.0], 3);
        assert_eq!(sel, vec![0, 1, 1, 0, 0, 0]);
    }

    #[test]
    fn topk_at_least_n_keeps_all_but_the_smallest_and_nonpositive_topk_keeps_nothing() {
        let scores = [0.0, 1.0, 2.0, 0.5, 0.25, 3.0];
        // Probabilities .090 .245 .665 / .072 .056 .873: all but the .056 survive.
        assert_eq!(one_group(&scores, 100), vec![1, 1, 1, 1, 0, 1]);
        assert_eq!(one_group(&scores, 0), vec![0; 6]);
        assert_eq!(one_group(&scores, -1), vec![0; 6]);
    }

    #[test]
    fn ineligible_entries_are_never_selected_and_the_pattern_tiles_the_scores() {
        // Pattern (1 row, 2 cols) = [eligible, not]: keys 1 and 3 of every row are masked, and
        // each row is its own group (rows = 1); K = 1 keeps the larger eligible key of each row.
        // A pattern with nothing eligible selects nothing.
        let scores = [1.0, 9.0, 2.0, 9.0, 4.0, 9.0, 3.0, 9.0];
        let sel = select_top_blocks(&scores, [1, 2, 4], &[1.0, 0.0], [1, 2], 1, 1.0);
        assert_eq!(sel, vec![0, 0, 1, 0, 1, 0, 0, 0]);
        let none = select_top_blocks(&scores, [1, 2, 4], &[0.0, 0.0], [1, 2], 3, 1.0);
        assert_eq!(none, vec![0; 8]);
    }

    #[test]
    fn heads_and_groups_select_independently() {
        // Two heads × two groups of one row; K = 1 keeps each group's single largest value.
        let scores = [0.0, 2.0, 3.0, 1.0, 1.0, 0.0, 0.0, 5.0];
        let sel = select_top_blocks(&scores, [2, 2, 2], &[1.0; 2], [1, 2], 1, 1.0);
        assert_eq!(sel, vec![0, 1, 1, 0, 1, 0, 0, 1]);
    }

    #[test]
    fn scale_is_applied_before_the_softmax() {
        // Scale 0: every probability is 1/2, all tie at τ and nothing is kept.
        let sel = select_top_blocks(&[0.0, 9.0, 1.0, 1.0], [1, 2, 2], &[1.0; 4], [2, 2], 1, 0.0);
        assert_eq!(sel, vec![0, 0, 0, 0]);
    }
}
