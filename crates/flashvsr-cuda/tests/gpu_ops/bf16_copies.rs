//! The fast mode's bf16 GEMM inputs: modulate's and layer_norm's bf16 output, the copy the flash
//! attention kernel writes beside its f32 output, and the copy a GEMM makes of an f32 input once
//! and keeps. A bf16 GEMM must see exactly the values that rounding its input
//! gives (`compact`): the same products, bit for bit.

use flashvsr_tensor::{BackendRef, Result, Tensor};

use super::{rel_l2, Suite};

type Values = std::result::Result<Vec<f32>, String>;

fn values(r: Result<Vec<f32>>) -> Values {
    r.map_err(|e| e.to_string())
}

fn compare(s: &mut Suite, name: &str, got: Values, want: Values, tol: f64) {
    if s.filter
        .as_ref()
        .is_some_and(|f| !name.contains(f.as_str()))
    {
        return;
    }
    s.cases += 1;
    match (got, want) {
        (Err(e), _) | (_, Err(e)) => s.fail(name, format!("CUDA error: {e}")),
        (Ok(g), Ok(w)) if g.len() != w.len() => s.fail(name, format!("{} values", g.len())),
        (Ok(g), Ok(w)) => {
            let (err, nan) = rel_l2(&g, &w);
            if nan > 0 || err > tol || g.iter().any(|v| v.is_nan()) {
                s.fail(name, format!("rel L2 {err:.3e} (tol {tol:.0e}), {nan} NaN"));
            } else {
                println!("ok    {name:<44} rel L2 {err:.2e} (tol {tol:.0e})");
            }
        }
    }
}

pub fn run(s: &mut Suite, fast: &BackendRef) {
    let (m, k, n) = (256, 256, 96);
    let heads = 2;
    let up = |v: Vec<f32>, shape: &[usize]| Tensor::from_slice(fast, &v, shape);
    let x = s.rng.normal_vec(m * k, 1.0);
    let (shift, scale) = (s.rng.vec(k, 0.5), s.rng.vec(k, 0.5));
    let (q, kk, v) = (
        s.rng.normal_vec(m * k, 1.0),
        s.rng.normal_vec(m * k, 1.0),
        s.rng.normal_vec(m * k, 1.0),
    );
    let w = s.rng.normal_vec(n * k, 0.05);
    let b = s.rng.vec(n, 1.0);
    let weights = || -> Result<(Tensor, Tensor)> {
        Ok((up(w.clone(), &[n, k])?.compact()?, up(b.clone(), &[n])?))
    };
    // `produce` on the fast backend, then the GEMM on its output as it is and on its rounding.
    let through_gemm = |produce: &dyn Fn() -> Result<Tensor>| -> (Values, Values) {
        let run = |round: bool| -> Result<Vec<f32>> {
            let (w, b) = weights()?;
            let y = produce()?;
            let y = if round { y.compact()? } else { y };
            y.linear(&w, Some(&b))?.to_vec()
        };
        (values(run(false)), values(run(true)))
    };

    let (got, want) = through_gemm(&|| {
        up(x.clone(), &[m, k])?.modulate(&up(shift.clone(), &[k])?, &up(scale.clone(), &[k])?, 1e-6)
    });
    compare(s, "bf16 copies: modulate into a GEMM", got, want, 0.0);
    let (got, want) = through_gemm(&|| {
        up(x.clone(), &[m, k])?.layer_norm(
            Some(&up(scale.clone(), &[k])?),
            Some(&up(shift.clone(), &[k])?),
            1e-6,
        )
    });
    compare(s, "bf16 copies: layer_norm into a GEMM", got, want, 0.0);
    let (got, want) = through_gemm(&|| {
        up(q.clone(), &[m, k])?.attention(
            &up(kk.clone(), &[m, k])?,
            &up(v.clone(), &[m, k])?,
            heads,
        )
    });
    compare(s, "bf16 copies: attention into a GEMM", got, want, 0.0);
    let (got, want) = through_gemm(&|| {
        let blocks = m / 128;
        let mask = up(vec![1.0; heads * blocks * blocks], &[heads, blocks, blocks])?;
        up(q.clone(), &[m, k])?.block_sparse_attention(
            &up(kk.clone(), &[m, k])?,
            &up(v.clone(), &[m, k])?,
            &mask,
            128,
        )
    });
    compare(
        s,
        "bf16 copies: sparse attention into a GEMM",
        got,
        want,
        0.0,
    );

    // An f32 input read by two GEMMs: rounded once, kept, the same products both times.
    let reused = (|| -> Result<(Vec<f32>, Vec<f32>, Vec<f32>)> {
        let (w, b) = weights()?;
        let a = up(x.clone(), &[m, k])?;
        let first = a.linear(&w, Some(&b))?.to_vec()?;
        let second = a.linear(&w, Some(&b))?.to_vec()?;
        let rounded = a.compact()?.linear(&w, Some(&b))?.to_vec()?;
        Ok((first, second, rounded))
    })();
    let (first, second, rounded) = match reused {
        Ok((f, s2, r)) => (Ok(f), Ok(s2), Ok(r)),
        Err(e) => (Err(e.to_string()), Err(e.to_string()), Err(e.to_string())),
    };
    compare(
        s,
        "bf16 copies: first GEMM of an f32 input",
        first,
        rounded.clone(),
        0.0,
    );
    compare(
        s,
        "bf16 copies: second GEMM reuses the copy",
        second,
        rounded,
        0.0,
    );
}
