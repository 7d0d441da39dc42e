//! Copies that do not wait for the device: `download_later` (pinned buffers the engine reads a
//! chunk's pixels from after it went on) and `upload_queued` (LQ frames staged in pinned memory).
//! Their sources and targets are freed or reused while later kernels run, so each case keeps the
//! stream busy and drops or overwrites what it can right after the call.

use flashvsr_cuda::CudaBuffer;
use flashvsr_tensor::{BackendRef, HostData, PendingDownload, Result, Tensor};

use super::cudnn_conv::FastBackends;
use super::Suite;

/// More than the pinned pools keep, so that buffers are also allocated and evicted.
const IN_FLIGHT: usize = 12;
const UPLOADS: usize = 48;

fn skipped(s: &Suite, name: &str) -> bool {
    s.filter
        .as_ref()
        .is_some_and(|f| !name.contains(f.as_str()))
}

fn report(s: &mut Suite, name: &str, outcome: Result<Option<String>>) {
    s.cases += 1;
    match outcome {
        Ok(None) => println!("ok    {name}"),
        Ok(Some(why)) => s.fail(name, why),
        Err(e) => s.fail(name, format!("CUDA error: {e}")),
    }
}

/// Work that allocates and writes device memory of about `len` values: whatever a pending copy
/// still read from a freed buffer would be overwritten.
fn busy(backend: &BackendRef, len: usize) -> Result<()> {
    // Made on the device: a pageable upload here could wait for the pending copies.
    let x = Tensor::zeros(backend, &[len])?.affine(0.0, 0.5)?;
    let mut y = x.clone();
    for _ in 0..8 {
        y = y.affine(1.5, -0.25)?.add(&x)?;
    }
    let m = Tensor::zeros(backend, &[512, 512])?.affine(0.0, 0.01)?;
    let mut z = m.clone();
    for _ in 0..8 {
        z = z.linear(&m, None)?;
    }
    drop((y, z));
    Ok(())
}

fn channels_last(t: &Tensor) -> bool {
    t.buffer()
        .as_any()
        .downcast_ref::<CudaBuffer>()
        .and_then(CudaBuffer::channels_last)
        .is_some()
}

/// `make()` several times: each tensor's `download`, then its `download_later` with the tensor
/// dropped at once and the device kept busy, all copies in flight together.
fn downloads_in_flight(
    backend: &BackendRef,
    make: &dyn Fn(usize) -> Result<Tensor>,
) -> Result<Option<String>> {
    let mut want = Vec::new();
    let mut pending: Vec<PendingDownload> = Vec::new();
    for i in 0..IN_FLIGHT {
        let t = make(i)?;
        want.push(t.to_vec()?);
        pending.push(t.to_vec_later()?);
        let len = t.elem_count();
        drop(t);
        busy(backend, len)?;
    }
    for (i, (p, w)) in pending.into_iter().zip(want).enumerate() {
        let got = p.wait()?;
        if got.len() != w.len() {
            return Ok(Some(format!(
                "download {i}: {} values, {}",
                got.len(),
                w.len()
            )));
        }
        let differ = got
            .iter()
            .zip(&w)
            .filter(|(g, w)| g.to_bits() != w.to_bits())
            .count();
        if differ > 0 {
            return Ok(Some(format!("download {i}: {differ} values differ")));
        }
    }
    Ok(None)
}

pub fn run(s: &mut Suite, fast: &FastBackends) {
    let gpu = s.gpu.clone();
    let values: Vec<Vec<f32>> = (0..IN_FLIGHT)
        .map(|_| s.rng.normal_vec(3 * 8 * 96 * 160, 1.0))
        .collect();
    let shape = [3, 8, 96, 160];

    let name = "async copies: download_later of f32 = download";
    if !skipped(s, name) {
        let outcome = downloads_in_flight(&gpu, &|i| {
            Tensor::from_slice(&gpu, &values[i], &shape)?.affine(2.0, 1.0)
        });
        report(s, name, outcome);
    }

    let name = "async copies: download_later of bf16 = download";
    if !skipped(s, name) {
        let outcome = downloads_in_flight(&gpu, &|i| {
            let bits = values[i].iter().map(|v| (v.to_bits() >> 16) as u16);
            Tensor::from_host_data(&gpu, &HostData::Bf16(bits.collect()), &shape)
        });
        report(s, name, outcome);
    }

    let name = "async copies: download_later of channels-last = download";
    if !skipped(s, name) {
        let cudnn: BackendRef = fast.cudnn.clone();
        let x = s.rng.normal_vec(16 * 3 * 24 * 40, 1.0);
        let w = s.rng.normal_vec(16 * 16 * 9, 0.1);
        let activation = |i: usize| -> Result<Tensor> {
            let x =
                Tensor::from_slice(&cudnn, &x, &[16, 3, 24, 40])?.affine(1.0 + i as f32, 0.0)?;
            let w = Tensor::from_slice(&cudnn, &w, &[16, 16, 1, 3, 3])?;
            x.conv3d_relu(&w, None, 1, 1, flashvsr_tensor::PadMode::Zero)
        };
        match activation(0).map(|t| channels_last(&t)) {
            Ok(false) => println!("skip  {name}: no channels-last tensors here (cuDNN off?)"),
            Ok(true) => report(s, name, downloads_in_flight(&cudnn, &activation)),
            Err(e) => report(s, name, Err(e)),
        }
    }

    let name = "async copies: queued uploads while kernels run";
    if !skipped(s, name) {
        let outcome = queued_uploads(&gpu, &mut s.rng, &shape);
        report(s, name, outcome);
    }
}

/// More uploads than the staging pool keeps, from one host buffer overwritten after each call,
/// with kernels queued between them; then every tensor read back.
fn queued_uploads(
    backend: &BackendRef,
    rng: &mut super::Rng,
    shape: &[usize],
) -> Result<Option<String>> {
    let len: usize = shape.iter().product();
    let mut host = vec![0.0f32; len];
    let mut want = Vec::new();
    let mut uploaded = Vec::new();
    for i in 0..UPLOADS {
        host.copy_from_slice(&rng.vec(len, 1.0));
        uploaded.push(Tensor::from_slice_queued(backend, &host, shape)?);
        want.push(host.clone());
        host.fill(f32::NAN);
        if i % 4 == 0 {
            busy(backend, len)?;
        }
    }
    for (i, (t, w)) in uploaded.iter().zip(&want).enumerate() {
        // Through a kernel too: the copy is ordered before the stream's later work.
        let got = t.affine(1.0, 0.0)?.to_vec()?;
        if got != *w {
            return Ok(Some(format!("upload {i}: values differ")));
        }
    }
    Ok(None)
}
