//! Files for the file tests: the fixture directory, safetensors files
//! written by hand (through the safetensors crate, not the library),
//! `torch.save` archives taken apart and repacked, and the `expected.json`
//! that PyTorch wrote beside its fixtures.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use nalgebra::DMatrix;
use safetensors::Dtype;
use safetensors::tensor::TensorView;
use tensor_similarity::Error;
use tensor_similarity::io::{self, FileError};

/// The repository's one fixture directory, `tests/files/` (PyTorch's
/// `.pt` and safetensors files in `torch/`, the guide's snippet output in
/// `snippet/`; the Python tests read the same files).
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/files")
}

/// One tensor to write by hand: name, shape, row-major values.
#[derive(Clone, Debug)]
pub struct Raw {
    pub name: String,
    pub shape: Vec<usize>,
    pub values: Vec<f64>,
}

pub fn raw(name: &str, shape: &[usize], values: Vec<f64>) -> Raw {
    assert_eq!(shape.iter().product::<usize>(), values.len());
    Raw {
        name: name.into(),
        shape: shape.to_vec(),
        values,
    }
}

/// Row-major values of `m`, written out index by index.
pub fn row_major(m: &DMatrix<f64>) -> Vec<f64> {
    let mut v = Vec::new();
    for i in 0..m.nrows() {
        for j in 0..m.ncols() {
            v.push(m[(i, j)]);
        }
    }
    v
}

pub fn encode(dtype: Dtype, values: &[f64]) -> Vec<u8> {
    let mut out = Vec::new();
    for &v in values {
        match dtype {
            Dtype::F64 => out.extend_from_slice(&v.to_le_bytes()),
            Dtype::F32 => out.extend_from_slice(&(v as f32).to_le_bytes()),
            Dtype::F16 => out.extend_from_slice(&half::f16::from_f64(v).to_le_bytes()),
            Dtype::BF16 => out.extend_from_slice(&half::bf16::from_f64(v).to_le_bytes()),
            Dtype::I64 => out.extend_from_slice(&(v as i64).to_le_bytes()),
            other => panic!("test helper does not write {other:?}"),
        }
    }
    out
}

/// `v` rounded to `dtype` and back, as the file stores it.
pub fn round(dtype: Dtype, v: f64) -> f64 {
    match dtype {
        Dtype::F64 => v,
        Dtype::F32 => v as f32 as f64,
        Dtype::F16 => half::f16::from_f64(v).to_f64(),
        Dtype::BF16 => half::bf16::from_f64(v).to_f64(),
        other => panic!("{other:?}"),
    }
}

/// The bytes of a safetensors file with `tensors` in `dtype` and optional
/// `tensor_similarity` metadata, through the safetensors crate (not ours).
pub fn file_bytes(tensors: &[Raw], dtype: Dtype, metadata: Option<&str>) -> Vec<u8> {
    let bytes: Vec<Vec<u8>> = tensors.iter().map(|t| encode(dtype, &t.values)).collect();
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|(t, b)| {
            (
                t.name.as_str(),
                TensorView::new(dtype, t.shape.clone(), b).unwrap(),
            )
        })
        .collect();
    let meta = metadata.map(|m| HashMap::from([("tensor_similarity".to_owned(), m.to_owned())]));
    safetensors::serialize(views, meta).unwrap()
}

pub fn write_file(path: &Path, tensors: &[Raw], dtype: Dtype, metadata: Option<&str>) {
    std::fs::write(path, file_bytes(tensors, dtype, metadata)).unwrap();
}

/// The [`FileError`] of loading `path`, after checking that the error names
/// the file.
pub fn load_error(path: &Path) -> FileError {
    match io::load(path) {
        Err(Error::File { path: p, source }) => {
            assert_eq!(p, path);
            let message = Error::File { path: p, source }.to_string();
            assert!(
                message.starts_with(&path.display().to_string()),
                "{message}"
            );
            match io::load(path) {
                Err(Error::File { source, .. }) => source,
                _ => unreachable!(),
            }
        }
        Ok(_) => panic!("{} loaded", path.display()),
        Err(other) => panic!("not a file error: {other}"),
    }
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path
}

/// One-hot rows of `tokens` over a vocabulary of `vocab`: a sequence model's
/// input for those tokens.
pub fn one_hot(tokens: &[usize], vocab: usize) -> DMatrix<f64> {
    DMatrix::from_fn(tokens.len(), vocab, |s, t| {
        f64::from(u8::from(t == tokens[s]))
    })
}

/// A case of an `expected.json` written by PyTorch: its `tokens` and its
/// `logits` (`[n, vocab]`).
pub fn logits_case(case: &serde_json::Value, vocab: usize) -> (Vec<usize>, DMatrix<f64>) {
    let tokens: Vec<usize> = case["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as usize)
        .collect();
    let logits = DMatrix::from_fn(tokens.len(), vocab, |s, j| {
        case["logits"][s][j].as_f64().unwrap()
    });
    (tokens, logits)
}

/// A zip archive's entries (name, bytes) in order, or `None` if it is not
/// one: a `torch.save` file to edit and [`repack`].
pub fn zip_entries(bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    use std::io::Read;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes)).ok()?;
    (0..zip.len())
        .map(|i| {
            let mut f = zip.by_index(i).ok()?;
            let mut data = Vec::new();
            f.read_to_end(&mut data).ok()?;
            Some((f.name().ok()?.into_owned(), data))
        })
        .collect()
}

/// The entries stored uncompressed in a new archive (valid CRCs).
pub fn repack(entries: &[(String, Vec<u8>)]) -> Vec<u8> {
    use std::io::Write;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options =
        zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in entries {
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}
