//! Loader benchmark: generate a compose project of N services (default 500) and load it
//! repeatedly; print the median, min and max wall time.
//!
//! `cargo run --release --example load_bench -- [SERVICES] [RUNS]`
//! `cargo run --release --example load_bench -- --print 500 > compose.yaml` writes the file
//! only (for the bench harness in bench/).

use std::time::Instant;

use tug::project::{LoadOptions, load, synth::synthetic_compose};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--print") {
        let n = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(500);
        print!("{}", synthetic_compose(n));
        return;
    }
    let n: usize = args.first().and_then(|s| s.parse().ok()).unwrap_or(500);
    let runs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(30);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("compose.yaml"), synthetic_compose(n)).expect("write");
    let opts = LoadOptions {
        cwd: Some(dir.path().to_path_buf()),
        environment: Some(std::collections::BTreeMap::new()),
        ..LoadOptions::default()
    };
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let t = Instant::now();
        let p = load(&opts).expect("load");
        times.push(t.elapsed());
        assert!(p.services.len() >= n - n / 50);
    }
    times.sort();
    println!(
        "services={n} runs={runs} median={:.2}ms min={:.2}ms max={:.2}ms",
        times[runs / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[runs - 1].as_secs_f64() * 1e3
    );
}
