//! Loader benchmark: generate a compose project of N services (default 500) and load it
//! repeatedly; print the median, min and max wall time and the CPU time of the loading
//! thread.
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
    let mut wall = Vec::with_capacity(runs);
    let mut cpu = Vec::with_capacity(runs);
    for _ in 0..runs {
        let c = cpu_time();
        let t = Instant::now();
        let p = load(&opts).expect("load");
        wall.push(t.elapsed().as_secs_f64() * 1e3);
        cpu.push(cpu_time() - c);
        assert!(p.services.len() >= n - n / 50);
    }
    wall.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    println!(
        "services={n} runs={runs} wall: median={:.2}ms min={:.2}ms max={:.2}ms; cpu: median={:.2}ms min={:.2}ms",
        wall[runs / 2],
        wall[0],
        wall[runs - 1],
        cpu[runs / 2],
        cpu[0]
    );
}

/// CPU time of this thread in milliseconds (wall time is noisy on a shared machine).
fn cpu_time() -> f64 {
    use nix::time::{ClockId, clock_gettime};
    clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).map_or(0.0, |t| {
        #[allow(clippy::cast_precision_loss)]
        let ms = t.tv_sec() as f64 * 1e3 + t.tv_nsec() as f64 / 1e6;
        ms
    })
}
