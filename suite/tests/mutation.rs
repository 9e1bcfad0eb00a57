//! A seeded mutation test of the readers (a fuzz test small enough for CI):
//! the PyTorch and safetensors fixtures and the language-model runs'
//! configs, mutated 10 000 times with a fixed seed, never make the reader
//! panic or hang; every mutant that loads has a self-similarity of 1
//! (within 1e-9) or a typed error, and every error is one line of bounded
//! length.
//!
//! Mutants are bit flips, byte overwrites with boundary values, 4- and
//! 8-byte integers overwritten with boundary values, truncations,
//! insertions, deleted and duplicated chunks; for `torch.save` archives the
//! same edits to one entry (`data.pkl` or a storage) repacked with valid
//! CRCs, so that the unpickler is reached; for YAML configs, deleted,
//! duplicated, swapped and re-indented lines and values replaced with
//! huge, negative and odd numbers. Each mutant has its own seed
//! (`SEED + index`), so a failure names the index that reproduces it.
//!
//! A second test sets every model key of the runs' configs to each of a
//! list of odd values in turn.
//!
//! Measured on the 2-core development machine in the test profile: 7 s
//! for the 10 000 mutants and the key sweep together (up to 30 s while
//! another build used both cores; the slowest mutant under 0.1 s); the
//! watchdog fails the test after 120 s. No mutant has found a panic, a
//! hang or a NaN (nor did 40 000 in a longer run).

mod common;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use common::files::{repack, zip_entries};
use rand::Rng;
use rand::rngs::StdRng;
use tensor_similarity::io::{self, LoadOptions};
use tensor_similarity::{RecursiveSimilarity, TensorSimilarity};

/// The seed of mutant `i` is `SEED + i`.
const SEED: u64 = 0x5eed_2026;

/// How many mutants: each fixture file and each run gets about as many.
const MUTANTS: usize = 10_000;

/// The whole loop's limit; a slower run fails (a hang, or a reader gone
/// quadratic).
const WATCHDOG: Duration = Duration::from_secs(120);

/// What a mutant is made from.
enum Fixture {
    /// A model file (`.pt` or `.safetensors`), read without a config.
    Model { name: String, bytes: Vec<u8> },
    /// A language-model run: its `config.yaml` and a checkpoint.
    Run {
        name: String,
        config: String,
        checkpoint: Vec<u8>,
    },
}

fn fixtures() -> Vec<Fixture> {
    let root = common::files::fixtures().join("torch");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("pt" | "safetensors")
            )
        })
        .collect();
    names.sort();
    let mut out: Vec<Fixture> = names
        .iter()
        .map(|p| Fixture::Model {
            name: p.file_name().unwrap().to_string_lossy().into_owned(),
            bytes: std::fs::read(p).unwrap(),
        })
        .collect();
    for run in ["tiny_lm", "tiny_lm_quadratic"] {
        let dir = root.join("runs").join(run);
        out.push(Fixture::Run {
            name: run.to_owned(),
            config: std::fs::read_to_string(dir.join("config.yaml")).unwrap(),
            checkpoint: std::fs::read(dir.join("checkpoints/step_100.pt")).unwrap(),
        });
    }
    assert!(out.len() >= 15, "the fixtures are found");
    out
}

/// Byte values at the edges of signed and unsigned ranges.
const BYTES: [u8; 6] = [0x00, 0xFF, 0x7F, 0x80, 0x01, 0xFE];

/// Integers at the edges (as 4- or 8-byte little-endian overwrites: the
/// lengths and offsets of zip records and safetensors headers).
const INTS: [u64; 9] = [
    0,
    1,
    0x7F,
    0xFFFF_FFFF,
    0x7FFF_FFFF,
    0x8000_0000,
    u64::MAX,
    i64::MAX as u64,
    1 << 40,
];

/// One to three byte-level edits of `bytes`, described in `log`.
fn mutate_bytes(rng: &mut StdRng, bytes: &mut Vec<u8>, log: &mut Vec<String>) {
    for _ in 0..rng.random_range(1..=3) {
        let len = bytes.len();
        let at = rng.random_range(0..=len);
        match rng.random_range(0..7) {
            0 if at < len => {
                let bit = rng.random_range(0..8);
                bytes[at] ^= 1 << bit;
                log.push(format!("flip bit {bit} at {at}"));
            }
            1 if at < len => {
                let b = BYTES[rng.random_range(0..BYTES.len())];
                bytes[at] = b;
                log.push(format!("byte {b:#04x} at {at}"));
            }
            2 => {
                let v = INTS[rng.random_range(0..INTS.len())];
                let width = if rng.random_bool(0.5) { 4 } else { 8 };
                let le = v.to_le_bytes();
                for (k, &b) in le[..width].iter().enumerate() {
                    if let Some(slot) = bytes.get_mut(at + k) {
                        *slot = b;
                    }
                }
                log.push(format!("{width}-byte {v:#x} at {at}"));
            }
            3 => {
                bytes.truncate(at);
                log.push(format!("truncate at {at}"));
            }
            4 => {
                let n = rng.random_range(1..=8);
                let new: Vec<u8> = (0..n).map(|_| rng.random()).collect();
                bytes.splice(at..at, new);
                log.push(format!("insert {n} bytes at {at}"));
            }
            5 if at < len => {
                let end = (at + rng.random_range(1..=64)).min(len);
                let chunk = bytes[at..end].to_vec();
                let to = rng.random_range(0..=len);
                bytes.splice(to..to, chunk);
                log.push(format!("duplicate {at}..{end} to {to}"));
            }
            6 if at < len => {
                let end = (at + rng.random_range(1..=64)).min(len);
                bytes.drain(at..end);
                log.push(format!("delete {at}..{end}"));
            }
            _ => {}
        }
    }
}

/// A model file mutated: byte edits of the file, or (for an archive, half
/// the time) of one entry, repacked so that its CRC holds and the edit
/// reaches the unpickler or the storage reader.
fn mutate_model(rng: &mut StdRng, bytes: &[u8], log: &mut Vec<String>) -> Vec<u8> {
    if rng.random_bool(0.5)
        && let Some(mut entries) = zip_entries(bytes)
    {
        // data.pkl most often: it is what the unpickler reads.
        let pkl = entries.iter().position(|(n, _)| n.ends_with("/data.pkl"));
        let i = match pkl {
            Some(p) if rng.random_bool(0.6) => p,
            _ => rng.random_range(0..entries.len()),
        };
        log.push(format!("entry {}:", entries[i].0));
        mutate_bytes(rng, &mut entries[i].1, log);
        if rng.random_bool(0.05) {
            entries.remove(rng.random_range(0..entries.len()));
            log.push("an entry removed".into());
        }
        return repack(&entries);
    }
    let mut out = bytes.to_vec();
    mutate_bytes(rng, &mut out, log);
    out
}

/// Values a config line may get: huge, negative, odd, YAML 1.1 specials.
const VALUES: [&str; 36] = [
    "0",
    "-1",
    "-16",
    "1",
    "2",
    "3",
    "4294967297",
    "99999999999999999999999",
    "0x7fffffffffffffff",
    "-0b1",
    "1e309",
    "1.0e+309",
    "1.0e+300",
    "1.0e-300",
    "-1.0e+300",
    ".nan",
    ".inf",
    "-.inf",
    "1:30",
    "01750",
    "09",
    "1e3",
    "yes",
    "off",
    "~",
    "",
    "[]",
    "{}",
    "[1, 2]",
    "&a 1",
    "*a",
    "!!int 12",
    "!!str x",
    "'quoted'",
    "<<",
    "=",
];

/// A config mutated by lines (or, a fifth of the time, by bytes).
fn mutate_config(rng: &mut StdRng, text: &str, log: &mut Vec<String>) -> Vec<u8> {
    if rng.random_bool(0.2) {
        let mut bytes = text.as_bytes().to_vec();
        mutate_bytes(rng, &mut bytes, log);
        return bytes;
    }
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for _ in 0..rng.random_range(1..=3) {
        if lines.is_empty() {
            break;
        }
        let i = rng.random_range(0..lines.len());
        match rng.random_range(0..6) {
            0 => {
                lines.remove(i);
                log.push(format!("delete line {i}"));
            }
            1 => {
                let line = lines[i].clone();
                lines.insert(i, line);
                log.push(format!("duplicate line {i}"));
            }
            2 => {
                let j = rng.random_range(0..lines.len());
                lines.swap(i, j);
                log.push(format!("swap lines {i} {j}"));
            }
            3 if rng.random_bool(0.5) => {
                lines[i].insert_str(0, "  ");
                log.push(format!("indent line {i}"));
            }
            3 => {
                lines[i] = lines[i].trim_start().to_owned();
                log.push(format!("dedent line {i}"));
            }
            _ => {
                // Values of the model section most of the time.
                let i = if rng.random_bool(0.8) && lines.len() > 2 {
                    rng.random_range(2..lines.len().min(15))
                } else {
                    i
                };
                if let Some((key, _)) = lines[i].clone().split_once(':') {
                    let v = VALUES[rng.random_range(0..VALUES.len())];
                    lines[i] = format!("{key}: {v}");
                    log.push(format!("line {i}: {key}: {v}"));
                }
            }
        }
    }
    (lines.join("\n") + "\n").into_bytes()
}

/// What went wrong with one mutant.
struct Failure {
    index: usize,
    what: String,
}

/// Mutant `index`: written into `dir`, loaded, compared with itself.
/// `Err` describes a panic or a non-finite similarity.
fn run_one(index: usize, fixtures: &[Fixture], dir: &Path) -> Result<bool, String> {
    let mut rng = common::rng(SEED + index as u64);
    let fixture = &fixtures[index % fixtures.len()];
    let mut log = Vec::new();
    let path = match fixture {
        Fixture::Model { name, bytes } => {
            // Three folders deep: a config is looked for up to two folders
            // up, which stay inside the temporary folder.
            let folder = dir.join("a/b/c");
            std::fs::create_dir_all(&folder).unwrap();
            let path = folder.join(name);
            log.push(name.clone());
            std::fs::write(&path, mutate_model(&mut rng, bytes, &mut log)).unwrap();
            path
        }
        Fixture::Run {
            name,
            config,
            checkpoint,
        } => {
            let run = dir.join("runs").join(name);
            std::fs::create_dir_all(run.join("checkpoints")).unwrap();
            let path = run.join("checkpoints/step_100.pt");
            log.push(name.clone());
            let (config, checkpoint) = if rng.random_bool(0.75) {
                (
                    mutate_config(&mut rng, config, &mut log),
                    checkpoint.clone(),
                )
            } else {
                log.push("checkpoint:".into());
                let c = mutate_model(&mut rng, checkpoint, &mut log);
                (config.clone().into_bytes(), c)
            };
            std::fs::write(run.join("config.yaml"), config).unwrap();
            std::fs::write(&path, checkpoint).unwrap();
            path
        }
    };
    check(&path).map_err(|what| format!("{what} [{}]", log.join("; ")))
}

/// Loads the file at `path` and compares the model with itself: `Ok(true)`
/// if it loaded, `Ok(false)` for a typed error of one bounded line, `Err`
/// describing a panic, a non-finite or wrong self-similarity, or an
/// unbounded error message.
fn check(path: &Path) -> Result<bool, String> {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        let file = match io::open(path, &LoadOptions::default()) {
            Ok(file) => file,
            Err(e) => {
                let message = e.to_string();
                let path_len = path.display().to_string().chars().count();
                return if message.contains('\n') || message.chars().count() > 2 * path_len + 600 {
                    Err(format!(
                        "an error message of {} characters or several lines: {:?}",
                        message.chars().count(),
                        message.chars().take(300).collect::<String>()
                    ))
                } else {
                    Ok(false)
                };
            }
        };
        let metric = TensorSimilarity::new().with_context(2).unwrap();
        match metric.similarity(&file.model, &file.model) {
            // A model's cosine with itself.
            Ok(s) if !s.is_finite() || (s - 1.0).abs() > 1e-9 => {
                Err(format!("self-similarity {s}"))
            }
            Ok(_) | Err(_) => Ok(true),
        }
    }));
    match outcome {
        Ok(result) => result,
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            Err(format!("panic: {message}"))
        }
    }
}

/// Every model key of each run's config set to each of [`VALUES`] in
/// turn: the systematic counterpart of the random line edits.
#[test]
fn every_model_key_with_every_odd_value_loads_or_is_refused() {
    let fixtures = fixtures();
    let dir = tempfile::tempdir().unwrap();
    let mut failures = Vec::new();
    let mut loaded = 0;
    for fixture in &fixtures {
        let Fixture::Run {
            name,
            config,
            checkpoint,
        } = fixture
        else {
            continue;
        };
        let run = dir.path().join("runs").join(name);
        std::fs::create_dir_all(run.join("checkpoints")).unwrap();
        let path = run.join("checkpoints/step_100.pt");
        std::fs::write(&path, checkpoint).unwrap();
        let lines: Vec<&str> = config.lines().collect();
        let model = lines.iter().position(|l| *l == "model:").unwrap();
        for (i, line) in lines.iter().enumerate().skip(model + 1) {
            let Some((key, _)) = line.split_once(':') else {
                continue;
            };
            if !key.starts_with("  ") {
                break;
            }
            for value in VALUES {
                let mut edited = lines.clone();
                let new = format!("{key}: {value}");
                edited[i] = &new;
                std::fs::write(run.join("config.yaml"), edited.join("\n") + "\n").unwrap();
                match check(&path) {
                    Ok(l) => loaded += usize::from(l),
                    Err(what) => failures.push(format!("{name}, {}: {what}", new.trim())),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(loaded > 50, "only {loaded} loaded");
}

#[test]
fn mutated_files_and_configs_never_panic_hang_or_give_nan() {
    let fixtures = Arc::new(fixtures());
    let current = Arc::new(AtomicUsize::new(0));
    let (send, receive) = mpsc::channel();
    let worker = {
        let (fixtures, current) = (Arc::clone(&fixtures), Arc::clone(&current));
        std::thread::spawn(move || {
            let dir = tempfile::tempdir().unwrap();
            let mut failures = Vec::new();
            let (mut loaded, mut slowest) = (0, (Duration::ZERO, 0));
            let start = Instant::now();
            for index in 0..MUTANTS {
                current.store(index, Ordering::Relaxed);
                let t = Instant::now();
                match run_one(index, &fixtures, dir.path()) {
                    Ok(l) => loaded += usize::from(l),
                    Err(what) => failures.push(Failure { index, what }),
                }
                slowest = slowest.max((t.elapsed(), index));
            }
            let _ = send.send((failures, loaded, slowest, start.elapsed()));
        })
    };
    let Ok((failures, loaded, slowest, total)) = receive.recv_timeout(WATCHDOG) else {
        panic!(
            "the mutants took over {WATCHDOG:?}: mutant {} (seed SEED + {0}) is running, \
             and may hang",
            current.load(Ordering::Relaxed)
        );
    };
    worker.join().unwrap();
    eprintln!(
        "{MUTANTS} mutants in {total:.1?}, {loaded} loaded; the slowest, #{}, took {:.1?}",
        slowest.1, slowest.0
    );
    let report: Vec<String> = failures
        .iter()
        .take(20)
        .map(|f| format!("mutant {}: {}", f.index, f.what))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {MUTANTS} mutants failed:\n{}",
        failures.len(),
        report.join("\n")
    );
    // The mutants reach past the first checks: some load.
    assert!(loaded > MUTANTS / 20, "only {loaded} mutants loaded");
}
