//! PyTorch `torch.save` files: the fixtures real PyTorch wrote
//! (tests/files/torch/, see its README.md) load exactly as their
//! safetensors twins; wrappers are reported; whole modules, legacy files and
//! every hand-made hostile pickle or archive give a typed error, run no
//! code and allocate nothing the file merely claims; random and mutated
//! files never panic.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

mod common;

use common::files::{load_error, logits_case, one_hot, repack, write, zip_entries};
use nalgebra::DVector;
use proptest::prelude::*;
use tensor_similarity::io::{self, Dtype, FileError, LoadOptions, ModelFile};
use tensor_similarity::{Error, Model, similarity};

// --- the largest single allocation, per thread ------------------------------

/// The system allocator, noting the largest request made on each thread.
struct Peak;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = LARGEST.try_with(|p| p.set(p.get().max(size)));
}

// SAFETY: every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for Peak {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Peak = Peak;

/// `f()` and the largest single allocation it made on this thread.
fn largest_allocation<R>(f: impl FnOnce() -> R) -> (R, usize) {
    LARGEST.with(|p| p.set(0));
    let r = f();
    (r, LARGEST.with(Cell::get))
}

// --- fixtures ---------------------------------------------------------------

fn fixture(name: &str) -> PathBuf {
    common::files::fixtures().join("torch").join(name)
}

fn open(path: &Path) -> ModelFile {
    io::open(path, &LoadOptions::default()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A few inputs of the model's width.
fn inputs(model: &Model<f64>) -> Vec<DVector<f64>> {
    let n = model.input_width();
    (0..4)
        .map(|k| {
            DVector::from_fn(n, |i, _| {
                ((i + 1) as f64 * 0.37 + k as f64 * 1.3).sin() * 2.0
            })
        })
        .collect()
}

/// The two models compute the same function bit for bit, and their
/// similarity is 1.
fn assert_same_model(a: &Model<f64>, b: &Model<f64>, what: &str) {
    for x in inputs(a) {
        let (ya, yb) = (a.forward(&x).unwrap(), b.forward(&x).unwrap());
        let bits = |y: &DVector<f64>| y.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&ya), bits(&yb), "{what}: forward differs at {x:?}");
    }
    let s = similarity(a, b).unwrap();
    assert!((s - 1.0).abs() < 1e-12, "{what}: similarity {s}");
}

/// Every `.pt` fixture with the safetensors file holding the same tensors.
const TWINS: [(&str, &str, Dtype); 7] = [
    ("ebh_f32.pt", "ebh_f32.safetensors", Dtype::F32),
    ("ebh_f64.pt", "ebh_f64.safetensors", Dtype::F64),
    ("ebh_f16.pt", "ebh_f16.safetensors", Dtype::F16),
    ("ebh_bf16.pt", "ebh_bf16.safetensors", Dtype::BF16),
    ("views.pt", "views.safetensors", Dtype::F32),
    ("cuda_tagged.pt", "ebh_f32.safetensors", Dtype::F32),
    ("ebh_wrapped.pt", "ebh_f32.safetensors", Dtype::F32),
];

#[test]
fn torch_files_equal_their_safetensors_twins() {
    for (pt, st, dtype) in TWINS {
        let (a, b) = (open(&fixture(pt)), open(&fixture(st)));
        assert_eq!(a.layout, io::Layout::EmbedBodyHead, "{pt}");
        assert_eq!(a.layout, b.layout, "{pt}");
        // Same tensors, roles, dtypes and shapes.
        assert_eq!(a.tensors, b.tensors, "{pt}");
        assert!(a.tensors.iter().all(|t| t.dtype == dtype), "{pt}");
        assert_same_model(&a.model, &b.model, pt);
        assert!(b.checkpoint.is_none(), "{st}");
        let source = a.checkpoint.expect(pt);
        if pt != "ebh_wrapped.pt" {
            assert_eq!(source.key, None, "{pt}");
            assert_eq!(source.step, None, "{pt}");
            assert!(source.ignored.is_empty(), "{pt}");
        }
    }
    // views.pt: two body blocks, with tied and strided tensors among them.
    let views = open(&fixture("views.pt"));
    assert_eq!(views.model.blocks().len(), 4);
}

#[test]
fn a_checkpoint_wrapper_reports_its_key_and_step() {
    let file = open(&fixture("ebh_wrapped.pt"));
    let source = file.checkpoint.unwrap();
    assert_eq!(source.key.as_deref(), Some("model_state_dict"));
    assert_eq!(source.step, Some(1200));
    assert_eq!(
        source.ignored,
        ["config", "optimizer_state_dict", "step"].map(String::from)
    );
    // load_as goes through the same reader.
    let f32_model = io::load_as::<f32>(fixture("ebh_wrapped.pt"), &LoadOptions::default());
    assert!(f32_model.is_ok());
}

/// The research group's runs as they keep them (`runs/NAME/config.yaml`
/// beside `checkpoints/step_N.pt`, CUDA-free here, wrapped with an
/// optimizer and a step): read with the run's rotary base and additive
/// residual, they give the logits of the independent forward pass in
/// `make_fixtures.py` (`expected.json`), computed by PyTorch.
#[test]
fn language_model_runs_are_read_as_pytorch_computes() {
    for run in ["tiny_lm", "tiny_lm_quadratic"] {
        let dir = fixture(&format!("runs/{run}"));
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        let ckpt = dir.join(expected["checkpoint"].as_str().unwrap());
        let f = open(&ckpt);
        assert_eq!(f.layout, io::Layout::AttentionLm, "{run}");
        assert_eq!(f.config.as_deref(), Some(&*dir.join("config.yaml")));
        assert_eq!(f.native_context, Some(16));
        assert_counter_absent(&f.assumptions);
        let source = f.checkpoint.as_ref().unwrap();
        assert_eq!(source.key.as_deref(), Some("model"));
        assert_eq!(source.step, Some(100));
        let vocab = f.model.input_width();
        for case in expected["sequences"].as_array().unwrap() {
            let (tokens, want) = logits_case(case, vocab);
            let got = f.model.forward_sequence(&one_hot(&tokens, vocab)).unwrap();
            // Both f64 from the same f32 weights, summed in other orders.
            let err = (&got - &want).amax() / want.amax();
            assert!(err < 1e-12, "{run} {tokens:?}: {err:e}");
        }
    }
    // The earlier checkpoint of the run is another model.
    let early = io::load(fixture("runs/tiny_lm/checkpoints/step_20.pt")).unwrap();
    let late = io::load(fixture("runs/tiny_lm/checkpoints/step_100.pt")).unwrap();
    let s = tensor_similarity::TensorSimilarity::new()
        .with_context(3)
        .unwrap();
    use tensor_similarity::RecursiveSimilarity;
    let sim = s.similarity(&early, &late).unwrap();
    assert!(sim < 1.0 - 1e-6 && sim > -1.0, "{sim}");
}

#[test]
fn legacy_files_are_refused_with_what_to_do() {
    let e = load_error(&fixture("legacy.pt"));
    assert!(matches!(e, FileError::LegacyTorch), "{e}");
    assert!(e.to_string().contains("1.6"), "{e}");
}

/// The file `whole_module.pt`'s class writes when its pickle is run (see
/// make_fixtures.py).
fn marker() -> PathBuf {
    std::env::temp_dir().join("tensor_similarity_whole_module.marker")
}

#[test]
fn whole_modules_are_refused_and_never_run() {
    let _ = std::fs::remove_file(marker());
    let e = load_error(&fixture("whole_module.pt"));
    match &e {
        FileError::Pickle { offset, reason } => {
            assert!(reason.contains("__main__.Net"), "{reason}");
            assert!(
                reason.contains("torch.save(model.state_dict(), path)"),
                "{reason}"
            );
            assert!(*offset > 0);
        }
        other => panic!("{other}"),
    }
    assert!(e.to_string().contains("data.pkl at byte"), "{e}");
    assert!(!marker().exists(), "code from the pickle ran");
}

#[test]
fn integer_tensors_are_reported_not_dropped() {
    match load_error(&fixture("with_int.pt")) {
        FileError::UnusedTensor { tensor, .. } => assert_eq!(tensor, "norm.num_batches_tracked"),
        e => panic!("{e}"),
    }
}

#[test]
fn truncated_archives_say_so() {
    let good = std::fs::read(fixture("ebh_f32.pt")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for cut in [4, 30, 100, good.len() / 2, good.len() - 30, good.len() - 1] {
        let p = write(dir.path(), "cut.pt", &good[..cut]);
        match load_error(&p) {
            FileError::Archive { reason } => assert!(reason.contains("truncated"), "{reason}"),
            e => panic!("cut at {cut}: {e}"),
        }
    }
}

// --- hand-made pickles and archives ------------------------------------------

fn unicode(s: &str) -> Vec<u8> {
    let mut out = vec![b'X'];
    out.extend_from_slice(&u32::try_from(s.len()).unwrap().to_le_bytes());
    out.extend_from_slice(s.as_bytes());
    out
}

/// Any `i64`, as LONG1 with 8 bytes.
fn int(i: i64) -> Vec<u8> {
    let mut out = vec![0x8a, 8];
    out.extend_from_slice(&i.to_le_bytes());
    out
}

fn global(module: &str, name: &str) -> Vec<u8> {
    format!("c{module}\n{name}\n").into_bytes()
}

/// `(items…)` with MARK … TUPLE.
fn tuple(items: &[Vec<u8>]) -> Vec<u8> {
    let mut out = vec![b'('];
    for i in items {
        out.extend_from_slice(i);
    }
    out.push(b't');
    out
}

/// `_rebuild_tensor_v2(('storage', torch.{class}, key, location, numel),
/// offset, size, stride, False, OrderedDict())`, as torch writes it.
fn tensor(
    class: &str,
    key: &str,
    numel: i64,
    offset: i64,
    size: &[i64],
    stride: &[i64],
) -> Vec<u8> {
    let pid = tuple(&[
        unicode("storage"),
        global("torch", class),
        unicode(key),
        unicode("cuda:0"),
        int(numel),
    ]);
    let mut storage = pid;
    storage.push(b'Q');
    let ints = |v: &[i64]| tuple(&v.iter().map(|&i| int(i)).collect::<Vec<_>>());
    let mut hooks = global("collections", "OrderedDict");
    hooks.extend_from_slice(b")R");
    let args = tuple(&[
        storage,
        int(offset),
        ints(size),
        ints(stride),
        vec![0x89],
        hooks,
    ]);
    let mut out = global("torch._utils", "_rebuild_tensor_v2");
    out.extend_from_slice(&args);
    out.push(b'R');
    out
}

/// `{key: value, …}` with EMPTY_DICT MARK … SETITEMS.
fn dict(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = b"}(".to_vec();
    for (k, v) in entries {
        out.extend_from_slice(&unicode(k));
        out.extend_from_slice(v);
    }
    out.push(b'u');
    out
}

/// A protocol-2 pickle of `body`.
fn pickle(body: &[u8]) -> Vec<u8> {
    [&[0x80, 2][..], body, b"."].concat()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A `torch.save`-shaped archive: `archive/data.pkl`, `archive/byteorder`,
/// `archive/data/{key}` and `archive/version`, stored uncompressed.
fn archive(pkl: &[u8], storages: &[(&str, Vec<u8>)], byteorder: Option<&str>) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let mut entry = |name: &str, bytes: &[u8]| {
        zip.start_file(format!("archive/{name}"), options).unwrap();
        zip.write_all(bytes).unwrap();
    };
    entry("data.pkl", pkl);
    if let Some(order) = byteorder {
        entry("byteorder", order.as_bytes());
    }
    for (key, bytes) in storages {
        entry(&format!("data/{key}"), bytes);
    }
    entry("version", b"3\n");
    zip.finish().unwrap().into_inner()
}

/// The storages of a valid bi_linear/projection state_dict: `0` holds the
/// fused `[L; R]` (4×3), `1` the projection (1×2).
fn storages() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "0",
            f32_bytes(&[
                1.0, 0.5, -1.0, 2.0, 0.25, 1.0, 3.0, -0.5, 0.75, -2.0, 1.5, 0.125,
            ]),
        ),
        ("1", f32_bytes(&[1.0, -1.0])),
    ]
}

/// A valid state_dict on [`storages`].
fn good_state_dict() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        (
            "bi_linear.weight",
            tensor("FloatStorage", "0", 12, 0, &[4, 3], &[3, 1]),
        ),
        (
            "projection.weight",
            tensor("FloatStorage", "1", 2, 0, &[1, 2], &[2, 1]),
        ),
    ]
}

fn good_archive() -> Vec<u8> {
    archive(
        &pickle(&dict(&good_state_dict())),
        &storages(),
        Some("little"),
    )
}

/// The error of loading `bytes` as a file, and the largest allocation made.
fn error_of(bytes: &[u8]) -> (FileError, usize) {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "x.pt", bytes);
    largest_allocation(|| load_error(&p))
}

fn pickle_error(bytes: &[u8]) -> (u64, String) {
    match error_of(bytes).0 {
        FileError::Pickle { offset, reason } => (offset, reason),
        e => panic!("{e}"),
    }
}

/// The pickle error of a data.pkl holding `body`.
fn pickle_error_in(body: &[u8]) -> (u64, String) {
    pickle_error(&archive(&pickle(body), &storages(), Some("little")))
}

#[test]
fn a_hand_made_archive_loads() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "good.pt", &good_archive());
    let file = open(&p);
    assert_eq!(file.layout, io::Layout::BiLinearProjection);
    // The same weights, transposed in the file: strides (1, 4) on a 3×4
    // storage read as the 4×3 matrix above.
    let transposed = f32_bytes(&[
        1.0, 2.0, 3.0, -2.0, 0.5, 0.25, -0.5, 1.5, -1.0, 1.0, 0.75, 0.125,
    ]);
    let sd = dict(&[
        (
            "bi_linear.weight",
            tensor("FloatStorage", "0", 12, 0, &[4, 3], &[1, 4]),
        ),
        (
            "projection.weight",
            tensor("FloatStorage", "1", 2, 0, &[1, 2], &[2, 1]),
        ),
    ]);
    let storages = vec![("0", transposed), ("1", f32_bytes(&[1.0, -1.0]))];
    let q = write(dir.path(), "t.pt", &archive(&pickle(&sd), &storages, None));
    assert_same_model(&file.model, &open(&q).model, "transposed view");
    // And with an offset into a longer, shared storage (`1` lives at 12..14).
    let mut shared = storages_flat();
    shared.extend_from_slice(&f32_bytes(&[9.0]));
    let sd = dict(&[
        (
            "bi_linear.weight",
            tensor("FloatStorage", "s", 15, 0, &[4, 3], &[3, 1]),
        ),
        (
            "projection.weight",
            tensor("FloatStorage", "s", 15, 12, &[1, 2], &[7, 1]),
        ),
    ]);
    let r = write(
        dir.path(),
        "s.pt",
        &archive(&pickle(&sd), &[("s", shared)], None),
    );
    assert_same_model(&file.model, &open(&r).model, "offset view");
}

/// Both storages of [`storages`] end to end, plus nothing.
fn storages_flat() -> Vec<u8> {
    storages().into_iter().flat_map(|(_, b)| b).collect()
}

#[test]
fn globals_outside_the_allowlist_are_refused_by_name() {
    // builtins.eval("…") through REDUCE: refused at the GLOBAL.
    let mut body = global("builtins", "eval");
    body.extend_from_slice(&tuple(&[unicode("__import__('os').system('true')")]));
    body.push(b'R');
    let (offset, reason) = pickle_error_in(&body);
    assert_eq!(offset, 2);
    assert!(reason.contains("builtins.eval"), "{reason}");
    assert!(
        reason.contains("torch.save(model.state_dict(), path)"),
        "{reason}"
    );
    // os.system via REDUCE, by GLOBAL and by STACK_GLOBAL (protocol 4).
    let marker = std::env::temp_dir().join("tensor_similarity_os_system.marker");
    let _ = std::fs::remove_file(&marker);
    let command = format!("touch {}", marker.display());
    for body in [
        [
            global("os", "system"),
            tuple(&[unicode(&command)]),
            b"R".to_vec(),
        ]
        .concat(),
        [
            vec![0x8c, 2],
            b"os".to_vec(),
            vec![0x8c, 6],
            b"system".to_vec(),
            vec![0x93],
            tuple(&[unicode(&command)]),
            b"R".to_vec(),
        ]
        .concat(),
        [
            global("posix", "system"),
            tuple(&[unicode(&command)]),
            b"R".to_vec(),
        ]
        .concat(),
        [
            global("numpy.core.multiarray", "_reconstruct"),
            b")R".to_vec(),
        ]
        .concat(),
    ] {
        let (offset, reason) = pickle_error_in(&body);
        // At the GLOBAL, or at the STACK_GLOBAL after its two strings.
        assert!(offset == 2 || offset == 14, "{offset}: {reason}");
        assert!(
            reason.contains(".system") || reason.contains("_reconstruct"),
            "{reason}"
        );
    }
    assert!(!marker.exists(), "os.system ran");
    // An allowed global called with other arguments, and REDUCE of a value
    // that is no callable.
    let (_, reason) = pickle_error_in(
        &[
            global("collections", "OrderedDict"),
            tuple(&[b"]".to_vec()]),
            b"R".to_vec(),
        ]
        .concat(),
    );
    assert!(
        reason.contains("REDUCE of collections.OrderedDict"),
        "{reason}"
    );
    let (_, reason) = pickle_error_in(b"})R");
    assert!(reason.contains("REDUCE calls a dict"), "{reason}");
    // A storage class outside the dtypes read.
    let (_, reason) = pickle_error_in(&tensor("ComplexFloatStorage", "0", 1, 0, &[1], &[1]));
    assert!(reason.contains("torch.ComplexFloatStorage"), "{reason}");
}

#[test]
fn malformed_pickles_are_located() {
    // An unknown byte, and a real opcode that builds objects.
    let (offset, reason) = pickle_error_in(b"N\xff");
    assert_eq!(offset, 3);
    assert!(reason.contains("0xff"), "{reason}");
    let (_, reason) =
        pickle_error_in(&[global("collections", "OrderedDict"), b")\x81".to_vec()].concat());
    assert!(reason.contains("NEWOBJ"), "{reason}");
    // A memo index never set.
    let (_, reason) = pickle_error_in(b"Nq\x00h\x09");
    assert!(reason.contains("memo index 9"), "{reason}");
    let (_, reason) = pickle_error_in(b"j\xff\xff\xff\xff");
    assert!(reason.contains("memo index 4294967295"), "{reason}");
    // Lengths beyond the pickle: BINUNICODE, BINUNICODE8, BINBYTES, FRAME.
    for body in [
        &b"X\xff\xff\xff\x7fabc"[..],
        b"\x8d\xff\xff\xff\xff\xff\xff\xff\x7fabc",
        b"B\x00\x00\x00\x10abc",
        b"\x95\xff\xff\xff\xff\xff\xff\xff\xff",
    ] {
        let (e, largest) = error_of(&archive(&pickle(body), &storages(), None));
        match e {
            FileError::Pickle { reason, .. } => assert!(reason.contains("remain"), "{reason}"),
            e => panic!("{e}"),
        }
        assert!(largest < 1 << 20, "allocated {largest} bytes");
    }
    // Nesting: tuples in tuples, and lists appended into lists.
    let mut deep = vec![b']'];
    deep.extend(std::iter::repeat_n(0x85, 500));
    let (_, reason) = pickle_error_in(&deep);
    assert!(reason.contains("nested deeper"), "{reason}");
    let mut deep = vec![b']'; 500];
    deep.extend(std::iter::repeat_n(b'a', 499));
    let (_, reason) = pickle_error_in(&deep);
    assert!(reason.contains("nested deeper"), "{reason}");
    // Structure: stack underflow, a MARK never closed, no STOP.
    let (_, reason) = pickle_error_in(b"s");
    assert!(reason.contains("empty stack"), "{reason}");
    let (_, reason) = pickle_error(&archive(b"\x80\x02(N", &storages(), None));
    assert!(reason.contains("without STOP"), "{reason}");
}

/// A tensor view on a storage of `numel` floats, and what its error says.
struct BadView {
    what: &'static str,
    numel: i64,
    offset: i64,
    size: &'static [i64],
    stride: &'static [i64],
    expected: &'static str,
}

#[test]
fn views_must_lie_inside_their_storages() {
    let bad = |what, numel, offset, size, stride, expected| BadView {
        what,
        numel,
        offset,
        size,
        stride,
        expected,
    };
    let views = [
        // Element 1 + (1·2 + 1·1) = 4 of a 4-element storage.
        bad(
            "past the end",
            4,
            1,
            &[2, 2],
            &[2, 1],
            "reaches past the end",
        ),
        bad(
            "too many elements",
            12,
            0,
            &[13],
            &[1],
            "views a storage of only",
        ),
        bad("negative stride", 12, 0, &[4, 3], &[3, -1], "negative"),
        bad("negative size", 12, 0, &[-4, 3], &[3, 1], "negative"),
        bad("negative offset", 12, -1, &[4, 3], &[3, 1], "negative"),
        bad(
            "overflowing size",
            12,
            0,
            &[1 << 62, 1 << 62],
            &[1, 1],
            "overflows",
        ),
        bad(
            "huge stride",
            12,
            0,
            &[2, 2],
            &[i64::MAX, i64::MAX],
            "past the end",
        ),
        bad(
            "overflowing stride",
            12,
            0,
            &[3, 3],
            &[i64::MAX, i64::MAX],
            "past the end",
        ),
    ];
    for v in views {
        let t = tensor("FloatStorage", "0", v.numel, v.offset, v.size, v.stride);
        let sd = dict(&[("bi_linear.weight", t)]);
        let storage = vec![(
            "0",
            f32_bytes(&vec![1.0; usize::try_from(v.numel).unwrap()]),
        )];
        let (e, largest) = error_of(&archive(&pickle(&sd), &storage, None));
        match e {
            FileError::Pickle { reason, .. } => {
                assert!(reason.contains(v.expected), "{}: {reason}", v.what)
            }
            e => panic!("{}: {e}", v.what),
        }
        assert!(largest < 1 << 20, "{}: allocated {largest} bytes", v.what);
    }
}

#[test]
fn storages_must_match_their_entries() {
    // The pid declares 2⁴⁰ floats; the entry holds 12.
    let mut sd = good_state_dict();
    sd[0].1 = tensor("FloatStorage", "0", 1 << 40, 0, &[4, 3], &[3, 1]);
    let (e, largest) = error_of(&archive(&pickle(&dict(&sd)), &storages(), None));
    match e {
        FileError::Archive { reason } => {
            assert!(
                reason.contains("1099511627776 elements") && reason.contains("48 bytes"),
                "{reason}"
            )
        }
        e => panic!("{e}"),
    }
    assert!(largest < 1 << 20, "allocated {largest} bytes");
    // One element short, and a missing entry.
    let mut short = storages();
    short[0].1.truncate(44);
    match error_of(&archive(&pickle(&dict(&good_state_dict())), &short, None)).0 {
        FileError::Archive { reason } => assert!(reason.contains("44 bytes"), "{reason}"),
        e => panic!("{e}"),
    }
    match error_of(&archive(
        &pickle(&dict(&good_state_dict())),
        &storages()[..1],
        None,
    ))
    .0
    {
        FileError::Archive { reason } => assert!(reason.contains("missing"), "{reason}"),
        e => panic!("{e}"),
    }
    // A byte changed in a storage: the zip CRC catches it.
    let mut bytes = good_archive();
    let at = bytes
        .windows(8)
        .position(|w| w == f32_bytes(&[1.0, 0.5]).as_slice())
        .unwrap();
    bytes[at] ^= 1;
    match error_of(&bytes).0 {
        FileError::Archive { reason } => assert!(reason.contains("cannot be read"), "{reason}"),
        e => panic!("{e}"),
    }
}

#[test]
fn byteorder_must_be_little() {
    let sd = pickle(&dict(&good_state_dict()));
    match error_of(&archive(&sd, &storages(), Some("big"))).0 {
        FileError::Archive { reason } => assert!(reason.contains("big-endian"), "{reason}"),
        e => panic!("{e}"),
    }
    match error_of(&archive(&sd, &storages(), Some("middle"))).0 {
        FileError::Archive { reason } => assert!(reason.contains("byteorder"), "{reason}"),
        e => panic!("{e}"),
    }
}

#[test]
fn archives_need_one_data_pkl() {
    let mut zip = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    zip.start_file("readme.txt", options).unwrap();
    zip.write_all(b"hello").unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    match error_of(&bytes).0 {
        FileError::Archive { reason } => assert!(reason.contains("data.pkl"), "{reason}"),
        e => panic!("{e}"),
    }
}

#[test]
fn declared_entry_sizes_are_checked_before_reading() {
    // data.pkl's sizes in the central directory and local header raised to
    // almost 4 GiB: refused on the archive's length, nothing allocated.
    let mut bytes = good_archive();
    let name = b"archive/data.pkl";
    for (sig, sizes) in [(b"PK\x01\x02", 20), (b"PK\x03\x04", 18)] {
        let at = bytes
            .windows(4)
            .enumerate()
            .filter(|(_, w)| w == sig)
            .map(|(i, _)| i)
            .find(|&i| {
                let off = if sig == b"PK\x01\x02" { 46 } else { 30 };
                bytes[i + off..].starts_with(name)
            })
            .unwrap();
        bytes[at + sizes..at + sizes + 8]
            .copy_from_slice(&[0xf0, 0xff, 0xff, 0xff, 0xf0, 0xff, 0xff, 0xff]);
    }
    let (e, largest) = error_of(&bytes);
    assert!(
        matches!(
            e,
            FileError::Truncated {
                what: "zip entry",
                ..
            } | FileError::Archive { .. }
        ),
        "{e}"
    );
    assert!(largest < 1 << 20, "allocated {largest} bytes");
}

#[test]
fn the_state_dict_is_found_or_the_keys_are_named() {
    let sd = dict(&good_state_dict());
    let load = |body: Vec<u8>| -> Result<ModelFile, FileError> {
        let dir = tempfile::tempdir().unwrap();
        let p = write(
            dir.path(),
            "w.pt",
            &archive(&pickle(&body), &storages(), None),
        );
        io::open(&p, &LoadOptions::default()).map_err(|e| match e {
            Error::File { source, .. } => source,
            e => panic!("{e}"),
        })
    };
    let reason = |r: Result<ModelFile, FileError>| match r {
        Err(FileError::StateDict { reason }) => reason,
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("loaded"),
    };
    // Under each wrapper key, with the step and the other keys reported.
    for key in [
        "model_state_dict",
        "state_dict",
        "model",
        "module",
        "net",
        "weights",
    ] {
        let f = load(dict(&[
            (
                "optimizer",
                dict(&[("lr", b"G?PbM\xd2\xf1\xa9\xfc".to_vec())]),
            ),
            (key, sd.clone()),
            ("step", int(77)),
            ("epoch", int(3)),
        ]))
        .unwrap();
        let c = f.checkpoint.unwrap();
        assert_eq!(c.key.as_deref(), Some(key));
        assert_eq!(c.step, Some(77));
        assert_eq!(c.ignored, ["epoch", "optimizer", "step"].map(String::from));
    }
    // Two candidates: never guess.
    let r = reason(load(dict(&[
        ("model", sd.clone()),
        ("state_dict", sd.clone()),
    ])));
    assert!(
        r.contains("\"state_dict\"") && r.contains("\"model\""),
        "{r}"
    );
    // None: the top-level keys are named.
    let r = reason(load(dict(&[("optimizer", dict(&[])), ("step", int(1))])));
    assert!(r.contains("\"optimizer\", \"step\""), "{r}");
    // A wrapper key holding something else says so.
    let r = reason(load(dict(&[
        ("model", unicode("resnet")),
        ("step", int(1)),
    ])));
    assert!(r.contains("\"model\" holds the string \"resnet\""), "{r}");
    // Nested state_dicts, under a key and at the top.
    let r = reason(load(dict(&[("model", dict(&[("encoder", sd.clone())]))])));
    assert!(r.contains("nested") && r.contains("encoder"), "{r}");
    let mut nested = good_state_dict();
    nested.push(("sub", sd.clone()));
    let r = reason(load(dict(&nested)));
    assert!(r.contains("nested") && r.contains("sub"), "{r}");
    // Not a dict.
    let r = reason(load(tensor("FloatStorage", "1", 2, 0, &[2], &[1])));
    assert!(r.contains("holds a tensor"), "{r}");
    let r = reason(load(b"]".to_vec()));
    assert!(r.contains("holds a list"), "{r}");
}

#[test]
fn plain_values_are_decoded() {
    // A top level that is not a dict is named in the error, which shows how
    // each opcode's value was read.
    for (body, shown) in [
        (&b"\x8a\x02\x00\x80"[..], "the int -32768"),
        (b"\x8a\x02\x10\x27", "the int 10000"),
        (b"\x8a\x00", "the int 0"),
        (
            b"\x8a\x09\x01\x01\x01\x01\x01\x01\x01\x01\x01",
            "a large int",
        ),
        (b"J\xfe\xff\xff\xff", "the int -2"),
        (b"M\x2c\x01", "the int 300"),
        (b"I-5\n", "the int -5"),
        (b"I01\n", "the bool True"),
        (b"\x89", "the bool False"),
        (b"G?\xf8\x00\x00\x00\x00\x00\x00", "the float 1.5"),
        (b"\x8c\x03abc", "the string \"abc\""),
        (b"U\x02\xe9t", "the string \"\u{e9}t\""),
        (b"C\x02hi", "a bytes object"),
        (b"N\x85", "a tuple"),
        (b"N\x94\x8c\x01xh\x00\x86\x8c\x01k\x93", "the global"),
        (
            b"\x8c\x05torch\x8c\x07float32\x93",
            "the global torch.float32",
        ),
    ] {
        let (e, _) = error_of(&archive(&pickle(body), &storages(), None));
        match e {
            FileError::StateDict { reason } => assert!(reason.contains(shown), "{shown}: {reason}"),
            FileError::Pickle { reason, .. } if shown == "the global" => {
                assert!(reason.contains("STACK_GLOBAL"), "{reason}")
            }
            e => panic!("{shown}: {e}"),
        }
    }
}

#[test]
fn non_weights_and_bad_values_in_hand_made_files() {
    let dir = tempfile::tempdir().unwrap();
    // An integer tensor the layout names is a dtype error.
    let sd = dict(&[
        (
            "bi_linear.weight",
            tensor("FloatStorage", "0", 12, 0, &[4, 3], &[3, 1]),
        ),
        (
            "projection.weight",
            tensor("LongStorage", "2", 2, 0, &[1, 2], &[2, 1]),
        ),
    ]);
    let mut st = storages();
    st.push(("2", vec![0; 16]));
    let p = write(dir.path(), "i.pt", &archive(&pickle(&sd), &st, None));
    match load_error(&p) {
        FileError::Dtype { tensor, dtype } => {
            assert_eq!(tensor, "projection.weight");
            assert_eq!(dtype, "I64");
        }
        e => panic!("{e}"),
    }
    // NaN in a weight is located.
    let mut st = storages();
    st[0].1[20..24].copy_from_slice(&f32::NAN.to_le_bytes());
    let p = write(
        dir.path(),
        "n.pt",
        &archive(&pickle(&dict(&good_state_dict())), &st, None),
    );
    match load_error(&p) {
        FileError::NonFinite { tensor, index, .. } => {
            assert_eq!(tensor, "bi_linear.weight");
            assert_eq!(index, 5);
        }
        e => panic!("{e}"),
    }
}

// --- fuzzing -----------------------------------------------------------------

const FUZZED: [&str; 6] = [
    "ebh_f32.pt",
    "ebh_wrapped.pt",
    "views.pt",
    "ebh_bf16.pt",
    "with_int.pt",
    "whole_module.pt",
];

fn mutate(bytes: &mut Vec<u8>, edits: &[(prop::sample::Index, u8, u8)]) {
    for (at, byte, op) in edits {
        if bytes.is_empty() {
            break;
        }
        let i = at.index(bytes.len());
        match op {
            0 => bytes[i] ^= byte | 1,
            1 => bytes.truncate(i),
            _ => bytes.insert(i, *byte),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Random bytes behind a zip or legacy-torch start, or as the data.pkl
    /// of a valid archive, are never a model, and never a panic.
    #[test]
    fn random_bytes_give_an_error(bytes in proptest::collection::vec(any::<u8>(), 0..512), start in 0usize..4) {
        let starts: [&[u8]; 3] = [b"PK\x03\x04", b"\x80\x02\x8a\x0a", b""];
        let data = match starts.get(start) {
            Some(s) => [s, &bytes[..]].concat(),
            None => archive(&[&[0x80, 2][..], &bytes].concat(), &storages(), Some("little")),
        };
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "x.pt", &data);
        let (r, largest) = largest_allocation(|| io::load(&p));
        prop_assert!(r.is_err());
        prop_assert!(largest <= 64 * data.len() + (1 << 20), "allocated {}", largest);
    }

    /// A fixture with bytes flipped, cut or inserted: an error, or (where
    /// only bytes that no CRC covers changed) exactly the original model.
    #[test]
    fn mutated_fixtures_give_an_error_or_the_same_model(
        which in 0usize..FUZZED.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..4),
    ) {
        let original = std::fs::read(fixture(FUZZED[which])).unwrap();
        let mut bytes = original.clone();
        mutate(&mut bytes, &edits);
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "m.pt", &bytes);
        let (r, largest) = largest_allocation(|| io::load(&p));
        prop_assert!(largest <= 64 * original.len() + (1 << 20), "allocated {}", largest);
        if let Ok(m) = r {
            // The zip CRCs cover data.pkl and every storage.
            let twin = io::load(fixture(FUZZED[which])).expect("a mutant of a refused fixture loaded");
            for x in inputs(&twin) {
                prop_assert_eq!(m.forward(&x).unwrap(), twin.forward(&x).unwrap());
            }
        }
    }

    /// A cut fixture is always an error (a zip archive ends with its directory).
    #[test]
    fn truncated_fixtures_give_an_error(which in 0usize..FUZZED.len(), cut in any::<prop::sample::Index>()) {
        let bytes = std::fs::read(fixture(FUZZED[which])).unwrap();
        let cut = cut.index(bytes.len());
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "t.pt", &bytes[..cut]);
        prop_assert!(io::load(&p).is_err());
    }

    /// A fixture repacked with a mutated data.pkl (valid CRCs): an error or
    /// a sound model, never a panic, never a large allocation.
    #[test]
    fn mutated_pickles_give_an_error_or_a_sound_model(
        which in 0usize..FUZZED.len(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let original = std::fs::read(fixture(FUZZED[which])).unwrap();
        let mut files = zip_entries(&original).unwrap();
        let pkl = files.iter_mut().find(|(n, _)| n.ends_with("/data.pkl")).unwrap();
        mutate(&mut pkl.1, &edits);
        let bytes = repack(&files);
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "p.pt", &bytes);
        let (r, largest) = largest_allocation(|| io::load(&p));
        prop_assert!(largest <= 64 * bytes.len() + (1 << 20), "allocated {}", largest);
        if let Ok(m) = r {
            match similarity(&m, &m) {
                Ok(s) => prop_assert!(s.is_finite()),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
    }
}

/// The `tiny_lm` fixtures' one assumption: their final norm has no
/// `num_batches_tracked` (written before the research code's `Tok0Batch`
/// kept one), so its stored energy is read as a tracked one's, and said.
fn assert_counter_absent(assumptions: &[String]) {
    assert_eq!(assumptions.len(), 1, "{assumptions:?}");
    assert!(
        assumptions[0].starts_with("final_norm.num_batches_tracked absent: the tok0_batch norm at pre_unembed is read with its stored running_mean_energy"),
        "{assumptions:?}"
    );
}
