//! A prefix view over one weight file (the pattern of candle's `VarBuilder`): every lookup checks
//! presence and shape and names the file and the key when either is wrong.

use flashvsr_tensor::{BackendRef, Tensor};

use crate::weights::{WeightError, WeightSource};
use crate::{ModelError, Result};

#[derive(Clone)]
pub struct Params<'a> {
    file: &'a dyn WeightSource,
    backend: &'a BackendRef,
    prefix: String,
    what: &'static str,
}

impl<'a> Params<'a> {
    /// `what` names the kind of file for error messages ("a FlashVSR DiT file").
    pub fn new(file: &'a dyn WeightSource, backend: &'a BackendRef, what: &'static str) -> Self {
        Params {
            file,
            backend,
            prefix: String::new(),
            what,
        }
    }

    pub fn file(&self) -> &'a dyn WeightSource {
        self.file
    }

    pub fn backend(&self) -> &'a BackendRef {
        self.backend
    }

    pub fn pp(&self, name: impl std::fmt::Display) -> Params<'a> {
        Params {
            prefix: format!("{}{}.", self.prefix, name),
            ..self.clone()
        }
    }

    pub fn key(&self, name: &str) -> String {
        format!("{}{}", self.prefix, name)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.file.contains(&self.key(name))
    }

    pub fn shape(&self, name: &str) -> Result<Vec<usize>> {
        let key = self.key(name);
        self.file
            .shape(&key)
            .map(<[usize]>::to_vec)
            .ok_or_else(|| self.missing(key).into())
    }

    fn missing(&self, key: String) -> WeightError {
        WeightError::MissingKey {
            path: self.file.path().to_path_buf(),
            key,
            what: format!("expected in {}", self.what),
        }
    }

    pub fn values(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let key = self.key(name);
        if !self.file.contains(&key) {
            return Err(self.missing(key).into());
        }
        Ok(self.file.read_f32_shaped(&key, shape)?)
    }

    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        if let Some(made) = self.made_on_device(name, shape) {
            return made;
        }
        let values = self.values(name, shape)?;
        Ok(Tensor::from_slice(self.backend, &values, shape)?)
    }

    /// The tensor `name` made by its source straight on the device (random weights), when the
    /// source can and the shape is the expected one; None: read its values on the host.
    fn made_on_device(&self, name: &str, shape: &[usize]) -> Option<Result<Tensor>> {
        let key = self.key(name);
        if self.file.shape(&key) != Some(shape) {
            return None;
        }
        self.file.tensor_on(&key, self.backend)
    }

    /// A weight matrix read by every chunk, in the backend's compact storage (bf16 on CUDA in
    /// fast mode; see `Tensor::compact`).
    pub fn weight(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        Ok(self.tensor(name, shape)?.compact()?)
    }

    /// Tensors of one `shape` stacked along their first dimension (`names.len() · shape[0]`
    /// rows, in the order of `names`), each as [`Params::tensor`] makes it: the values of the
    /// separate tensors, bit for bit.
    pub fn tensors_stacked(&self, names: &[impl AsRef<str>], shape: &[usize]) -> Result<Tensor> {
        self.stacked(names, shape, Ok)
    }

    /// Weight matrices stacked as [`Params::tensors_stacked`] stacks them, in the storage of
    /// [`Params::weight`]: several projections of one input as one GEMM.
    pub fn weights_stacked(&self, names: &[impl AsRef<str>], shape: &[usize]) -> Result<Tensor> {
        self.stacked(names, shape, |t| Ok(t.compact()?))
    }

    /// Each part the source makes on the device is `store`d as it comes (one part at a time is
    /// held unstored); parts read on the host are gathered there and uploaded together (a file's:
    /// one upload, nothing to join on the device). `store` works per element (`compact` rounds
    /// each value), so joining stored parts gives the stacked tensor stored.
    fn stacked(
        &self,
        names: &[impl AsRef<str>],
        shape: &[usize],
        store: impl Fn(Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let Some((&rows, row_shape)) = shape.split_first().filter(|_| !names.is_empty()) else {
            return Err(ModelError::Settings(format!(
                "cannot stack {} tensors of shape {shape:?}",
                names.len()
            )));
        };
        let mut parts = Vec::new();
        // Host parts not uploaded yet: their values, and how many.
        let (mut host, mut host_parts) = (Vec::new(), 0);
        let upload = |values: &mut Vec<f32>, count: &mut usize| -> Result<Tensor> {
            let stacked_rows = std::mem::take(count) * rows;
            let shape: Vec<usize> = std::iter::once(stacked_rows)
                .chain(row_shape.iter().copied())
                .collect();
            store(Tensor::from_slice(
                self.backend,
                &std::mem::take(values),
                &shape,
            )?)
        };
        for name in names {
            match self.made_on_device(name.as_ref(), shape) {
                Some(made) => {
                    if host_parts > 0 {
                        parts.push(upload(&mut host, &mut host_parts)?);
                    }
                    parts.push(store(made?)?);
                }
                None => {
                    host.extend(self.values(name.as_ref(), shape)?);
                    host_parts += 1;
                }
            }
        }
        if host_parts > 0 {
            parts.push(upload(&mut host, &mut host_parts)?);
        }
        let parts: Vec<&Tensor> = parts.iter().collect();
        Ok(Tensor::cat(&parts, 0)?)
    }

    /// The tensor with a different (same-size) logical shape, e.g. a 1×1 conv weight as a matrix.
    pub fn tensor_as(&self, name: &str, shape: &[usize], as_shape: &[usize]) -> Result<Tensor> {
        Ok(self.tensor(name, shape)?.reshape(as_shape)?)
    }
}

#[cfg(test)]
mod tests {
    use flashvsr_tensor::cpu::CpuBackend;

    use super::*;
    use crate::random_weights::{ModelSize, RandomWeights};

    fn bits(t: &Tensor) -> Vec<u32> {
        t.to_vec().unwrap().iter().map(|v| v.to_bits()).collect()
    }

    fn joined(parts: &[Tensor]) -> Vec<u32> {
        parts.iter().flat_map(bits).collect()
    }

    #[test]
    fn stacked_tensors_are_the_separate_ones_bit_for_bit() {
        let cpu = CpuBackend::new_ref();
        let file = RandomWeights::dit(ModelSize::SMALL, 3);
        let p = Params::new(&file, &cpu, "a test DiT").pp("blocks.1");
        let d = ModelSize::SMALL.dim;
        let names = ["self_attn.q", "self_attn.k", "self_attn.v"];
        let weights = names.map(|n| format!("{n}.weight"));
        let stacked = p.weights_stacked(&weights, &[d, d]).unwrap();
        assert_eq!(stacked.shape(), [3 * d, d]);
        let separate = weights.each_ref().map(|n| p.weight(n, &[d, d]).unwrap());
        assert_eq!(bits(&stacked), joined(&separate));

        // Parts made on the device (normal) between parts read on the host (constant gains).
        let mixed = [
            "self_attn.norm_q.weight",
            "self_attn.q.bias",
            "self_attn.v.bias",
            "norm3.bias",
            "self_attn.k.bias",
        ];
        let stacked = p.tensors_stacked(&mixed, &[d]).unwrap();
        assert_eq!(stacked.shape(), [5 * d]);
        let separate = mixed.map(|n| p.tensor(n, &[d]).unwrap());
        assert_eq!(bits(&stacked), joined(&separate));
    }

    #[test]
    fn one_gemm_over_stacked_weights_gives_each_projection() {
        let cpu = CpuBackend::new_ref();
        let file = RandomWeights::dit(ModelSize::SMALL, 5);
        let p = Params::new(&file, &cpu, "a test DiT").pp("blocks.0.self_attn");
        let d = ModelSize::SMALL.dim;
        let x: Vec<f32> = (0..130 * d)
            .map(|i| ((i * 7919) % 1013) as f32 / 500.0 - 1.0)
            .collect();
        let x = Tensor::from_slice(&cpu, &x, &[130, d]).unwrap();
        let names = ["q", "k", "v"];
        let w = p.weights_stacked(&names.map(|n| format!("{n}.weight")), &[d, d]);
        let b = p.tensors_stacked(&names.map(|n| format!("{n}.bias")), &[d]);
        let stacked = x.linear(&w.unwrap(), Some(&b.unwrap())).unwrap();
        for (i, n) in names.iter().enumerate() {
            let w = p.weight(&format!("{n}.weight"), &[d, d]).unwrap();
            let b = p.tensor(&format!("{n}.bias"), &[d]).unwrap();
            let alone = x.linear(&w, Some(&b)).unwrap();
            assert_eq!(
                bits(&stacked.narrow(1, i * d, d).unwrap()),
                bits(&alone),
                "{n}"
            );
        }
    }

    #[test]
    fn stacking_names_what_is_wrong() {
        let cpu = CpuBackend::new_ref();
        let file = RandomWeights::dit(ModelSize::SMALL, 3);
        let p = Params::new(&file, &cpu, "a test DiT").pp("blocks.0");
        let d = ModelSize::SMALL.dim;
        let missing = p.tensors_stacked(&["self_attn.q.bias", "self_attn.x.bias"], &[d]);
        assert!(missing
            .unwrap_err()
            .to_string()
            .contains("blocks.0.self_attn.x.bias"));
        let shape = p.weights_stacked(&["self_attn.q.weight", "self_attn.q.bias"], &[d, d]);
        assert!(shape.unwrap_err().to_string().contains("self_attn.q.bias"));
        assert!(p.tensors_stacked(&[] as &[&str], &[d]).is_err());
        assert!(p.tensors_stacked(&["self_attn.q.bias"], &[]).is_err());
    }
}
