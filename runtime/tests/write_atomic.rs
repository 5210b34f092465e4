//! `fsio::write_atomic`, through which every output file is written: a failed write leaves the
//! destination as it was and no temporary file behind, temporary files left by a killed process
//! are never reused, and only regular files are replaced (links followed, devices and FIFOs
//! written in place, directories refused, permissions kept).

use std::fs;
use std::io::{self, Read};
use std::path::Path;

use cnnc_runtime::fsio::{is_temp_file_of, write_atomic};

/// The names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("a folder")
        .map(|e| {
            e.expect("an entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn a_directory_is_refused_before_anything_is_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("out.bin");
    fs::create_dir(&target).expect("a directory in the way");
    fs::write(target.join("inside"), b"kept").expect("a file inside");
    let error = write_atomic(&target, b"new bytes").expect_err("a directory");
    assert_eq!(error.kind(), io::ErrorKind::IsADirectory, "{error}");
    assert!(error.to_string().contains("it is a directory"), "{error}");
    assert_eq!(names(dir.path()), ["out.bin"]);
    assert_eq!(fs::read(target.join("inside")).expect("kept"), b"kept");
}

#[test]
fn stale_temporary_files_are_skipped_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let target = dir.path().join("model.safetensors");
    // What a killed process with this process's id would have left, for the first writes.
    let pid = std::process::id();
    let stale: Vec<String> = (0..64)
        .map(|n| format!(".model.safetensors.{pid}.{n}.tmp"))
        .collect();
    for name in &stale {
        fs::write(dir.path().join(name), b"partial").expect("a stale file");
    }
    write_atomic(&target, b"complete").expect("a write past the stale names");
    assert_eq!(fs::read(&target).expect("written"), b"complete");
    for name in &stale {
        assert_eq!(
            fs::read(dir.path().join(name)).expect("still there"),
            b"partial"
        );
    }
    assert_eq!(names(dir.path()).len(), stale.len() + 1);
}

#[test]
fn temporary_file_names_are_recognised_for_their_file_only() {
    // The names write_atomic really uses, as the stale-file test above plants them.
    let pid = std::process::id();
    assert!(is_temp_file_of(
        &format!(".model.safetensors.{pid}.0.tmp"),
        "model.safetensors"
    ));
    assert!(is_temp_file_of(
        "..checkpoint.json.pending.77.4.tmp",
        ".checkpoint.json.pending"
    ));
    for other in [
        ".model.safetensors.1.0.tmp.bak",
        "model.safetensors.1.0.tmp",
        ".model.safetensors.tmp",
        ".model.safetensors.x.0.tmp",
        ".model.safetensors.1.0.2.tmp",
        ".optimizer.state.1.0.tmp",
    ] {
        assert!(!is_temp_file_of(other, "model.safetensors"), "{other}");
    }
}

#[cfg(unix)]
mod unix {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt, symlink};
    use std::os::unix::io::AsRawFd;
    use std::process::Command;

    use super::*;

    #[test]
    fn a_fifo_is_written_in_place_not_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        let fifo = dir.path().join("out.fifo");
        let made = Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success(), "mkfifo failed");
        let reader = {
            let fifo = fifo.clone();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                fs::File::open(fifo)
                    .and_then(|mut f| f.read_to_end(&mut got))
                    .map(|_| got)
            })
        };
        write_atomic(&fifo, b"through the pipe").expect("written into the FIFO");
        // Checked before joining: a FIFO replaced by a regular file would leave the reader
        // waiting for a writer forever.
        let kind = fs::symlink_metadata(&fifo)
            .expect("still there")
            .file_type();
        assert!(kind.is_fifo(), "the FIFO was replaced: {kind:?}");
        assert_eq!(names(dir.path()), ["out.fifo"]);
        let got = reader.join().expect("the reader").expect("read");
        assert_eq!(got, b"through the pipe");
    }

    #[test]
    fn dev_null_stays_a_device() {
        write_atomic(Path::new("/dev/null"), b"discarded").expect("written");
        let kind = fs::metadata("/dev/null").expect("/dev/null").file_type();
        assert!(kind.is_char_device(), "/dev/null is now {kind:?}");
    }

    #[test]
    fn a_descriptor_link_in_proc_writes_to_what_it_names() {
        let (mut reader, writer) = io::pipe().expect("a pipe");
        let link = format!("/proc/self/fd/{}", writer.as_raw_fd());
        write_atomic(Path::new(&link), b"down the pipe").expect("written");
        drop(writer);
        let mut got = Vec::new();
        reader.read_to_end(&mut got).expect("read");
        assert_eq!(got, b"down the pipe");

        // A descriptor naming a file (`>> log`) is appended to, its contents kept.
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("log.txt");
        fs::write(&log, b"earlier\n").expect("a log");
        let open = fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .expect("opened");
        let link = format!("/proc/self/fd/{}", open.as_raw_fd());
        write_atomic(Path::new(&link), b"later\n").expect("written");
        assert_eq!(fs::read(&log).expect("read"), b"earlier\nlater\n");
        assert_eq!(names(dir.path()), ["log.txt"]);
    }

    #[test]
    fn a_symlink_is_followed_and_its_target_replaced() {
        let dir = tempfile::tempdir().expect("tempdir");
        fs::create_dir(dir.path().join("real")).expect("a folder");
        let target = dir.path().join("real/model.yaml");
        fs::write(&target, b"old").expect("the target");
        // A relative link, resolved from the link's folder, and a link to that link.
        symlink("real/model.yaml", dir.path().join("link.yaml")).expect("a link");
        symlink("link.yaml", dir.path().join("link2.yaml")).expect("a second link");
        write_atomic(&dir.path().join("link2.yaml"), b"new").expect("written");
        assert_eq!(fs::read(&target).expect("the target"), b"new");
        for link in ["link.yaml", "link2.yaml"] {
            let kind = fs::symlink_metadata(dir.path().join(link)).expect("kept");
            assert!(kind.file_type().is_symlink(), "{link} was replaced");
        }
        assert_eq!(names(&dir.path().join("real")), ["model.yaml"]);
        // A dangling link gets its target created, as an editor would.
        symlink("real/new.yaml", dir.path().join("dangling.yaml")).expect("a link");
        write_atomic(&dir.path().join("dangling.yaml"), b"created").expect("written");
        assert_eq!(
            fs::read(dir.path().join("real/new.yaml")).expect("created"),
            b"created"
        );
        // A loop of links is refused, not followed forever.
        symlink("loop2", dir.path().join("loop1")).expect("a link");
        symlink("loop1", dir.path().join("loop2")).expect("a link");
        let error = write_atomic(&dir.path().join("loop1"), b"x").expect_err("a loop");
        assert!(error.to_string().contains("symbolic links"), "{error}");
    }

    #[test]
    fn a_replaced_file_keeps_its_permissions() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("secret.safetensors");
        fs::write(&target, b"old").expect("the file");
        fs::set_permissions(&target, fs::Permissions::from_mode(0o600)).expect("chmod");
        write_atomic(&target, b"new").expect("written");
        assert_eq!(fs::read(&target).expect("read"), b"new");
        let mode = fs::metadata(&target).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        // And an executable script stays executable.
        fs::set_permissions(&target, fs::Permissions::from_mode(0o751)).expect("chmod");
        write_atomic(&target, b"newer").expect("written");
        let mode = fs::metadata(&target).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o751);
    }
}
