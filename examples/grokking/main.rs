//! Grokking, end to end (temporary driver).

mod train;

use std::time::Instant;
use train::{Config, Split};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str, d: f64| -> f64 {
        args.iter().position(|a| a == k).map_or(d, |i| args[i + 1].parse().unwrap())
    };
    let cfg = Config {
        learning_rate: get("--lr", 1e-3),
        weight_decay: get("--wd", 1.0),
        steps: get("--steps", 3000.0) as usize,
        init_gain: get("--gain", 1.0),
        seed: get("--seed", 0.0) as u64,
        ..Config::default()
    };
    let every = get("--every", 100.0) as usize;
    let split = Split::new(cfg.p, cfg.train_fraction, cfg.seed);
    let t0 = Instant::now();
    train::train(&cfg, &split, |s, p| {
        if s % every == 0 {
            let c = train::measure(s, p, &split);
            println!(
                "{:6} {:7.1}s train {:.4} {:.3} test {:.4} {:.3} |w| {:.2}",
                s,
                t0.elapsed().as_secs_f64(),
                c.train.loss,
                c.train.accuracy,
                c.test.loss,
                c.test.accuracy,
                c.weight_norm
            );
        }
    });
}
