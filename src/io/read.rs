//! Reading a model file from a path: regular files only, memory-mapped,
//! checked unchanged after parsing; its first bytes choose the reader
//! (safetensors in `safetensors_file.rs`, `torch.save` archives in
//! `torch.rs`).

use std::path::Path;

use super::raw::{Format, RawFile};
use crate::error::FileError;

/// Reads and checks the file, then converts every tensor. Only a regular
/// file is read (see [`open_regular`](super::open::open_regular)); a
/// directory, FIFO, device or socket is a [`FileError::Io`] saying which.
///
/// The only allocation sized by the file's content is the file itself; a
/// header's declared sizes are checked against the file's length (here, and
/// by the safetensors reader for data offsets) before anything of that size
/// exists, and tensor buffers are at most 4× the file's data section.
///
/// The file is memory-mapped while it is parsed (`memmap2`): no copy of it
/// into the heap (20% of the time of loading a 27 MB checkpoint). It is
/// checked as a buffer was, and a file whose length or modification time
/// differs after parsing is [`FileError::Changed`].
pub(crate) fn read(path: &Path) -> Result<RawFile, FileError> {
    // A device or pipe has no length to check against (and /dev/zero none
    // at all), and opening a FIFO would wait for a writer: regular files
    // only, opened without blocking.
    let (file, before) = super::open::open_regular(path)?;
    if before.len() == 0 {
        // Mapping zero bytes fails on some platforms; an empty file is a
        // truncated one.
        return parse_any(&[]);
    }
    // SAFETY: a read-only map, read only by the checked parsers, which copy
    // what they keep. Should another process write the file meanwhile, the
    // check below catches it; should it truncate it, this process gets
    // SIGBUS, as any reader of a map would.
    let map = unsafe { memmap2::Mmap::map(&file)? };
    let parsed = parse_any(&map);
    drop(map);
    unchanged(&before, &file.metadata()?)?;
    parsed
}

/// [`FileError::Changed`] unless the length and modification time agree.
fn unchanged(before: &std::fs::Metadata, after: &std::fs::Metadata) -> Result<(), FileError> {
    if after.len() != before.len() || after.modified().ok() != before.modified().ok() {
        return Err(FileError::Changed {
            before_len: before.len(),
            after_len: after.len(),
        });
    }
    Ok(())
}

/// The bytes of a file of any kind read: a `torch.save` zip archive
/// (`PK\x03\x04`), the legacy `torch.save` format (refused), or safetensors.
fn parse_any(bytes: &[u8]) -> Result<RawFile, FileError> {
    match Format::sniff(bytes) {
        Format::TorchZip => super::torch::parse(bytes),
        Format::LegacyTorch => Err(FileError::LegacyTorch),
        Format::Safetensors => super::safetensors_file::parse(bytes),
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    /// A file that grows or is rewritten between the two looks is `Changed`,
    /// one left alone is not: the check `read` makes after parsing a map.
    #[test]
    fn a_file_changed_between_open_and_parse_is_refused() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("model.safetensors");
        std::fs::write(&path, b"12345678").expect("written");
        let before = std::fs::metadata(&path).expect("metadata");
        unchanged(&before, &std::fs::metadata(&path).expect("metadata")).expect("unchanged");

        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("opened");
        file.write_all(b"more").expect("appended");
        drop(file);
        match unchanged(&before, &std::fs::metadata(&path).expect("metadata")) {
            Err(FileError::Changed {
                before_len: 8,
                after_len: 12,
            }) => {}
            other => panic!("expected Changed 8 → 12, got {other:?}"),
        }

        // Same length, new contents: the modification time tells.
        std::fs::write(&path, b"87654321").expect("rewritten");
        let rewritten = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("opened");
        let later = std::time::SystemTime::now() + std::time::Duration::from_secs(10);
        rewritten.set_modified(later).expect("mtime set");
        let err = unchanged(&before, &std::fs::metadata(&path).expect("metadata")).unwrap_err();
        assert!(
            err.to_string().contains("changed while it was read"),
            "{err}"
        );
    }
}
