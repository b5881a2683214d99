//! The device's journal: one line per change whose save or delete had returned, written and
//! fsynced right after it returned, in plan order. After a SIGKILL it says exactly which changes
//! had returned: the device resumes after the last line, and the harness checks the final states
//! against it.

use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt as _;

/// Why a journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file could not be read or written; the path says which (check the disk).
    #[error("journal {path}: {source}")]
    Io {
        /// The journal file.
        path: PathBuf,
        /// What the file system said.
        #[source]
        source: std::io::Error,
    },
    /// A line is not the next change of the plan: the journal was written by another plan or
    /// damaged; start the run again in an empty directory.
    #[error("journal {path}: line {line} says change {found}, expected {expected}")]
    OutOfOrder {
        /// The journal file.
        path: PathBuf,
        /// The line (from 1).
        line: u64,
        /// The change the line should name.
        expected: u64,
        /// What it names.
        found: String,
    },
}

/// How many changes a journal's text records: its complete lines, which must count up from 0. A
/// last line without its newline (the process was killed while writing it) does not count.
pub fn journaled(path: &Path, text: &str) -> Result<u64, JournalError> {
    let complete = match text.rfind('\n') {
        Some(end) => &text[..end],
        None => "",
    };
    let mut count = 0u64;
    for line in complete.split('\n').filter(|l| !l.is_empty()) {
        if line.trim().parse::<u64>().ok() != Some(count) {
            return Err(JournalError::OutOfOrder {
                path: path.to_owned(),
                line: count + 1,
                expected: count,
                found: line.to_owned(),
            });
        }
        count += 1;
    }
    Ok(count)
}

/// Reads a journal file: how many changes it records (0 when there is no file yet).
pub async fn read(path: &Path) -> Result<u64, JournalError> {
    match tokio::fs::read_to_string(path).await {
        Ok(text) => journaled(path, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(0),
        Err(source) => Err(JournalError::Io {
            path: path.to_owned(),
            source,
        }),
    }
}

/// An open journal, appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: tokio::fs::File,
    next: u64,
}

impl Journal {
    /// Opens (or creates) the journal at `path`, dropping a torn last line.
    pub async fn open(path: &Path) -> Result<Journal, JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_owned(),
            source,
        };
        let text = match tokio::fs::read_to_string(path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(io(e)),
        };
        let next = journaled(path, &text)?;
        let keep = text.rfind('\n').map_or(0, |end| end + 1);
        let file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .await
            .map_err(io)?;
        if keep < text.len() {
            file.set_len(keep as u64).await.map_err(io)?;
            file.sync_all().await.map_err(io)?;
        }
        Ok(Journal {
            path: path.to_owned(),
            file,
            next,
        })
    }

    /// The index of the next change to make (the number of changes recorded).
    pub fn next(&self) -> u64 {
        self.next
    }

    /// Records that change `index` (the next one) returned: on disk when this returns.
    pub async fn record(&mut self, index: u64) -> Result<(), JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        if index != self.next {
            return Err(JournalError::OutOfOrder {
                path: self.path.clone(),
                line: self.next + 1,
                expected: self.next,
                found: index.to_string(),
            });
        }
        self.file
            .write_all(format!("{index}\n").as_bytes())
            .await
            .map_err(io)?;
        self.file.flush().await.map_err(io)?;
        self.file.sync_data().await.map_err(io)?;
        self.next += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_journal_resumes_after_its_last_complete_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let mut journal = Journal::open(&path).await.unwrap();
        assert_eq!(journal.next(), 0);
        journal.record(0).await.unwrap();
        journal.record(1).await.unwrap();
        assert!(journal.record(5).await.is_err(), "only the next change");
        drop(journal);
        // A kill while writing line 3 leaves it torn.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push('2');
        std::fs::write(&path, &text).unwrap();
        assert_eq!(read(&path).await.unwrap(), 2);
        let mut journal = Journal::open(&path).await.unwrap();
        assert_eq!(journal.next(), 2);
        journal.record(2).await.unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "0\n1\n2\n");
        assert_eq!(read(&dir.path().join("none")).await.unwrap(), 0);
    }

    #[test]
    fn a_line_out_of_order_is_refused() {
        let path = Path::new("j");
        assert_eq!(journaled(path, "0\n1\n").unwrap(), 2);
        assert!(matches!(
            journaled(path, "0\n2\n"),
            Err(JournalError::OutOfOrder { line: 2, .. })
        ));
    }
}
