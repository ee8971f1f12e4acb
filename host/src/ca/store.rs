//! Sentry's credentials on disk, in Dapr's layout: a directory (`--issuer-credentials`) with
//! `ca.crt`, `issuer.crt` and `issuer.key` (names overridable; absolute names stand alone).
//!
//! - **Never generates over user files**: if all three are missing, a new root and issuer are
//!   generated; if all three exist, they are loaded and validated ([`Credentials::from_pem`]);
//!   anything in between is refused, naming what is there and what is not.
//! - **One root for racing starts**: the check-and-generate runs under an exclusive lock on
//!   `<dir>/.sigil-sentry.lock`, so of several Sentrys starting on one empty directory exactly
//!   one generates and the others load what it wrote.
//! - **Crash-safe generation**: the three files are first written beside their targets as
//!   `<name>.sigil-new` (flushed to disk, key 0600), then a journal marker
//!   `<dir>/.sigil-generated` is written, then each is renamed into place, then the marker goes.
//!   A start that finds the marker finishes the renames (roll forward); one that finds staged
//!   files without it deletes them (roll back). So a kill at any point leaves either nothing
//!   or the complete set, never a partial one that would block the next start.
//! - **Generated credentials are marked for automatic rotation**: a generated set is staged
//!   with `<dir>/.sigil-auto` (the SHA-256 of the issuer it was made with; see
//!   [`super::rotation`]), so the marker and the set appear together; credentials the user
//!   brought have no marker and are never rotated automatically.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

use super::{Credentials, CredentialsError, Generation};

const LOCK: &str = ".sigil-sentry.lock";
const MARKER: &str = ".sigil-generated";
const STAGED: &str = ".sigil-new";
/// The automatic-rotation marker (see [`super::rotation`]).
pub const AUTO: &str = ".sigil-auto";
/// The marker of a JWT signing key Sigil generated: its RFC 7638 thumbprint (see
/// [`super::journal::JwtSlots`]).
pub const JWT_AUTO: &str = ".sigil-jwt-auto";

/// The store's exclusive lock (`<dir>/.sigil-sentry.lock`), held until dropped: generation,
/// recovery and every rotation step run under it, so Sentrys sharing a directory (and
/// `sigil ca`) take them one at a time.
#[derive(Debug)]
pub struct StoreLock(File);

impl StoreLock {
    /// Takes the lock of `paths`' directory (creating the directory), waiting for it.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] if the directory or the lock file cannot be made or locked.
    pub fn acquire(paths: &StorePaths) -> Result<Self, StoreError> {
        fs::create_dir_all(&paths.dir).map_err(io_err(&paths.dir))?;
        let lock_path = paths.dir.join(LOCK);
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)
            .map_err(io_err(&lock_path))?;
        lock.lock().map_err(io_err(&lock_path))?;
        Ok(Self(lock))
    }
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// The automatic-rotation marker's content for an issuer chain's PEM: the hex SHA-256 of its
/// first certificate's DER (a set replaced by hand no longer matches).
pub fn auto_marker(issuer_pem: &str) -> String {
    let first = crate::pki::pem_certificates(issuer_pem.as_bytes())
        .ok()
        .and_then(|c| c.into_iter().next())
        .unwrap_or_default();
    let digest = ring::digest::digest(&ring::digest::SHA256, &first);
    let mut out: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    out.push('\n');
    out
}

/// The steps of a generation, in order. A crash after any of them is recovered at the next
/// start (see the module doc); [`interrupt_generation`] stops there, as a crash would.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// The three files are written beside their targets, no marker yet (rolls back).
    Staged,
    /// The journal marker is written (rolls forward).
    Marked,
    /// The first file is in place, the others still staged (rolls forward).
    Moved,
}

/// Why the store could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A file or directory operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// Some credential files exist and some do not: nothing is generated over them.
    #[error(
        "incomplete credentials: found {present:?} but not {missing:?}; refusing to generate \
         over existing files (provide all three, or remove them to let Sentry generate a new CA)"
    )]
    Partial {
        /// The files found.
        present: Vec<PathBuf>,
        /// The files missing.
        missing: Vec<PathBuf>,
    },
    /// The files do not form a valid set.
    #[error("invalid credentials in {dir}: {source}")]
    Invalid {
        /// The credentials directory.
        dir: PathBuf,
        /// What is wrong.
        source: CredentialsError,
    },
    /// An interrupted rotation step could not be finished or undone.
    #[error("an interrupted CA rotation step could not be finished: {0}")]
    Rotation(String),
    /// An interrupted generation left a staged file that differs from one in place.
    #[error(
        "{0} differs from the staged copy of an interrupted generation; refusing to replace it"
    )]
    Conflict(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> StoreError + '_ {
    move |source| StoreError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Where the three files are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StorePaths {
    /// The credentials directory (holds the lock and the journal marker).
    pub dir: PathBuf,
    /// The trust anchors (`ca.crt`).
    pub ca: PathBuf,
    /// The issuer chain (`issuer.crt`).
    pub issuer_cert: PathBuf,
    /// The issuer key (`issuer.key`).
    pub issuer_key: PathBuf,
    /// Sentry's JWT signing key (`jwt.key`; `--jwt-key-filename`), rotated with the CA when
    /// Sigil generated it.
    pub jwt_key: PathBuf,
    /// The JWT key set (`jwks.json`; `--jwks-filename`).
    pub jwks: PathBuf,
}

impl StorePaths {
    /// The paths for `dir` and the three file names (an absolute name is used as it is).
    pub fn new(dir: &Path, ca: &str, issuer_cert: &str, issuer_key: &str) -> Self {
        Self {
            dir: dir.to_owned(),
            ca: dir.join(ca),
            issuer_cert: dir.join(issuer_cert),
            issuer_key: dir.join(issuer_key),
            jwt_key: dir.join("jwt.key"),
            jwks: dir.join("jwks.json"),
        }
    }

    /// The same paths with the JWT key and set named `key` and `jwks` (an absolute name is
    /// used as it is).
    #[must_use]
    pub fn with_jwt(self, key: &str, jwks: &str) -> Self {
        Self {
            jwt_key: self.dir.join(key),
            jwks: self.dir.join(jwks),
            ..self
        }
    }

    /// The marker of a JWT key Sigil generated ([`JWT_AUTO`]).
    pub fn jwt_marker(&self) -> PathBuf {
        self.dir.join(JWT_AUTO)
    }

    /// Dapr's default names in `dir`.
    pub fn in_dir(dir: &Path) -> Self {
        Self::new(dir, "ca.crt", "issuer.crt", "issuer.key")
    }

    fn files(&self) -> [&Path; 3] {
        [&self.ca, &self.issuer_cert, &self.issuer_key]
    }

    /// The directories holding the files (for a watcher).
    pub fn directories(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = self
            .files()
            .iter()
            .filter_map(|f| f.parent().map(Path::to_owned))
            .collect();
        dirs.sort();
        dirs.dedup();
        dirs
    }

    /// Whether `path` is one of the three files.
    pub fn is_credential_file(&self, path: &Path) -> bool {
        self.files().contains(&path)
    }
}

/// Where a credential set came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Loaded from files that were there.
    Loaded,
    /// Generated now (and written).
    Generated,
}

/// Loads and validates the three files at `now`.
///
/// # Errors
///
/// [`StoreError::Io`] if a file cannot be read, [`StoreError::Invalid`] if the set is refused.
pub fn load(
    paths: &StorePaths,
    now: SystemTime,
    probe_id: &str,
) -> Result<Credentials, StoreError> {
    let read = |p: &Path| fs::read_to_string(p).map_err(io_err(p));
    let ca = read(&paths.ca)?;
    let issuer = read(&paths.issuer_cert)?;
    let key = Zeroizing::new(read(&paths.issuer_key)?);
    Credentials::from_pem(&ca, &issuer, &key, now, probe_id).map_err(|source| StoreError::Invalid {
        dir: paths.dir.clone(),
        source,
    })
}

/// Whether a generated set is rotated automatically (marked with [`AUTO`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rotation {
    /// Sentry rotates it on the schedule (what Sentry generates).
    Automatic,
    /// Only `sigil ca rotate` does (what `sigil ca init` makes unless asked).
    Manual,
}

/// Loads the credentials, or generates them if none exist (see the module doc); a generated
/// set is marked for `rotation`. An interrupted rotation step is finished or undone first
/// ([`super::rotation::recover`]).
///
/// # Errors
///
/// [`StoreError`]; nothing is written over existing files.
pub fn load_or_generate(
    paths: &StorePaths,
    trust_domain: &str,
    sentry_id: &str,
    skew: Duration,
    generation: Generation,
    rotation: Rotation,
    now: SystemTime,
) -> Result<(Credentials, Origin), StoreError> {
    let _lock = StoreLock::acquire(paths)?;
    let result = locked(
        paths,
        trust_domain,
        sentry_id,
        skew,
        (generation, rotation),
        now,
        None,
    );
    result.map(|(creds, origin)| (creds, origin.unwrap_or(Origin::Generated)))
}

/// Runs a first-start generation in `paths`' empty directory and stops right after `step`,
/// leaving the directory as a crash (kill -9, power loss) at that point would: for crash
/// tests of the recovery, which the next [`load_or_generate`] performs. Nothing else stops a
/// generation half way.
///
/// # Errors
///
/// As [`load_or_generate`].
pub fn interrupt_generation(
    paths: &StorePaths,
    trust_domain: &str,
    sentry_id: &str,
    now: SystemTime,
    step: Step,
) -> Result<(), StoreError> {
    fs::create_dir_all(&paths.dir).map_err(io_err(&paths.dir))?;
    locked(
        paths,
        trust_domain,
        sentry_id,
        Duration::ZERO,
        (Generation::default(), Rotation::Automatic),
        now,
        Some(step),
    )
    .map(|_| ())
}

/// The generation under the lock; `stop` ends it after that step (the result's origin is
/// `None` then).
fn locked(
    paths: &StorePaths,
    trust_domain: &str,
    sentry_id: &str,
    skew: Duration,
    (generation, rotation): (Generation, Rotation),
    now: SystemTime,
    stop: Option<Step>,
) -> Result<(Credentials, Option<Origin>), StoreError> {
    recover(paths)?;
    super::rotation::recover(paths, now).map_err(|e| match e {
        super::rotation::RotationError::Store(s) => s,
        other => StoreError::Rotation(other.to_string()),
    })?;
    // A dangling symlink or an unreadable entry counts as present: never generate over it.
    let (present, missing): (Vec<&Path>, Vec<&Path>) = paths
        .files()
        .into_iter()
        .partition(|p| fs::symlink_metadata(p).is_ok());
    if missing.is_empty() {
        return load(paths, now, sentry_id).map(|c| (c, Some(Origin::Loaded)));
    }
    if !present.is_empty() {
        return Err(StoreError::Partial {
            present: present.into_iter().map(Path::to_owned).collect(),
            missing: missing.into_iter().map(Path::to_owned).collect(),
        });
    }
    // A marker left from credentials removed since would not match the new issuer.
    let auto = paths.dir.join(AUTO);
    if auto.exists() {
        fs::remove_file(&auto).map_err(io_err(&auto))?;
    }
    let (creds, files) = Credentials::generate_with(trust_domain, sentry_id, now, skew, generation)
        .map_err(|source| StoreError::Invalid {
            dir: paths.dir.clone(),
            source,
        })?;
    let contents: [(&Path, &[u8], u32); 3] = [
        (&paths.ca, files.ca.as_bytes(), 0o644),
        (&paths.issuer_cert, files.issuer.as_bytes(), 0o644),
        (&paths.issuer_key, files.key.as_bytes(), 0o600),
    ];
    for (path, bytes, mode) in contents {
        write_synced(&staged(path), bytes, mode)?;
    }
    if rotation == Rotation::Automatic {
        write_synced(&staged(&auto), auto_marker(&files.issuer).as_bytes(), 0o644)?;
    }
    if stop == Some(Step::Staged) {
        return Ok((creds, None));
    }
    let marker = paths.dir.join(MARKER);
    write_synced(
        &marker,
        b"sigil: generation staged; renames pending\n",
        0o600,
    )?;
    sync_dirs(paths)?;
    if stop == Some(Step::Marked) {
        return Ok((creds, None));
    }
    if !roll_forward(paths, stop == Some(Step::Moved))? {
        return Ok((creds, None));
    }
    Ok((creds, Some(Origin::Generated)))
}

fn staged(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(STAGED);
    PathBuf::from(s)
}

/// Finishes or undoes an interrupted generation.
fn recover(paths: &StorePaths) -> Result<(), StoreError> {
    if paths.dir.join(MARKER).exists() {
        return roll_forward(paths, false).map(|_| ());
    }
    for f in generated(paths) {
        let s = staged(&f);
        if s.exists() {
            fs::remove_file(&s).map_err(io_err(&s))?;
        }
    }
    Ok(())
}

/// The files a generation writes: the three, then the automatic-rotation marker.
fn generated(paths: &StorePaths) -> [PathBuf; 4] {
    [
        paths.ca.clone(),
        paths.issuer_cert.clone(),
        paths.issuer_key.clone(),
        paths.dir.join(AUTO),
    ]
}

/// Moves the staged files into place and removes the marker; with `stop_after_first`, stops
/// after the first file moved (returns `false` then).
fn roll_forward(paths: &StorePaths, stop_after_first: bool) -> Result<bool, StoreError> {
    for f in generated(paths) {
        let f = f.as_path();
        let s = staged(f);
        if !s.exists() {
            continue;
        }
        if f.exists() {
            let same = fs::read(f).map_err(io_err(f))? == fs::read(&s).map_err(io_err(&s))?;
            if !same {
                return Err(StoreError::Conflict(f.to_owned()));
            }
            fs::remove_file(&s).map_err(io_err(&s))?;
        } else {
            // A hard link fails if the name exists, so a file that appeared since the check
            // is never replaced; then the staged copy goes.
            fs::hard_link(&s, f).map_err(|e| match e.kind() {
                io::ErrorKind::AlreadyExists => StoreError::Conflict(f.to_owned()),
                _ => StoreError::Io {
                    path: f.to_owned(),
                    source: e,
                },
            })?;
            fs::remove_file(&s).map_err(io_err(&s))?;
            if stop_after_first {
                sync_dirs(paths)?;
                return Ok(false);
            }
        }
    }
    sync_dirs(paths)?;
    let marker = paths.dir.join(MARKER);
    fs::remove_file(&marker).map_err(io_err(&marker))?;
    sync_dirs(paths)?;
    Ok(true)
}

fn write_synced(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StoreError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(bytes).map_err(io_err(path))?;
    f.sync_all().map_err(io_err(path))
}

fn sync_dirs(paths: &StorePaths) -> Result<(), StoreError> {
    for d in paths.directories() {
        File::open(&d)
            .and_then(|f| f.sync_all())
            .map_err(io_err(&d))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "spiffe://localhost/ns/default/dapr-sentry";

    fn gen(dir: &Path) -> Result<(Credentials, Origin), StoreError> {
        load_or_generate(
            &StorePaths::in_dir(dir),
            "localhost",
            ID,
            Duration::from_secs(900),
            Generation::default(),
            Rotation::Automatic,
            SystemTime::now(),
        )
    }

    #[test]
    fn generates_once_then_loads_the_same() {
        let t = tempfile::tempdir().unwrap();
        let (a, origin) = gen(t.path()).unwrap();
        assert_eq!(origin, Origin::Generated);
        let mode = |n: &str| {
            use std::os::unix::fs::PermissionsExt as _;
            fs::metadata(t.path().join(n)).unwrap().permissions().mode() & 0o777
        };
        assert_eq!(mode("issuer.key"), 0o600);
        assert_eq!(mode("ca.crt"), 0o644);
        let (b, origin) = gen(t.path()).unwrap();
        assert_eq!(origin, Origin::Loaded);
        assert_eq!(a.anchors(), b.anchors());
        assert!(!t.path().join(MARKER).exists());
    }

    #[test]
    fn a_partial_set_is_refused_and_left_alone() {
        let t = tempfile::tempdir().unwrap();
        fs::write(t.path().join("ca.crt"), "user file").unwrap();
        let e = gen(t.path()).unwrap_err();
        assert!(matches!(e, StoreError::Partial { .. }), "{e}");
        assert!(e.to_string().contains("issuer.key"), "{e}");
        assert_eq!(
            fs::read_to_string(t.path().join("ca.crt")).unwrap(),
            "user file"
        );
    }

    #[test]
    fn an_interrupted_generation_rolls_forward_or_back() {
        let t = tempfile::tempdir().unwrap();
        gen(t.path()).unwrap();
        let paths = StorePaths::in_dir(t.path());
        // Simulate a kill after the marker and one rename: two files staged, one in place.
        for f in [&paths.issuer_cert, &paths.issuer_key] {
            fs::rename(f, staged(f)).unwrap();
        }
        fs::write(t.path().join(MARKER), "x").unwrap();
        let (_, origin) = gen(t.path()).unwrap();
        assert_eq!(origin, Origin::Loaded);
        assert!(paths
            .files()
            .iter()
            .all(|f| f.exists() && !staged(f).exists()));
        // A kill before the marker: staged files only, deleted, then a fresh generation.
        let u = tempfile::tempdir().unwrap();
        let p = StorePaths::in_dir(u.path());
        fs::write(staged(&p.ca), "half").unwrap();
        let (_, origin) = gen(u.path()).unwrap();
        assert_eq!(origin, Origin::Generated);
        assert!(!staged(&p.ca).exists());
    }

    #[test]
    fn racing_starts_agree_on_one_root() {
        let t = tempfile::tempdir().unwrap();
        let roots: Vec<Vec<u8>> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| gen(t.path()).unwrap().0.anchors()[0].clone()))
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(roots.windows(2).all(|w| w[0] == w[1]));
    }
}
