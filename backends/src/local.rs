//! A local directory with real compare-and-swap across processes:
//! every conditional write holds an exclusive `flock` on `<root>/.lock`,
//! checks the current version, writes a temp file, fsyncs it, renames it over
//! the target and fsyncs the directory. object_store's `LocalFileSystem`
//! cannot do this (it rejects `PutMode::Update`), which is why this exists.
//!
//! Versions are SHA-256 content hashes, like S3 ETags; documents never repeat
//! bytes (every write bumps `version`), so this cannot ABA.
//!
//! **NFS caveat**: `flock` and rename atomicity are only as good as the file
//! system's. On NFS, locks may be emulated or ignored and renames are not
//! atomic for other clients' caches: use an object store for shared state
//! across machines; use this for one machine.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use oxiflow_core::{Object, Version};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::store::{ConditionalStore, Listed};

const LOCK_FILE: &str = ".lock";
const TEMP_SUFFIX: &str = ".tmp";

/// A [`ConditionalStore`] in a local directory, safe across processes.
#[derive(Debug, Clone)]
pub struct LocalDirStore {
    root: PathBuf,
    describe: String,
}

/// A failed file operation on `key` (a path relative to the root: messages
/// never carry absolute paths).
fn io<'a>(operation: &'static str, key: &'a str) -> impl FnOnce(std::io::Error) -> Error + 'a {
    move |source| Error::Io { operation, path: key.to_string(), source }
}

fn etag(bytes: &[u8]) -> Version {
    let digest = Sha256::digest(bytes);
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    Version { e_tag: Some(format!("\"{hex}\"")), version: None }
}

impl LocalDirStore {
    /// Opens (creating if needed) the directory `root`, and removes the
    /// temp files of writers that died mid-write when no writer holds the
    /// lock (never waiting for it: a reader must not stall behind a stopped
    /// writer; the next open cleans up instead).
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        fs::create_dir_all(&root).map_err(io("create directory", &root.display().to_string()))?;
        let describe = format!("file://{}", root.display());
        let store = LocalDirStore { root, describe };
        store.if_unlocked(|| store.remove_dead_temp_files())?;
        Ok(store)
    }

    /// A writer holds the store-wide lock from creating its temp file until
    /// the rename, so with the lock held every temp file left in the tree
    /// belongs to a process that died mid-write: none is a live writer's.
    /// Returns how many were removed.
    fn remove_dead_temp_files(&self) -> Result<usize> {
        let mut removed = 0;
        walk_files(&self.root, &self.root, |key, path| {
            let name = key.rsplit('/').next().unwrap_or(key);
            if !(name.starts_with('.') && name.ends_with(TEMP_SUFFIX)) {
                return Ok(());
            }
            match fs::remove_file(path) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io("remove dead temp file", key)(e)),
            }
            Ok(())
        })?;
        if removed > 0 {
            tracing::info!(removed, store = self.describe, "removed temp files left by writers that died");
        }
        Ok(removed)
    }

    /// Maps a key to a path; the core's key rules keep it inside the root.
    fn path(&self, key: &str) -> Result<PathBuf> {
        oxiflow_core::keys::check_key(key)?;
        Ok(self.root.join(key))
    }

    /// Runs `f` holding the store-wide exclusive lock if it is free now;
    /// `None` (and `f` not run) when another process holds it.
    fn if_unlocked<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<Option<T>> {
        let lock_path = self.root.join(LOCK_FILE);
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io("open lock", LOCK_FILE))?;
        match lock.try_lock() {
            Ok(()) => f().map(Some),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(io("lock", LOCK_FILE)(e)),
        }
    }

    /// Runs `f` holding the store-wide exclusive lock.
    fn locked<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let lock_path = self.root.join(LOCK_FILE);
        let lock = OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path).map_err(io("open lock", LOCK_FILE))?;
        lock.lock().map_err(io("lock", LOCK_FILE))?;
        let result = f();
        drop(lock); // closing the descriptor releases the flock
        result
    }

    /// Reads the regular file at `path`. The last component is opened without
    /// following a symlink and without blocking (a FIFO planted at a key
    /// would hold the reader forever); anything but a regular file there is
    /// a foreign object, refused as corrupt.
    fn read(path: &Path, key: &str, max_bytes: usize) -> Result<Option<Vec<u8>>> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = match OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(not_a_file(key)),
            Err(e) => return Err(io("open", key)(e)),
        };
        let meta = file.metadata().map_err(io("stat", key))?;
        if !meta.is_file() {
            return Err(not_a_file(key));
        }
        let size = usize::try_from(meta.len()).unwrap_or(usize::MAX);
        if size > max_bytes {
            return Err(oxiflow_core::Error::TooLarge { key: key.into(), size, limit: max_bytes }.into());
        }
        let mut body = Vec::with_capacity(size);
        file.read_to_end(&mut body).map_err(io("read", key))?;
        Ok(Some(body))
    }

    /// Write temp + fsync + rename + fsync directory: after a crash the file
    /// holds either the old or the new bytes, never a mix.
    fn write_atomic(path: &Path, key: &str, body: &[u8]) -> Result<()> {
        let dir = path.parent().expect("keys have a parent: the root");
        fs::create_dir_all(dir).map_err(io("create the directory of", key))?;
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("object");
        #[allow(clippy::disallowed_methods)] // a unique temp-file name, not a decision
        let unique = rand::random::<u64>();
        let tmp = dir.join(format!(".{name}.{}.{unique:016x}{TEMP_SUFFIX}", std::process::id()));
        let result = (|| {
            let mut file = File::create(&tmp).map_err(io("create a temp file for", key))?;
            file.write_all(body).map_err(io("write a temp file for", key))?;
            file.sync_all().map_err(io("fsync a temp file for", key))?;
            fs::rename(&tmp, path).map_err(io("rename into place", key))?;
            File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync the directory of", key))
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        result
    }

    /// Lists keys with their versions: each file is read and hashed, which
    /// on a local disk is cheap next to decoding it. Only regular files whose
    /// relative path is a valid key are listed: no symlink is followed and
    /// no special file opened.
    fn list_sync(&self, prefix: &str) -> Result<Vec<Listed>> {
        oxiflow_core::keys::check_prefix(prefix)?;
        let dir = prefix.rsplit_once('/').map_or("", |(d, _)| d);
        let mut keys = Vec::new();
        walk_files(&self.root, &self.root.join(dir), |key, path| {
            if !key.starts_with(prefix) || oxiflow_core::keys::check_key(key).is_err() {
                return Ok(()); // the lock and temp files, and anything foreign
            }
            match Self::read(path, key, usize::MAX) {
                Ok(Some(body)) => keys.push(Listed { key: key.to_string(), version: Some(etag(&body)) }),
                // Removed or replaced by something else since the directory was read.
                Ok(None) | Err(Error::Core(oxiflow_core::Error::Corrupt { .. })) => {}
                Err(e) => return Err(e),
            }
            Ok(())
        })?;
        keys.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(keys)
    }
}

fn not_a_file(key: &str) -> Error {
    oxiflow_core::Error::Corrupt {
        key: key.into(),
        reason: "not a regular file (a symlink, directory or special file); nothing was overwritten".into(),
    }
    .into()
}

/// Calls `visit(key, path)` for every regular file under `dir`, `key` being
/// its path relative to `root` with '/' between segments (a missing `dir`
/// has none). Symlinks, FIFOs and other special files are skipped, never
/// followed or opened.
fn walk_files(root: &Path, dir: &Path, mut visit: impl FnMut(&str, &Path) -> Result<()>) -> Result<()> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = match fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => continue,
            Err(e) => return Err(io("list", &relative(root, &d))(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io("list", &relative(root, &d)))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io("stat", &relative(root, &path)))?; // never follows a symlink
            if kind.is_dir() {
                stack.push(path);
            } else if kind.is_file() {
                visit(&relative(root, &path), &path)?;
            }
        }
    }
    Ok(())
}

/// `path` relative to `root`, '/'-separated: what messages name, never an
/// absolute path.
fn relative(root: &Path, path: &Path) -> String {
    let rel = path.strip_prefix(root).unwrap_or(path);
    rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/")
}

/// Runs blocking file work off the async runtime.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Store { store: "local directory".into(), reason: format!("blocking task failed: {e}") })?
}

#[async_trait]
impl ConditionalStore for LocalDirStore {
    fn describe(&self) -> &str {
        &self.describe
    }

    async fn get(&self, key: &str, max_bytes: usize) -> Result<Option<Object>> {
        let path = self.path(key)?;
        let key = key.to_string();
        // Reads need no lock: renames replace files atomically.
        blocking(move || Ok(Self::read(&path, &key, max_bytes)?.map(|body| Object { version: etag(&body), body }))).await
    }

    async fn put_if_absent(&self, key: &str, body: Vec<u8>) -> Result<Version> {
        let (this, path, key) = (self.clone(), self.path(key)?, key.to_string());
        blocking(move || {
            this.locked(|| {
                if fs::symlink_metadata(&path).is_ok() {
                    return Err(Error::AlreadyExists { store: this.describe.clone(), key });
                }
                Self::write_atomic(&path, &key, &body)?;
                Ok(etag(&body))
            })
        })
        .await
    }

    async fn put_if_match(&self, key: &str, body: Vec<u8>, version: &Version) -> Result<Version> {
        let (this, path, key, version) = (self.clone(), self.path(key)?, key.to_string(), version.clone());
        blocking(move || {
            this.locked(|| {
                let current = Self::read(&path, &key, usize::MAX)?;
                if current.map(|b| etag(&b)).as_ref() != Some(&version) {
                    return Err(Error::Precondition { store: this.describe.clone(), key });
                }
                Self::write_atomic(&path, &key, &body)?;
                Ok(etag(&body))
            })
        })
        .await
    }

    async fn delete(&self, key: &str) -> Result<()> {
        let (this, path, key) = (self.clone(), self.path(key)?, key.to_string());
        blocking(move || {
            this.locked(|| match fs::remove_file(&path) {
                Ok(()) => {
                    let dir = path.parent().expect("keys have a parent");
                    File::open(dir).and_then(|d| d.sync_all()).map_err(io("fsync the directory of", &key))
                }
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                Err(e) => Err(io("delete", &key)(e)),
            })
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<Listed>> {
        let this = self.clone();
        let prefix = prefix.to_string();
        blocking(move || this.list_sync(&prefix)).await
    }
}
