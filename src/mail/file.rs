//! The development default: every mail becomes an `.eml` file under `<data dir>/mail`.

use std::path::PathBuf;

use async_trait::async_trait;
use lettre::{AsyncFileTransport, AsyncTransport, Tokio1Executor};

use super::{DeliveryError, MailError, OutgoingMail, Transport};

pub struct FileTransport {
    dir: PathBuf,
    inner: AsyncFileTransport<Tokio1Executor>,
}

impl FileTransport {
    pub fn new(dir: PathBuf) -> Result<Self, MailError> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| MailError::Setup(format!("{}: {e}", dir.display())))?;
        Ok(Self {
            inner: AsyncFileTransport::new(&dir),
            dir,
        })
    }
}

#[async_trait]
impl Transport for FileTransport {
    fn name(&self) -> &'static str {
        "file"
    }

    async fn send(&self, mail: &OutgoingMail) -> Result<(), DeliveryError> {
        let message = mail
            .to_message()
            .map_err(|e| DeliveryError::Permanent(e.to_string()))?;
        let id = self
            .inner
            .send(message)
            .await
            .map_err(|e| DeliveryError::Transient {
                reason: e.to_string(),
                retry_after: None,
            })?;
        // The path, never the link: logs must not carry sign-in secrets.
        tracing::info!(path = %self.dir.join(format!("{id}.eml")).display(), "mail written");
        Ok(())
    }

    /// Writes and removes a file where the mails go.
    async fn probe(&self) -> Result<String, String> {
        let probe = self.dir.join(".gatehouse-check");
        let cannot = |e: std::io::Error| format!("cannot write in {}: {e}", self.dir.display());
        tokio::fs::write(&probe, b"check").await.map_err(cannot)?;
        tokio::fs::remove_file(&probe).await.map_err(cannot)?;
        Ok(format!("file: {} is writable", self.dir.display()))
    }
}
