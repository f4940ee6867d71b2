//! A download's bytes on their way from the task that reads them out of the database to
//! the client: a few chunks in memory, and once the client falls behind, the rest in an
//! unnamed temporary file.
//!
//! The reading task therefore never waits for the client (until the client is behind by
//! a whole spool, `exports.spool_mib`), and the database connection it holds is given
//! back as soon as the rows are read, however slowly the client takes them — or if it
//! never does. The file has no name (`O_TMPFILE` where the system offers it), so it goes
//! with the download, also when the process is killed.
//!
//! One writer, one reader. Chunks go to memory while nothing has been spilled; once a
//! chunk goes to the file, every later one does too, so the reader takes memory first,
//! then the file in order.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

/// Chunks held in memory before the download spills to its file: with the renderers'
/// 64 KiB chunks, 256 KiB per download.
const MEMORY_CHUNKS: usize = 4;

/// The most bytes handed to the client per read from the file.
const READ_BYTES: u64 = 64 * 1024;

/// A new spool holding at most `limit` bytes on disk ahead of its reader.
pub fn spool(limit: u64) -> (SpoolWriter, SpoolReader) {
    let shared = Arc::new(Shared {
        state: Mutex::default(),
        readable: Notify::new(),
        writable: Notify::new(),
        limit: limit.max(1),
    });
    (
        SpoolWriter(Arc::clone(&shared)),
        SpoolReader {
            shared,
            done: false,
        },
    )
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the reader: a chunk arrived, or the end.
    readable: Notify,
    /// Wakes the writer: the reader took something, or went away.
    writable: Notify,
    limit: u64,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[derive(Default)]
struct State {
    memory: VecDeque<Bytes>,
    file: Option<Arc<File>>,
    /// Bytes written to the file, and bytes of it the reader has taken.
    written: u64,
    read: u64,
    /// How the download ended, once it has: `Err` carries the reason it stopped early.
    end: Option<Result<(), String>>,
    reader_gone: bool,
}

/// The writing end: a [`crate::report::Sink`].
pub struct SpoolWriter(Arc<Shared>);

impl SpoolWriter {
    /// Ends the download: whole when `outcome` is `Ok`, otherwise broken off with the
    /// reason (the client sees a failed transfer). Only the first end counts.
    pub fn end(&self, outcome: Result<(), String>) {
        let mut state = self.0.state();
        if state.end.is_none() {
            state.end = Some(outcome);
        }
        drop(state);
        self.0.readable.notify_one();
    }

    /// A second handle on the same spool, for ending it after the first was moved into
    /// the task that writes.
    pub fn handle(&self) -> SpoolWriter {
        SpoolWriter(Arc::clone(&self.0))
    }

    async fn write(&self, chunk: Bytes) -> io::Result<()> {
        let len = chunk.len() as u64;
        let file = loop {
            // Registered before the look at the state, so a wake-up between the two is
            // not missed.
            let progress = self.0.writable.notified();
            {
                let mut state = self.0.state();
                if state.reader_gone {
                    return Err(io::Error::new(
                        io::ErrorKind::BrokenPipe,
                        "the client went away",
                    ));
                }
                if state.file.is_none() && state.memory.len() < MEMORY_CHUNKS {
                    state.memory.push_back(chunk);
                    drop(state);
                    self.0.readable.notify_one();
                    return Ok(());
                }
                let behind = state.written - state.read;
                // A chunk larger than the whole spool still goes, once the reader has
                // caught up.
                if behind == 0 || behind + len <= self.0.limit {
                    break state.file.clone();
                }
            }
            progress.await;
        };
        let file = match file {
            Some(file) => file,
            None => {
                let file = Arc::new(
                    crate::tasks::spawn_blocking(tempfile::tempfile)
                        .await
                        .map_err(io::Error::other)??,
                );
                self.0.state().file = Some(Arc::clone(&file));
                file
            }
        };
        // Only this writer moves `written`, so the offset cannot change meanwhile.
        let offset = self.0.state().written;
        crate::tasks::spawn_blocking(move || file.write_all_at(&chunk, offset))
            .await
            .map_err(io::Error::other)??;
        self.0.state().written += len;
        self.0.readable.notify_one();
        Ok(())
    }
}

impl crate::report::Sink for SpoolWriter {
    async fn send(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        self.write(Bytes::from(chunk)).await
    }
}

/// The reading end, for the response body. Dropping it (the client went away) stops
/// the writer at its next chunk.
pub struct SpoolReader {
    shared: Arc<Shared>,
    done: bool,
}

impl SpoolReader {
    /// The next chunk; an error when the download was broken off; `None` at its end.
    pub async fn next(&mut self) -> Option<io::Result<Bytes>> {
        if self.done {
            return None;
        }
        loop {
            let arrived = self.shared.readable.notified();
            let from_file = {
                let mut state = self.shared.state();
                if let Some(chunk) = state.memory.pop_front() {
                    drop(state);
                    self.shared.writable.notify_one();
                    return Some(Ok(chunk));
                }
                if state.read < state.written {
                    let len = (state.written - state.read).min(READ_BYTES);
                    state.file.clone().map(|file| (file, state.read, len))
                } else {
                    match &state.end {
                        Some(Ok(())) => {
                            self.done = true;
                            return None;
                        }
                        Some(Err(reason)) => {
                            self.done = true;
                            return Some(Err(io::Error::other(reason.clone())));
                        }
                        None => None,
                    }
                }
            };
            if let Some((file, offset, len)) = from_file {
                let read = crate::tasks::spawn_blocking(move || {
                    let mut buf = vec![0; usize::try_from(len).unwrap_or(usize::MAX)];
                    file.read_exact_at(&mut buf, offset).map(|()| buf)
                })
                .await
                .map_err(io::Error::other)
                .and_then(|read| read);
                return Some(match read {
                    Ok(buf) => {
                        self.shared.state().read += len;
                        self.shared.writable.notify_one();
                        Ok(Bytes::from(buf))
                    }
                    Err(error) => {
                        self.done = true;
                        Err(error)
                    }
                });
            }
            arrived.await;
        }
    }
}

impl Drop for SpoolReader {
    fn drop(&mut self) {
        self.shared.state().reader_gone = true;
        self.shared.writable.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::report::Sink;

    fn chunk(i: usize, len: usize) -> Vec<u8> {
        vec![u8::try_from(i % 251).unwrap(); len]
    }

    async fn read_all(reader: &mut SpoolReader) -> Result<Vec<u8>, io::Error> {
        let mut all = Vec::new();
        while let Some(chunk) = reader.next().await {
            all.extend_from_slice(&chunk?);
        }
        Ok(all)
    }

    #[tokio::test]
    async fn a_writer_finishes_without_a_reader_taking_anything_and_the_reader_gets_it_all_in_order()
     {
        let (mut writer, mut reader) = spool(64 * 1024 * 1024);
        let mut expected = Vec::new();
        // Far more than the memory holds: the rest goes to the file.
        for i in 0..40 {
            let data = chunk(i, 10_000 + i);
            expected.extend_from_slice(&data);
            tokio::time::timeout(Duration::from_secs(10), writer.send(data))
                .await
                .expect("the writer never waits for the reader while the spool has room")
                .unwrap();
        }
        writer.end(Ok(()));
        assert!(writer.0.state().file.is_some(), "it spilled to a file");
        assert_eq!(read_all(&mut reader).await.unwrap(), expected);
        assert!(reader.next().await.is_none(), "and stays ended");
    }

    #[tokio::test]
    async fn a_full_spool_makes_the_writer_wait_for_the_reader() {
        let (mut writer, mut reader) = spool(30_000);
        for i in 0..MEMORY_CHUNKS + 3 {
            writer.send(chunk(i, 10_000)).await.unwrap();
        }
        let next = writer.send(chunk(99, 10_000));
        tokio::pin!(next);
        assert!(
            futures::poll!(next.as_mut()).is_pending(),
            "30,000 bytes are on disk: the writer waits"
        );
        // The memory chunks do not free room on disk; the first file chunk does.
        for _ in 0..MEMORY_CHUNKS {
            reader.next().await.unwrap().unwrap();
        }
        assert!(futures::poll!(next.as_mut()).is_pending());
        reader.next().await.unwrap().unwrap();
        tokio::time::timeout(Duration::from_secs(10), next)
            .await
            .expect("the reader made room")
            .unwrap();
    }

    #[tokio::test]
    async fn a_broken_off_download_ends_with_an_error_after_what_was_written() {
        let (mut writer, mut reader) = spool(1024 * 1024);
        writer.send(b"partial".to_vec()).await.unwrap();
        writer.handle().end(Err("it took too long".into()));
        writer.end(Ok(()));
        assert_eq!(&reader.next().await.unwrap().unwrap()[..], b"partial");
        let error = reader.next().await.unwrap().unwrap_err();
        assert_eq!(
            error.to_string(),
            "it took too long",
            "the first end counts"
        );
        assert!(reader.next().await.is_none());
    }

    #[tokio::test]
    async fn the_writer_stops_once_the_reader_is_gone() {
        let (mut writer, reader) = spool(1024 * 1024);
        writer.send(chunk(1, 100)).await.unwrap();
        drop(reader);
        let error = writer.send(chunk(2, 100)).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }
}
