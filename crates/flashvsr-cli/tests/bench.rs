//! `flashvsr bench` runs the whole pipeline on random weights and reports valid numbers.

mod cli_support;

use cli_support::{flashvsr, stderr};

#[test]
fn bench_with_small_random_weights_reports_stages_and_masks() {
    let out = flashvsr(&[
        "bench",
        "--resolution",
        "256x128",
        "--frames",
        "29",
        "--random-weights",
        "--model-size",
        "small",
        "--attention",
        "block",
        "--device",
        "cpu",
        "--warmup",
        "1",
        "--runs",
        "2",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["frames"], 29);
    assert_eq!(r["chunks"], 2, "29 frames pad to 33: two chunks");
    assert_eq!(r["device"], "cpu");
    let fps = |k: &str| r[k].as_f64().unwrap();
    assert!(fps("fps_min") > 0.0 && fps("fps_min") <= fps("fps") && fps("fps") <= fps("fps_max"));
    assert_eq!(r["runs"], 2);
    assert_eq!(r["warmup_runs"], 1);
    assert_eq!(r["run_walls_s"].as_array().unwrap().len(), 2);
    // The phases of a pass come in order, within the mean wall of the timed runs.
    let walls: Vec<f64> = r["run_walls_s"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_f64().unwrap() * 1e3)
        .collect();
    let mean_wall = walls.iter().sum::<f64>() / walls.len() as f64;
    let phase = |k: &str| r["pass_phases_ms"][k].as_f64().unwrap();
    let (first, all, done) = (
        phase("first_chunk_enqueued"),
        phase("all_enqueued"),
        phase("device_done"),
    );
    assert!(
        0.0 < first && first <= all && all <= done && done <= mean_wall,
        "{first} {all} {done} {mean_wall}"
    );
    for stage in ["lq_projector", "dit", "decode"] {
        assert!(r["stages_ms"][stage].as_f64().unwrap() > 0.0, "{stage}");
    }
    let density = r["mask_density"].as_f64().unwrap();
    assert!(density > 0.0 && density <= 1.0, "{density}");
    assert_eq!(r["empty_query_rows"], 0);
    assert_eq!(r["masks_valid"], true);
}

#[test]
fn bench_rejects_a_bad_resolution() {
    let out = flashvsr(&[
        "bench",
        "--resolution",
        "255x128",
        "--random-weights",
        "--device",
        "cpu",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
