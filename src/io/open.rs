//! Opening a model file or a run config: regular files only, and never an
//! open that blocks.
//!
//! Opening a FIFO for reading waits for a writer (forever, if none comes),
//! and a device may never end; neither is a model or a config. The path's
//! kind is looked at first (nothing else is opened), then the file is
//! opened without blocking (`O_NONBLOCK`, on unix) and the opened handle's
//! own metadata is checked again, so that a path swapped for a FIFO in
//! between is refused too. Kept apart from the readers so that the model
//! reader and the config reader share it without depending on each other.

use std::fs::{File, Metadata};
use std::io;
use std::path::Path;

/// The file at `path`, opened for reading, with its metadata, if it is a
/// regular file (after following symbolic links). A directory, FIFO,
/// socket, device or broken symbolic link is an
/// [`InvalidInput`](io::ErrorKind::InvalidInput) error saying what the
/// path is (`"is a FIFO (named pipe), not a regular file"`); a path that
/// does not exist or cannot be read is the operating system's error.
pub(crate) fn open_regular(path: &Path) -> io::Result<(File, Metadata)> {
    // A look before opening: a FIFO or device is refused without being
    // opened at all (opening some devices has effects of its own).
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => return Err(not_regular(&meta)),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            // A link whose target is gone says so.
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "is a broken symbolic link (its target does not exist), not a regular file",
                ));
            }
            return Err(e);
        }
        Err(e) => return Err(e),
    }
    let file = open_nonblocking(path)?;
    // What was opened is what is checked: the path may have been replaced
    // since the look above.
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(not_regular(&meta));
    }
    Ok((file, meta))
}

/// Opens `path` read-only; on unix with `O_NONBLOCK` (a FIFO opens at once
/// instead of waiting for a writer; reads of a regular file are not
/// affected) and `O_NOCTTY` (a terminal never becomes the process's
/// controlling terminal).
fn open_nonblocking(path: &Path) -> io::Result<File> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    options.open(path)
}

/// The error for a path that exists but is not a regular file, naming its
/// kind.
fn not_regular(meta: &Metadata) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("is {}, not a regular file", kind(meta)),
    )
}

/// What a path that is not a regular file is, in words (`"a directory"`).
fn kind(meta: &Metadata) -> &'static str {
    let t = meta.file_type();
    if t.is_dir() {
        return "a directory";
    }
    if t.is_symlink() {
        return "a symbolic link";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_fifo() {
            return "a FIFO (named pipe)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
    }
    "a special file"
}

/// Why the config candidate at `path` (which exists: `symlink_metadata`
/// found it) cannot be read as a regular file, or `None` if it can.
/// `config::find` uses it so that a `config.yaml` that is a directory,
/// FIFO or broken link is an error, not silently passed over.
pub(crate) fn not_regular_reason(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => None,
        Ok(meta) => Some(not_regular(&meta).to_string()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            Some("is a broken symbolic link (its target does not exist), not a regular file".into())
        }
        Err(e) => Some(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
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
}
