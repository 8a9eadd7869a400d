//! Secrets sealed at rest: AES-256-GCM under a master key, with the key id in every ciphertext so
//! that keys can rotate.
//!
//! A sealed value reads `tsk1:<key id>:<base64url(nonce ‖ ciphertext)>`. The associated data binds
//! it to its place (`tenant/<id>/client_secret`), so a ciphertext copied into another row or column
//! does not open. Plaintext never leaves this module except to the code that asked to open it.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::aead::{Aead, KeyInit, OsRng, Payload};
use aes_gcm::{AeadCore, Aes256Gcm, Nonce};
use anyhow::Context as _;
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore as _;
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::error::{AppError, AppResult};

const PREFIX: &str = "tsk1";

/// One 256-bit master key and its id.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    cipher: Aes256Gcm,
    bytes: [u8; 32],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MasterKey({})", self.id)
    }
}

impl MasterKey {
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        let digest = Sha256::digest(bytes);
        Self {
            id: hex::encode(&digest[..4]),
            cipher: Aes256Gcm::new(&bytes.into()),
            bytes,
        }
    }

    pub fn generate() -> Self {
        let mut bytes = [0u8; 32];
        OsRng.fill_bytes(&mut bytes);
        Self::from_bytes(bytes)
    }

    /// Parses the base64 text form (as in `TENANTRY_MASTER_KEY` or a key file).
    pub fn from_base64(text: &str) -> anyhow::Result<Self> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| anyhow::anyhow!("a master key must be base64"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|_| {
            anyhow::anyhow!("a master key must be 32 bytes (base64 of 32 random bytes)")
        })?;
        Ok(Self::from_bytes(bytes))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.bytes)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn read_file(path: &Path) -> anyhow::Result<Self> {
        let text = fs::read_to_string(path)
            .with_context(|| format!("reading master key file {}", path.display()))?;
        Self::from_base64(&text).with_context(|| format!("master key file {}", path.display()))
    }

    /// Writes the key to a new file readable by its owner only.
    pub fn write_new_file(&self, path: &Path) -> anyhow::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating master key file {}", path.display()))?;
        writeln!(file, "{}", self.to_base64())?;
        file.sync_all()?;
        Ok(())
    }
}

/// The keys in effect: the primary seals, every key opens what it sealed.
#[derive(Debug, Clone)]
pub struct Keyring {
    primary: MasterKey,
    others: Vec<MasterKey>,
    /// Where the primary key came from, when it came from a file.
    pub key_file: Option<PathBuf>,
}

/// What [`Keyring::load`] found worth telling the operator.
#[derive(Debug, Default)]
pub struct KeyringNotes {
    pub generated_dev_key: Option<PathBuf>,
    pub loose_permissions: Option<PathBuf>,
}

impl Keyring {
    pub fn new(primary: MasterKey, others: Vec<MasterKey>) -> Self {
        Self {
            primary,
            others,
            key_file: None,
        }
    }

    /// Loads the master key from `master_key`, else `master_key_file`, else the default file in the
    /// data directory, which is generated (mode 0600) when it does not exist yet.
    pub fn load(config: &Config) -> anyhow::Result<(Keyring, KeyringNotes)> {
        let mut notes = KeyringNotes::default();
        let mut others = config
            .previous_master_keys
            .iter()
            .map(|k| MasterKey::from_base64(k).context("previous_master_keys"))
            .collect::<anyhow::Result<Vec<_>>>()?;
        if let Some(text) = &config.master_key {
            let primary = MasterKey::from_base64(text).context("TENANTRY_MASTER_KEY")?;
            return Ok((Keyring::new(primary, others), notes));
        }
        let path = match &config.master_key_file {
            Some(path) => {
                anyhow::ensure!(
                    path.is_file(),
                    "master key file {} does not exist",
                    path.display()
                );
                path.clone()
            }
            None => {
                let path = config.data_dir.join("master.key");
                if !path.exists() {
                    fs::create_dir_all(&config.data_dir).with_context(|| {
                        format!("creating data directory {}", config.data_dir.display())
                    })?;
                    MasterKey::generate().write_new_file(&path)?;
                    notes.generated_dev_key = Some(path.clone());
                }
                path
            }
        };
        let mode = fs::metadata(&path)?.permissions().mode();
        if mode & 0o077 != 0 {
            notes.loose_permissions = Some(path.clone());
        }
        let primary = MasterKey::read_file(&path)?;
        others.extend(companion_keys(&path)?);
        let mut ring = Keyring::new(primary, others);
        ring.key_file = Some(path);
        Ok((ring, notes))
    }

    pub fn primary_id(&self) -> &str {
        self.primary.id()
    }

    /// Seals `plaintext` for the place named by `context`.
    pub fn seal(&self, plaintext: &str, context: &str) -> String {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let ciphertext = self
            .primary
            .cipher
            .encrypt(
                &nonce,
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: context.as_bytes(),
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        let mut blob = nonce.to_vec();
        blob.extend_from_slice(&ciphertext);
        format!(
            "{PREFIX}:{}:{}",
            self.primary.id,
            URL_SAFE_NO_PAD.encode(blob)
        )
    }

    /// Opens a value sealed by [`Keyring::seal`] for the same `context`.
    pub fn open(&self, sealed: &str, context: &str) -> AppResult<String> {
        let mut parts = sealed.splitn(3, ':');
        let (Some(PREFIX), Some(kid), Some(body)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(AppError::internal(anyhow::anyhow!(
                "a sealed value at {context} is malformed"
            )));
        };
        let key = std::iter::once(&self.primary)
            .chain(&self.others)
            .find(|k| k.id == kid)
            .ok_or_else(|| {
                AppError::internal(anyhow::anyhow!(
                    "the secret at {context} is sealed with master key {kid}, which is not loaded"
                ))
            })?;
        let blob = URL_SAFE_NO_PAD.decode(body).map_err(|_| {
            AppError::internal(anyhow::anyhow!("a sealed value at {context} is malformed"))
        })?;
        if blob.len() <= 12 {
            return Err(AppError::internal(anyhow::anyhow!(
                "a sealed value at {context} is truncated"
            )));
        }
        let (nonce, ciphertext) = blob.split_at(12);
        let plaintext = key
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| {
                AppError::internal(anyhow::anyhow!(
                    "the secret at {context} does not open with master key {kid} (tampered or misplaced)"
                ))
            })?;
        String::from_utf8(plaintext).map_err(|_| {
            AppError::internal(anyhow::anyhow!("the secret at {context} is not UTF-8"))
        })
    }

    /// A copy of this ring with `primary` sealing and every current key still opening.
    pub fn rotated_to(&self, primary: MasterKey) -> Keyring {
        let mut others = vec![self.primary.clone()];
        others.extend(self.others.iter().cloned());
        Keyring {
            primary,
            others,
            key_file: self.key_file.clone(),
        }
    }
}

/// Keys left beside the key file by a rotation (`.next` while it runs, `.retired-<id>` after): they
/// open values sealed before a rotation, or by one interrupted between commit and file rename.
fn companion_keys(path: &Path) -> anyhow::Result<Vec<MasterKey>> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let mut keys = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let file = entry.file_name();
        let Some(file) = file.to_str() else { continue };
        if file == format!("{name}.next") || file.starts_with(&format!("{name}.retired-")) {
            keys.push(MasterKey::read_file(&entry.path())?);
        }
    }
    Ok(keys)
}

/// A short, stable fingerprint of a secret, safe to show: the first 8 hex digits of a domain-
/// separated SHA-256, enough to tell two secrets apart, far too short to confirm a guess.
pub fn fingerprint(secret: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"tenantry-fingerprint\0")
        .chain_update(secret.as_bytes())
        .finalize();
    hex::encode(&digest[..4])
}

/// Shared handle to the keyring.
pub type SharedKeyring = Arc<Keyring>;
