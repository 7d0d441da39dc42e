//! The kernel sources (header-free CUDA C++, compiled by NVRTC at run time) and the loaded
//! functions. Each `.cu` file is one module; `common.cuh` is prepended to each, and
//! `flash_common.cuh` to the two flash-attention kernels.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction};
use cudarc::nvrtc::Ptx;

use crate::error::{CudaError, CudaResult};
use crate::nvrtc;

const PRELUDE: &str = include_str!("common.cuh");
/// Prepended (after PRELUDE) to both flash-attention sources.
const FLASH_COMMON: &str = include_str!("flash_common.cuh");

pub(crate) struct Source {
    pub name: &'static str,
    body: &'static str,
    pub functions: &'static [&'static str],
}

impl Source {
    pub fn text(&self) -> String {
        let shared = if self.name.starts_with("flash") {
            FLASH_COMMON
        } else {
            ""
        };
        format!("{PRELUDE}\n{shared}\n// ---- {}\n{}", self.name, self.body)
    }
}

/// Values per lane of the attention kernels' instances; head_dim ≤ 32 · the largest.
pub(crate) const ATTENTION_WIDTHS: [usize; 7] = [1, 2, 4, 8, 12, 16, 32];

pub(crate) const SOURCES: &[Source] = &[
    Source {
        name: "elementwise.cu",
        body: include_str!("elementwise.cu"),
        functions: &[
            "broadcast_f32",
            "fill_f32",
            "unary_f32",
            "binary_f32",
            "add_gated_f32",
            "channel_affine_f32",
            "rope_f32",
        ],
    },
    Source {
        name: "random.cu",
        body: include_str!("random.cu"),
        functions: &["random_normal_f32"],
    },
    Source {
        name: "storage.cu",
        body: include_str!("storage.cu"),
        functions: &[
            "f32_to_bf16",
            "bf16_to_f32",
            "copy_blocks_u16",
            "digest_u32",
        ],
    },
    Source {
        name: "layout.cu",
        body: include_str!("layout.cu"),
        functions: &[
            "permute_f32",
            "permute_rows_f32",
            "copy_blocks_f32",
            "upsample2x_f32",
        ],
    },
    Source {
        name: "blur.cu",
        body: include_str!("blur.cu"),
        functions: &["dilated_blur_f32"],
    },
    Source {
        name: "resample.cu",
        body: include_str!("resample.cu"),
        functions: &["resample_rows_u8", "resample_columns_f32"],
    },
    Source {
        name: "conv.cu",
        body: include_str!("conv.cu"),
        functions: &["im2col_f32"],
    },
    Source {
        name: "conv_bf16.cu",
        body: include_str!("conv_bf16.cu"),
        functions: &[
            "conv_stage_input_bf16",
            "conv_stage_weight_bf16",
            "conv_unstage_output_f32",
        ],
    },
    Source {
        name: "conv_direct.cu",
        body: include_str!("conv_direct.cu"),
        functions: &[
            "conv3x3_cl_to_three_f32",
            "conv3x3_cl_to_three_mma",
            "conv3x3_cl_to_three_mma_c128",
        ],
    },
    Source {
        name: "subpixel.cu",
        body: include_str!("subpixel.cu"),
        functions: &[
            "subpixel_weight_bf16",
            "subpixel_shuffle_bf16",
            "subpixel_shuffle_bf16_i32",
        ],
    },
    Source {
        name: "adain.cu",
        body: include_str!("adain.cu"),
        functions: &[
            "plane_partial_sums_f32",
            "plane_stats_finish",
            "adain_apply_f32",
        ],
    },
    Source {
        name: "channels_last.cu",
        body: include_str!("channels_last.cu"),
        functions: &[
            "channels_last_bias_act",
            "channels_last_binary",
            "channels_last_relu",
            "channels_last_upsample2x",
            "copy_blocks_u128",
            "copy_blocks_u128_i32",
        ],
    },
    Source {
        name: "norm.cu",
        body: include_str!("norm.cu"),
        functions: &[
            "layer_norm_f32",
            "layer_norm_vec4_f32",
            "layer_norm_warp_f32",
            "layer_norm_warp_regs_f32",
            "rms_norm_f32",
            "rms_norm_regs_f32",
            "rms_norm_regs_bf16_input",
            "group_mean_f32",
            "group_mean_bf16",
            "group_mean_pairs_f32",
            "group_mean_pairs_bf16",
        ],
    },
    Source {
        name: "norm_silu.cu",
        body: include_str!("norm_silu.cu"),
        functions: &["channel_rms_norm_silu_f32", "channel_rms_norm_silu_cl"],
    },
    Source {
        name: "qkv.cu",
        body: include_str!("qkv.cu"),
        functions: &["qkv_split_norm_rope_f32", "qkv_split_norm_rope_bf16_input"],
    },
    Source {
        name: "attention.cu",
        body: include_str!("attention.cu"),
        functions: &[
            "attention_dense_f32_n1",
            "attention_dense_f32_n2",
            "attention_dense_f32_n4",
            "attention_dense_f32_n8",
            "attention_dense_f32_n12",
            "attention_dense_f32_n16",
            "attention_dense_f32_n32",
            "attention_sparse_f32_n1",
            "attention_sparse_f32_n2",
            "attention_sparse_f32_n4",
            "attention_sparse_f32_n8",
            "attention_sparse_f32_n12",
            "attention_sparse_f32_n16",
            "attention_sparse_f32_n32",
        ],
    },
    Source {
        name: "softmax.cu",
        body: include_str!("softmax.cu"),
        functions: &["softmax_rows_f32"],
    },
    Source {
        name: "mask.cu",
        body: include_str!("mask.cu"),
        functions: &[
            "head_scores_f32",
            "head_scores_tiled_f32",
            "mask_softmax_f64",
            "mask_topk_select_f64",
            "mask_topk_select_cluster_f64",
            "mask_row_counts",
            "mask_offsets_order",
            "mask_row_blocks",
        ],
    },
    Source {
        name: "flash.cu",
        body: include_str!("flash.cu"),
        functions: &[
            "to_bf16_f32",
            "to_bf16_heads_f32",
            "attention_flash_bf16_hd128_w4s3",
            "attention_flash_bf16_hd128_w4s2",
            "attention_flash_bf16_hd128_w8s3",
            "attention_flash_bf16_hd128_w4s2m2",
            "attention_flash_bf16_hd128_w4s3m2",
        ],
    },
    Source {
        name: "flash_wgmma.cu",
        body: include_str!("flash_wgmma.cu"),
        functions: &[
            "attention_flash_bf16_hd128_wgmma_s4",
            "attention_flash_bf16_hd128_wgmma_s5",
            "attention_flash_bf16_hd128_wgmma_k128_s3",
            "attention_flash_bf16_hd128_wgmma_k128pp_s3",
            "attention_flash_bf16_hd128_wgmma_k128pp_tma_s3",
            "attention_flash_dense_bf16_hd128_wgmma_persistent",
            "sage_k_partial_sums",
            "sage_k_mean",
            "sage_quantize_k",
            "attention_sage8_hd128_wgmma_s3",
            "attention_sage8_hd128_wgmma_s4",
            "attention_sage8_hd128_wgmma_s3_unfolded",
            "attention_sage8_hd128_wgmma_s3_mufu",
        ],
    },
];

/// The tensor-core attention kernels of flash.cu (head_dim 128, bf16 operands), one instance per
/// (warps per CTA, pipeline stages, m16 tiles of query rows per warp):
/// `attention_flash_bf16_hd128_w<W>s<S>`, with an `m<M>` suffix for more than one m-tile.
pub(crate) fn flash_kernel_name(warps: usize, stages: usize, m_tiles: usize) -> String {
    let suffix = if m_tiles > 1 {
        format!("m{m_tiles}")
    } else {
        String::new()
    };
    format!("attention_flash_bf16_hd128_w{warps}s{stages}{suffix}")
}

/// The Hopper (wgmma) instances of flash.cu's kernel, in flash_wgmma.cu, one per count of K/V
/// stages: `attention_flash_bf16_hd128_wgmma_s<S>`.
pub(crate) fn flash_wgmma_kernel_name(stages: usize) -> String {
    format!("attention_flash_bf16_hd128_wgmma_s{stages}")
}

/// The 128-keys-per-iteration form of the Hopper kernel (flash_wgmma.cu's
/// `flash_wgmma_k128_body`), per count of K/V stages, with or without the consumer warpgroups'
/// pingpong, and with K/V copied by TMA (pingpong only):
/// `attention_flash_bf16_hd128_wgmma_k128[pp][_tma]_s<S>`.
pub(crate) fn flash_wgmma_k128_kernel_name(stages: usize, pingpong: bool, tma: bool) -> String {
    let pp = if pingpong { "pp" } else { "" };
    let tma = if tma { "_tma" } else { "" };
    format!("attention_flash_bf16_hd128_wgmma_k128{pp}{tma}_s{stages}")
}

/// The int8 Q·Kᵀ form of the Hopper sage attention (flash_wgmma.cu's `flash_sage8_body`), per
/// count of K/V stages: `attention_sage8_hd128_wgmma_s<S>`.
pub(crate) fn flash_sage8_kernel_name(stages: usize) -> String {
    format!("attention_sage8_hd128_wgmma_s{stages}")
}

/// Session 11's form of the int8 sage kernel (flash_sage8_body without FOLD: the logits scaled
/// to fp32 before the softmax), 3 stages only, for measurements.
pub(crate) const FLASH_SAGE8_UNFOLDED: &str = "attention_sage8_hd128_wgmma_s3_unfolded";

/// Other softmax forms of the int8 sage kernel (3 stages, for measurements; flash_wgmma.cu's
/// `FLASH_SAGE8_FORM`): `attention_sage8_hd128_wgmma_s3_<form>`, picked by
/// `FLASHVSR_CUDA_SAGE8_EXP=<form>`. `mufu`: helper h28's kernel (the row max by FMNMX; the
/// default's by 3-input integer max, with the same results).
pub(crate) const FLASH_SAGE8_FORMS: [&str; 1] = ["mufu"];

/// The kernel of softmax form `form` (one of FLASH_SAGE8_FORMS).
pub(crate) fn flash_sage8_form_kernel_name(form: &str) -> String {
    format!("{}_{form}", flash_sage8_kernel_name(3))
}

/// Every function of every source, loaded into one context.
pub(crate) struct Kernels {
    functions: HashMap<&'static str, CudaFunction>,
}

impl Kernels {
    pub fn load(ctx: &Arc<CudaContext>, arch: &str) -> CudaResult<Kernels> {
        let mut functions = HashMap::new();
        for src in SOURCES {
            let cubin = nvrtc::cached_cubin(src.name, &src.text(), arch)?;
            let module = ctx.load_module(Ptx::from_binary(cubin))?;
            for &name in src.functions {
                functions.insert(name, module.load_function(name)?);
            }
        }
        Ok(Kernels { functions })
    }

    pub fn get(&self, name: &str) -> CudaResult<&CudaFunction> {
        self.functions
            .get(name)
            .ok_or_else(|| CudaError::Unsupported(format!("no kernel named {name}")))
    }
}

/// NVRTC-compiles every kernel source for `arch` (no GPU needed); `(source, CUBIN bytes, the
/// compiler's log)`.
pub fn compile_all_kernels_for(arch: &str) -> Result<Vec<(String, usize, String)>, String> {
    SOURCES
        .iter()
        .map(|src| {
            nvrtc::compile_cubin_logged(src.name, &src.text(), arch)
                .map(|(cubin, log)| (src.name.to_string(), cubin.len(), log))
                .map_err(|e| e.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_listed_function_is_defined_in_its_source() {
        for src in SOURCES {
            for f in src.functions {
                // Attention instances are stamped out by macros as `<base>_n##NPL`,
                // `attention_flash_bf16_hd128_w##W##s##S`, `..._w##W##s##S##m##M` and
                // `..._wgmma_s##S`, `..._wgmma_k128_s##S`, `..._wgmma_k128pp_s##S` and
                // `..._wgmma_k128pp_tma_s##S`.
                let wgmma = f.strip_prefix("attention_flash_bf16_hd128_wgmma_s");
                let k128 = f.strip_prefix("attention_flash_bf16_hd128_wgmma_k128_s");
                let k128pp = f.strip_prefix("attention_flash_bf16_hd128_wgmma_k128pp_s");
                let tma = f.strip_prefix("attention_flash_bf16_hd128_wgmma_k128pp_tma_s");
                let sage8 = f.strip_prefix("attention_sage8_hd128_wgmma_s");
                let flash = f
                    .strip_prefix("attention_flash_bf16_hd128_w")
                    .and_then(|ws| ws.split_once('s'));
                let hopper = wgmma.or(k128).or(k128pp).or(tma);
                let pattern = match (f.rsplit_once("_n"), flash, hopper) {
                    _ if sage8.is_some() => match sage8.unwrap().strip_suffix("_unfolded") {
                        Some(s) => format!("\nFLASH_SAGE8_UNFOLDED({s})\n"),
                        None => match sage8.unwrap().split_once('_') {
                            Some((s, form)) => format!("\nFLASH_SAGE8_FORM({s}, {form}, "),
                            None => format!("\nFLASH_SAGE8_INSTANCE({})\n", sage8.unwrap()),
                        },
                    },
                    (_, _, Some(s)) if tma.is_some() => {
                        format!("\nFLASH_WGMMA_K128PP_TMA_INSTANCE({s})\n")
                    }
                    (_, _, Some(s)) if k128.is_some() => {
                        format!("\nFLASH_WGMMA_K128_INSTANCE({s})\n")
                    }
                    (_, _, Some(s)) if k128pp.is_some() => {
                        format!("\nFLASH_WGMMA_K128PP_INSTANCE({s})\n")
                    }
                    (_, _, Some(s)) => format!("\nFLASH_WGMMA_INSTANCE({s})\n"),
                    (_, Some((w, sm)), None) => match sm.split_once('m') {
                        Some((s, m)) => format!("FLASH_INSTANCE_M({w}, {s}, {m},"),
                        None => format!("FLASH_INSTANCE({w}, {sm})"),
                    },
                    (Some((base, npl)), _, None) if npl.parse::<usize>().is_ok() => {
                        format!("{base}_n##")
                    }
                    _ => format!("{f}("),
                };
                assert!(src.body.contains(&pattern), "{f} not in {}", src.name);
            }
        }
    }

    /// Every kernel the Rust side launches by a literal name is listed (a missing entry fails
    /// only at run time on a GPU: "no kernel named ...").
    #[test]
    fn every_launched_name_is_listed() {
        let listed: Vec<&str> = SOURCES
            .iter()
            .flat_map(|s| s.functions.iter().copied())
            .collect();
        let mut dirs = vec![std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")];
        let mut checked = 0;
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(&dir).expect("src is readable") {
                let path = entry.expect("a directory entry").path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                if path.extension().is_none_or(|e| e != "rs") {
                    continue;
                }
                let text = std::fs::read_to_string(&path).expect("a source file");
                for call in ["launch(\"", "kernels.get(\""] {
                    for (at, _) in text.match_indices(call) {
                        let rest = &text[at + call.len()..];
                        let name = &rest[..rest.find('"').expect("a closing quote")];
                        assert!(
                            listed.contains(&name),
                            "{}: {name} is not listed",
                            path.display()
                        );
                        checked += 1;
                    }
                }
            }
        }
        assert!(checked > 40, "only {checked} launches found");
    }

    #[test]
    fn sources_include_no_headers() {
        for text in SOURCES.iter().map(Source::text) {
            assert!(!text.lines().any(|l| l.trim_start().starts_with("#include")));
        }
    }
}
