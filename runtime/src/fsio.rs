//! Writing files so that readers never see a partial one, and reading files whole with their
//! memory reserved up front. Every file cnnc writes goes through [`write_atomic`].

use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` to `path` so that readers see the old file or the complete new one, never a
/// partial write, even after a crash or a power cut: a temporary file in the same directory
/// (`.NAME.PID.N.tmp`), synced, renamed over `path`, then the directory synced so that the rename
/// is durable. On any failure (a full disk, a file-size limit, a bad directory) the temporary file
/// is removed and `path` is untouched. The error is the underlying one; callers name `path`.
///
/// Only regular files are replaced, as editors replace them:
/// - a symbolic link is followed, and the file it ends at is replaced (or created), the link
///   kept;
/// - a file replaced keeps its permissions (and, where the process may set it, its owner);
/// - a device, a FIFO or a socket is written in place, so `/dev/null` stays a device and
///   `-o /dev/stdout` prints; so is an open file named through `/proc` (`/dev/stdout` links to
///   `/proc/self/fd/1`), which names a descriptor, not a path: appended to, as the shell's
///   `>>` appends, so that `-o /dev/stdout >> log` keeps the log;
/// - a directory is refused.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    match destination(path)? {
        Destination::InPlace(path) => write_in_place(&path, bytes),
        Destination::Replace(path, existing) => replace(&path, bytes, existing.as_ref()),
    }
}

/// Most symbolic links followed from one path: Linux's own limit (`ELOOP`).
const MAX_LINKS: usize = 40;

/// Where [`write_atomic`] puts the bytes for a path.
#[derive(Debug)]
enum Destination {
    /// A regular file to replace atomically (its metadata), or to create (`None`).
    Replace(PathBuf, Option<fs::Metadata>),
    /// A device, FIFO, socket or `/proc` descriptor link: opened and written as it is.
    InPlace(PathBuf),
}

/// The end of `path`'s chain of symbolic links, and how to write there.
fn destination(path: &Path) -> io::Result<Destination> {
    let mut path = path.to_owned();
    for _ in 0..=MAX_LINKS {
        let meta = match fs::symlink_metadata(&path) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Destination::Replace(path, None));
            }
            Err(e) => return Err(e),
        };
        let kind = meta.file_type();
        if kind.is_symlink() {
            // `/proc/<pid>/fd/N` and its kin name open descriptors (a pipe, a terminal, a file
            // the shell opened): the kernel resolves them when they are opened, their text
            // (`pipe:[1234]`) is no path.
            if names_descriptor(&path) {
                return Ok(Destination::InPlace(path));
            }
            let target = fs::read_link(&path)?;
            path = match path.parent() {
                Some(dir) => dir.join(target),
                None => target,
            };
        } else if kind.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::IsADirectory,
                "it is a directory; name a file to write",
            ));
        } else if kind.is_file() {
            return Ok(Destination::Replace(path, Some(meta)));
        } else {
            return Ok(Destination::InPlace(path));
        }
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("more than {MAX_LINKS} symbolic links lead from it (a loop?)"),
    ))
}

/// Whether the link `path` lies in `/proc` (also when reached through `/dev/fd`, a link to
/// `/proc/self/fd`).
fn names_descriptor(path: &Path) -> bool {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::canonicalize(dir).is_ok_and(|dir| dir.starts_with("/proc"))
}

/// Writes `bytes` into the special file at `path` as it is (no temporary file, no rename: a
/// device or a FIFO cannot be replaced, and has nothing to sync). Appending: a `/proc`
/// descriptor may name a file the shell opened (`>> log`), whose contents stay.
fn write_in_place(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = fs::OpenOptions::new().append(true).open(path)?;
    file.write_all(bytes)?;
    file.flush()
}

/// Replaces (or creates) the regular file `path` through a temporary file beside it, giving the
/// new file the permissions and owner of `existing`, the file it replaces.
fn replace(path: &Path, bytes: &[u8], existing: Option<&fs::Metadata>) -> io::Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let (temp, mut file) = create_temp(dir, file_name)?;
    let written = keep_attributes(&file, existing)
        .and_then(|()| file.write_all(bytes))
        .and_then(|()| file.sync_all())
        .and_then(|()| {
            drop(file);
            fs::rename(&temp, path)
        });
    if let Err(error) = written {
        // Best effort: the temporary file is ours and useless now; the write error matters more.
        let _ = fs::remove_file(&temp);
        return Err(error);
    }
    sync_dir(dir)
}

/// Gives the new `file` the permissions of the file it replaces (a private `0600` key file stays
/// private), and its owner and group where the process may set them (root editing another
/// user's file); a failure to change the owner is no error, as for editors.
fn keep_attributes(file: &File, existing: Option<&fs::Metadata>) -> io::Result<()> {
    let Some(existing) = existing else {
        return Ok(());
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let _ = std::os::unix::fs::fchown(file, Some(existing.uid()), Some(existing.gid()));
    }
    file.set_permissions(existing.permissions())
}

/// Creates a new temporary file for `file_name` in `dir`, under a name no other write uses: a
/// stale one left by a killed process with a recycled id is skipped, never reused.
fn create_temp(dir: &Path, file_name: &std::ffi::OsStr) -> io::Result<(PathBuf, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    loop {
        let mut temp_name = OsString::from(".");
        temp_name.push(file_name);
        let unique = COUNTER.fetch_add(1, Ordering::Relaxed);
        temp_name.push(format!(".{}.{unique}.tmp", std::process::id()));
        let temp = dir.join(temp_name);
        match File::create_new(&temp) {
            Ok(file) => return Ok((temp, file)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Whether `name` is the name of a temporary file [`write_atomic`] makes for the file `file_name`
/// (`.NAME.PID.N.tmp`): what a killed write leaves behind, for cleaning up.
pub fn is_temp_file_of(name: &str, file_name: &str) -> bool {
    let Some(rest) = name
        .strip_prefix('.')
        .and_then(|rest| rest.strip_prefix(file_name))
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.strip_suffix(".tmp"))
    else {
        return false;
    };
    let mut numbers = rest.split('.');
    let is_number = |part: Option<&str>| {
        part.is_some_and(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    };
    is_number(numbers.next()) && is_number(numbers.next()) && numbers.next().is_none()
}

/// Makes the renames done in `dir` durable. Directories cannot be opened for syncing everywhere,
/// so this is a no-op off Unix.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// The first `len` bytes of the file at `path` (its length when checked), with the memory for
/// them reserved up front: a file too large for memory is an error, not an abort.
pub fn read_whole(path: &Path, len: u64) -> io::Result<Vec<u8>> {
    let too_large = || {
        io::Error::new(
            io::ErrorKind::OutOfMemory,
            format!("its {len} bytes do not fit in memory"),
        )
    };
    let mut bytes = Vec::new();
    bytes
        .try_reserve_exact(usize::try_from(len).map_err(|_| too_large())?)
        .map_err(|_| too_large())?;
    File::open(path)?.take(len).read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A failure after the temporary file exists (here the rename: a non-empty directory cannot
    /// be replaced by a file) removes it and leaves the destination as it was.
    #[test]
    fn a_failed_rename_removes_the_temporary_file_and_keeps_the_destination() {
        let dir = tempfile::tempdir().expect("tempdir");
        let target = dir.path().join("out.bin");
        fs::create_dir(&target).expect("a directory in the way");
        fs::write(target.join("inside"), b"kept").expect("a file inside");
        let error = replace(&target, b"new bytes", None).expect_err("the rename fails");
        assert_ne!(error.kind(), io::ErrorKind::NotFound, "{error}");
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("a folder")
            .map(|e| e.expect("an entry").file_name())
            .collect();
        assert_eq!(names, ["out.bin"]);
        assert_eq!(fs::read(target.join("inside")).expect("kept"), b"kept");
    }
}
