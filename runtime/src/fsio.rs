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
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let file_name = path.file_name().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "the path does not name a file")
    })?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let (temp, mut file) = create_temp(dir, file_name)?;
    let written = file
        .write_all(bytes)
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
