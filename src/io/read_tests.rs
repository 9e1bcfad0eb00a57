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
