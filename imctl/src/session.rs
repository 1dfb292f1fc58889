//! The login kept between runs: `session.json` in the state dir, readable by its owner only
//! (mode 0600), since the token speaks for the user.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
    pub token: String,
}

impl Session {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join("session.json")
    }

    pub fn load(dir: &Path) -> anyhow::Result<Session> {
        let path = Self::path(dir);
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("not logged in (no {}): run imctl login", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a session", path.display()))
    }

    /// Writes the session aside with mode 0600 from its creation, then renames it into place.
    pub fn save(dir: &Path, user: &str, token: &str) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let session = Session {
            user: user.to_owned(),
            token: token.to_owned(),
        };
        let aside = dir.join("session.json.tmp");
        let _ = std::fs::remove_file(&aside);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&aside)
            .with_context(|| format!("writing {}", aside.display()))?;
        file.write_all(serde_json::to_string(&session)?.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&aside, Self::path(dir))?;
        Ok(())
    }

    pub fn forget(dir: &Path) -> anyhow::Result<()> {
        std::fs::remove_file(Self::path(dir)).context("forgetting the session")
    }
}
