use std::sync::Arc;

use flashvsr_tensor::{BlockMask, ModulatedFfn, Tensor};

use super::config::{DitConfig, EPS};
use super::mask::{score_scale, SparseSettings};
use crate::params::Params;
use crate::Result;

/// One transformer block with its load-time constants folded in: the six modulation rows
/// (`modulation + t_mod`; the two gates are folded into the output projections, see
/// [`gated_linear`]) and the cross-attention K, V of the fixed prompt.
pub struct DitBlock {
    shift1: Tensor,
    scale1: Tensor,
    shift2: Tensor,
    scale2: Tensor,
    /// The self-attention's q, k and v projections as one, `(3·dim, dim)`: one GEMM.
    qkv: (Tensor, Tensor),
    o: (Tensor, Tensor),
    norm_q: Tensor,
    norm_k: Tensor,
    cross_q: (Tensor, Tensor),
    cross_norm_q: Tensor,
    cross_o: (Tensor, Tensor),
    cross_k: Tensor,
    cross_v: Tensor,
    norm3: (Tensor, Tensor),
    ffn_up: (Tensor, Tensor),
    ffn_down: (Tensor, Tensor),
    heads: usize,
}

/// Tokens per feed-forward pass at most (see `DitBlock::ffn`): a steady chunk of a 1408×768
/// canvas (8,448 tokens) is one pass; larger chunks are split into equal passes.
pub const FFN_TOKENS_PER_PASS: usize = 12288;

/// Rows of each feed-forward pass over `tokens` tokens: equal passes of at most
/// `FFN_TOKENS_PER_PASS` (a short last pass would be a GEMM too small to use the device well).
fn ffn_pass_rows(tokens: usize) -> usize {
    let passes = tokens.div_ceil(FFN_TOKENS_PER_PASS).max(1);
    tokens.div_ceil(passes).max(1)
}

fn linear(p: &Params, name: &str, out: usize, inp: usize) -> Result<(Tensor, Tensor)> {
    Ok((
        p.weight(&format!("{name}.weight"), &[out, inp])?,
        p.tensor(&format!("{name}.bias"), &[out])?,
    ))
}

/// `linear` with its output channels scaled by `gate`: `x + gate ⊙ (y·Wᵀ + b)` becomes
/// `x + y·(gate ⊙ W)ᵀ + gate ⊙ b`, one GEMM that adds the residual itself. The gate is a load-time
/// constant (one timestep), so the product is made once, before the weight is compacted.
fn gated_linear(
    p: &Params,
    name: &str,
    out: usize,
    inp: usize,
    gate: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let w = p.tensor(&format!("{name}.weight"), &[out, inp])?;
    let no_shift = Tensor::zeros(p.backend(), &[out])?;
    Ok((
        w.channel_affine(gate, &no_shift)?.compact()?,
        p.tensor(&format!("{name}.bias"), &[out])?.mul(gate)?,
    ))
}

/// `residual + x·Wᵀ + b`.
fn apply_add(x: &Tensor, l: &(Tensor, Tensor), residual: &Tensor) -> Result<Tensor> {
    Ok(x.linear_add(&l.0, Some(&l.1), residual)?)
}

fn apply(x: &Tensor, l: &(Tensor, Tensor)) -> Result<Tensor> {
    Ok(x.linear(&l.0, Some(&l.1))?)
}

/// Keys and values of the temporal groups a layer still attends to, oldest first.
#[derive(Clone, Default)]
pub struct LayerCache {
    pub groups: Vec<(Tensor, Tensor)>,
    /// The block means of cached keys, kept beside them: every later chunk's mask reads them.
    pooled: Vec<PooledKeys>,
}

/// `pooled`: the means of every `key_block` rows of `keys`.
#[derive(Clone)]
struct PooledKeys {
    keys: Tensor,
    key_block: usize,
    pooled: Tensor,
}

impl LayerCache {
    /// The block means of `keys` (a cached group, or this chunk's keys), from the cache when
    /// they were computed before.
    fn pooled(&mut self, keys: &Tensor, key_block: usize) -> Result<Tensor> {
        let same = |p: &PooledKeys| {
            p.key_block == key_block
                && p.keys.shape() == keys.shape()
                && Arc::ptr_eq(p.keys.buffer(), keys.buffer())
        };
        if let Some(p) = self.pooled.iter().find(|p| same(p)) {
            return Ok(p.pooled.clone());
        }
        let pooled = keys
            .reshape(&[keys.dim(0) / key_block, key_block, keys.dim(1)])?
            .group_mean()?;
        self.pooled.push(PooledKeys {
            keys: keys.clone(),
            key_block,
            pooled: pooled.clone(),
        });
        Ok(pooled)
    }

    /// Forgets the means of keys no longer cached (evicted, or replaced by a restore or a move to
    /// another device), so that they do not keep those keys alive.
    fn prune_pooled(&mut self) {
        let groups = &self.groups;
        self.pooled.retain(|p| {
            groups
                .iter()
                .any(|(k, _)| Arc::ptr_eq(k.buffer(), p.keys.buffer()))
        });
    }
}

impl DitBlock {
    pub fn load(p: &Params, cfg: &DitConfig, t_mod: &[f32], context: &Tensor) -> Result<DitBlock> {
        let d = cfg.dim;
        let modulation = p.values("modulation", &[1, 6, d])?;
        let row = |r: usize| -> Result<Tensor> {
            let v: Vec<f32> = (0..d)
                .map(|c| modulation[r * d + c] + t_mod[r * d + c])
                .collect();
            Ok(Tensor::from_slice(p.backend(), &v, &[d])?)
        };
        let cross_k = linear(p, "cross_attn.k", d, d)?;
        let cross_v = linear(p, "cross_attn.v", d, d)?;
        let cross_norm_k = p.tensor("cross_attn.norm_k.weight", &[d])?;
        let (gate1, gate2) = (row(2)?, row(5)?);
        let self_attn = |part: &str| ["q", "k", "v"].map(|p| format!("self_attn.{p}.{part}"));
        Ok(DitBlock {
            shift1: row(0)?,
            scale1: row(1)?,
            shift2: row(3)?,
            scale2: row(4)?,
            qkv: (
                p.weights_stacked(&self_attn("weight"), &[d, d])?,
                p.tensors_stacked(&self_attn("bias"), &[d])?,
            ),
            o: gated_linear(p, "self_attn.o", d, d, &gate1)?,
            norm_q: p.tensor("self_attn.norm_q.weight", &[d])?,
            norm_k: p.tensor("self_attn.norm_k.weight", &[d])?,
            cross_q: linear(p, "cross_attn.q", d, d)?,
            cross_norm_q: p.tensor("cross_attn.norm_q.weight", &[d])?,
            cross_o: linear(p, "cross_attn.o", d, d)?,
            // Read by every chunk's cross-attention: compact storage (bf16 in fast mode, where
            // the attention kernel reads K and V as bf16 anyway).
            cross_k: apply(context, &cross_k)?
                .rms_norm(&cross_norm_k, EPS)?
                .compact()?,
            cross_v: apply(context, &cross_v)?.compact()?,
            norm3: (
                p.tensor("norm3.weight", &[d])?,
                p.tensor("norm3.bias", &[d])?,
            ),
            ffn_up: linear(p, "ffn.0", cfg.ffn_dim, d)?,
            ffn_down: gated_linear(p, "ffn.2", d, cfg.ffn_dim, &gate2)?,
            heads: cfg.heads,
        })
    }

    /// `x`: the chunk's tokens in window order; `allowed`: [`SparseSettings::allowed_pattern`] on
    /// the device. Returns the new residual stream and the mask used, `(heads, query blocks, key
    /// blocks)` on the device.
    #[allow(clippy::too_many_arguments)]
    pub fn forward(
        &self,
        x: &Tensor,
        rope: &(Tensor, Tensor),
        query_groups: usize,
        cache: &mut LayerCache,
        settings: &SparseSettings,
        allowed: &Tensor,
        injected_mask: Option<&BlockMask>,
    ) -> Result<(Tensor, Tensor)> {
        let a = x.modulate(&self.shift1, &self.scale1, EPS)?;
        // Only the split below reads the projection: compact storage (bf16 in fast mode, as the
        // reference's bf16 model has it) halves what the GEMM writes and the split reads.
        let qkv = a.linear_compact(&self.qkv.0, Some(&self.qkv.1))?;
        // Activations are dropped once read, not at the end of the block: the first chunk's are
        // large, and in fast mode they carry a bf16 copy for the GEMMs.
        drop(a);
        // The KV cache is read by the next kv_len chunks: k and v in compact storage (bf16 in
        // fast mode), one tensor per cached group.
        let split = qkv.qkv_split_norm_rope(
            &self.norm_q,
            &self.norm_k,
            &rope.0,
            &rope.1,
            self.heads,
            EPS,
            query_groups,
        )?;
        drop(qkv);
        let q = split.q;

        cache.prune_pooled();
        let mask = match injected_mask {
            Some(m) => m.to_tensor(x.backend())?,
            None => self.select(&q, &split.k, cache, settings, allowed)?,
        };
        // The cached groups and this chunk's keys, read where they are (no concatenation).
        let keys: Vec<&Tensor> = cache.groups.iter().map(|g| &g.0).chain(&split.k).collect();
        let values: Vec<&Tensor> = cache.groups.iter().map(|g| &g.1).chain(&split.v).collect();
        let o =
            q.block_sparse_attention_segments(&keys, &values, &mask, settings.mode.key_block())?;
        drop(q);
        let x = apply_add(&o, &self.o, x)?;
        drop(o);

        cache.groups.extend(split.k.into_iter().zip(split.v));
        // The reference evicts exactly one group per chunk, whatever the excess (spec §4.8).
        if cache.groups.len() > settings.kv_len {
            cache.groups.remove(0);
        }
        cache.prune_pooled();

        let co = {
            let c = x.layer_norm(Some(&self.norm3.0), Some(&self.norm3.1), EPS)?;
            // Only the norm reads the projection: compact storage, as for q/k/v.
            let cq = c.linear_compact(&self.cross_q.0, Some(&self.cross_q.1))?;
            let cq = cq.rms_norm(&self.cross_norm_q, EPS)?;
            cq.attention(&self.cross_k, &self.cross_v, self.heads)?
        };
        let x = apply_add(&co, &self.cross_o, &x)?;
        drop(co);

        Ok((self.ffn(&x)?, mask))
    }

    /// `x` plus the gated feed-forward net of its modulation, over at most `FFN_TOKENS_PER_PASS`
    /// tokens at a time: its hidden layer is ~6× the width of the stream, and large chunks (the
    /// first, or big canvases) would otherwise need it for every token at once. Each pass
    /// modulates its own rows of the stream (a per-row op: the same values as modulating all of
    /// them first); a backend may run the passes on the stream's rows in place
    /// ([`Tensor::modulated_ffn`]).
    fn ffn(&self, x: &Tensor) -> Result<Tensor> {
        let ffn = ModulatedFfn {
            shift: &self.shift2,
            scale: &self.scale2,
            eps: EPS,
            up: (&self.ffn_up.0, &self.ffn_up.1),
            down: (&self.ffn_down.0, &self.ffn_down.1),
        };
        Ok(x.modulated_ffn(&ffn, ffn_pass_rows(x.dim(0)))?)
    }

    /// The block mask, computed where the scores are: no host round trip. The keys are the
    /// cache's groups, then this chunk's `keys`.
    fn select(
        &self,
        q: &Tensor,
        keys: &[Tensor],
        cache: &mut LayerCache,
        settings: &SparseSettings,
        allowed: &Tensor,
    ) -> Result<Tensor> {
        let d = q.dim(1);
        let kb = settings.mode.key_block();
        let pooled_q = q.reshape(&[q.dim(0) / 128, 128, d])?.group_mean()?;
        let pooled_k = pooled_keys(cache, keys, kb)?;
        let scores = pooled_q.head_scores(&pooled_k, self.heads)?;
        Ok(scores.sparse_topk_mask(allowed, settings.topk, score_scale())?)
    }
}

/// The mean of every `kb` key rows of the cached groups and this chunk's `keys` joined,
/// `(blocks, D)`: per segment (a group's means computed once, when the group was new), then the
/// small means joined; the keys themselves are joined only where a block would straddle two
/// segments.
fn pooled_keys(cache: &mut LayerCache, keys: &[Tensor], kb: usize) -> Result<Tensor> {
    let groups: Vec<Tensor> = cache.groups.iter().map(|g| g.0.clone()).collect();
    let all: Vec<&Tensor> = groups.iter().chain(keys).collect();
    if !all.iter().all(|k| k.dim(0).is_multiple_of(kb)) {
        let joined = Tensor::cat(&all, 0)?;
        return Ok(joined
            .reshape(&[joined.dim(0) / kb, kb, joined.dim(1)])?
            .group_mean()?);
    }
    let pooled = all
        .iter()
        .map(|k| cache.pooled(k, kb))
        .collect::<Result<Vec<_>>>()?;
    let refs: Vec<&Tensor> = pooled.iter().collect();
    Ok(Tensor::cat(&refs, 0)?)
}

#[cfg(test)]
mod tests {
    use super::{ffn_pass_rows, FFN_TOKENS_PER_PASS};

    #[test]
    fn ffn_passes_are_equal_and_bounded() {
        // A steady chunk of 1408×768 is one pass; its first chunk, and 1920×1152's chunks, are
        // cut into equal passes.
        assert_eq!(ffn_pass_rows(8_448), 8_448);
        assert_eq!(ffn_pass_rows(FFN_TOKENS_PER_PASS), FFN_TOKENS_PER_PASS);
        assert_eq!(ffn_pass_rows(25_344), 8_448);
        assert_eq!(ffn_pass_rows(17_280), 8_640);
        assert_eq!(ffn_pass_rows(51_840), 10_368);
        assert_eq!(ffn_pass_rows(FFN_TOKENS_PER_PASS + 1), 6_145);
        assert_eq!(ffn_pass_rows(0), 1);
    }
}
