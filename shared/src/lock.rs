//! The one lock helper: an exclusive `flock` on a file, with a bounded wait. The kernel drops the
//! lock when the holder exits, so a killed plugin never blocks the next call.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fs2::FileExt;

use crate::error::{CniError, Result};

/// How long a plugin waits for a lock before answering "try again later" (code 11).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// An exclusive lock, held until dropped.
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Lock `path` (created 0600 if missing), waiting at most `timeout`.
    pub fn exclusive(path: &Path, timeout: Duration) -> Result<FileLock> {
        Self::exclusive_with_mode(path, timeout, 0o600)
    }

    /// [`FileLock::exclusive`], a missing `path` created with `mode` (less the umask).
    pub fn exclusive_with_mode(path: &Path, timeout: Duration, mode: u32) -> Result<FileLock> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(mode)
            .open(path)
            .map_err(|e| CniError::io(format!("opening lock file {}: {e}", path.display())))?;
        let start = Instant::now();
        let mut pause = Duration::from_micros(100);
        loop {
            match file.try_lock_exclusive() {
                Ok(()) => {
                    return Ok(FileLock {
                        file,
                        path: path.to_path_buf(),
                    })
                }
                Err(e) if e.raw_os_error() == fs2::lock_contended_error().raw_os_error() => {}
                Err(e) => {
                    return Err(CniError::io(format!("locking {}: {e}", path.display())));
                }
            }
            if start.elapsed() >= timeout {
                return Err(CniError::try_again(format!(
                    "{} is locked by another CNI call for more than {:?}",
                    path.display(),
                    timeout
                )));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(5));
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = FileExt::unlock(&self.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_times_out_with_code_11_and_gets_it_after_release() {
        let p = std::env::temp_dir().join(format!("cni-lock-test-{}", std::process::id()));
        let first = FileLock::exclusive(&p, Duration::from_secs(1)).unwrap();
        let e = FileLock::exclusive(&p, Duration::from_millis(30)).unwrap_err();
        assert_eq!(e.code, 11);
        drop(first);
        let again = FileLock::exclusive(&p, Duration::from_millis(30)).unwrap();
        assert_eq!(again.path(), p);
        drop(again);
        std::fs::remove_file(&p).unwrap();
    }
}
