use super::*;

/// The open itself never waits: a FIFO without a writer opens at once
/// (`O_NONBLOCK`) and the opened handle is seen to be a FIFO; this is what
/// refuses a path swapped for a FIFO after the first look.
#[cfg(unix)]
#[test]
fn a_fifo_opens_without_waiting_and_is_refused() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let fifo = dir.path().join("model.pt");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    let (send, receive) = std::sync::mpsc::channel();
    let path = fifo.clone();
    std::thread::spawn(move || {
        let opened = open_nonblocking(&path).and_then(|f| f.metadata());
        let _ = send.send(opened.map(|m| m.file_type().is_fifo()));
    });
    let is_fifo = receive
        .recv_timeout(std::time::Duration::from_secs(10))
        .expect("the open returns without a writer")
        .expect("opened");
    assert!(is_fifo);
    let e = open_regular(&fifo).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    assert_eq!(e.to_string(), "is a FIFO (named pipe), not a regular file");
    assert_eq!(
        not_regular_reason(&fifo).as_deref(),
        Some("is a FIFO (named pipe), not a regular file")
    );
}

#[test]
fn regular_files_open_and_others_say_what_they_are() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "model: {}\n").expect("written");
    let (_, meta) = open_regular(&file).expect("a regular file opens");
    assert_eq!(meta.len(), 10);
    assert_eq!(not_regular_reason(&file), None);
    let e = open_regular(dir.path()).unwrap_err();
    assert_eq!(e.to_string(), "is a directory, not a regular file");
    let absent = dir.path().join("absent.yaml");
    assert_eq!(
        open_regular(&absent).unwrap_err().kind(),
        io::ErrorKind::NotFound
    );
    #[cfg(unix)]
    {
        let link = dir.path().join("link.yaml");
        std::os::unix::fs::symlink(&absent, &link).expect("linked");
        assert!(
            open_regular(&link)
                .unwrap_err()
                .to_string()
                .starts_with("is a broken symbolic link")
        );
        // A link to a regular file is read as the file.
        let good = dir.path().join("good.yaml");
        std::os::unix::fs::symlink(&file, &good).expect("linked");
        assert!(open_regular(&good).is_ok());
    }
}
