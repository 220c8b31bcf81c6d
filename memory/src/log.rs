//! An append-only JSONL log kept in the object store.
//!
//! Object stores cannot append, so a log is a compacted base object
//! `<name>.jsonl` plus segments `<name>/<time>-<unique>.jsonl`, each written
//! whole by one PUT (atomic on every backend, never torn, and safe for several
//! replicas since names never collide). Replay reads the base, then the
//! segments in name (time) order. Compaction folds everything into a new base
//! and deletes the segments it read; segments written meanwhile stay.
//!
//! Lines that do not parse (corruption, a truncated tail from a hand copy) are
//! skipped and counted, never fatal.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use lakehouse_retrieval::objects::Objects;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{MemoryError, Result};

/// What a replay found.
#[derive(Debug)]
pub struct Replay<T> {
    /// Records in log order.
    pub records: Vec<T>,
    /// Lines that could not be read.
    pub skipped: u64,
    /// Segment keys read (what a compaction may delete).
    pub segments: Vec<String>,
}

#[derive(Debug)]
pub struct JsonlLog {
    objects: Objects,
    name: String,
    counter: AtomicU64,
}

fn unix_micros() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

impl JsonlLog {
    /// A log named like `memory/pathway`.
    pub fn new(objects: Objects, name: &str) -> Self {
        Self {
            objects,
            name: name.trim_end_matches('/').to_owned(),
            counter: AtomicU64::new(0),
        }
    }

    pub fn base_key(&self) -> String {
        format!("{}.jsonl", self.name)
    }

    fn encode<T: Serialize>(records: &[T]) -> Result<Bytes> {
        // Room for a typical line each, so a segment of hundreds of records
        // is not copied again at every doubling.
        let mut out = Vec::with_capacity(records.len() * 512);
        for record in records {
            serde_json::to_writer(&mut out, record)
                .map_err(|e| MemoryError::InvalidInput(format!("cannot encode a record: {e}")))?;
            out.push(b'\n');
        }
        Ok(Bytes::from(out))
    }

    /// Writes `records` as one new segment.
    pub async fn append<T: Serialize>(&self, records: &[T]) -> Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        self.append_encoded(Self::encode(records)?).await
    }

    /// Writes `lines` (records already encoded, one JSON object and `\n`
    /// each) as one new segment: for writers that encode their records by hand.
    pub async fn append_encoded(&self, lines: Bytes) -> Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let key = format!(
            "{}/{:020}-{}-{n:06}.jsonl",
            self.name,
            unix_micros(),
            lakehouse_providers::openai::new_id("")
        );
        self.objects.put(&key, lines).await?;
        Ok(())
    }

    /// Reads the base and every segment.
    pub async fn replay<T: DeserializeOwned>(&self) -> Result<Replay<T>> {
        let mut replay = Replay {
            records: Vec::new(),
            skipped: 0,
            segments: Vec::new(),
        };
        if let Some(base) = self.objects.get_opt(&self.base_key()).await? {
            parse_into(&base, &mut replay);
        }
        let prefix = format!("{}/", self.name);
        for info in self.objects.list(&self.name).await? {
            if !info.key.starts_with(&prefix) || !info.key.ends_with(".jsonl") {
                continue;
            }
            replay.segments.push(info.key);
        }
        replay.segments.sort();
        for key in replay.segments.clone() {
            // A segment deleted by a concurrent compaction is in the new base.
            if let Some(bytes) = self.objects.get_opt(&key).await? {
                parse_into(&bytes, &mut replay);
            }
        }
        Ok(replay)
    }

    /// Folds the log into one base object holding the last record of every
    /// key, in first-seen order. The log is read afresh (so other replicas'
    /// segments are kept); segments written meanwhile are left for next time.
    pub async fn compact<T, K>(&self, key: K) -> Result<CompactReport>
    where
        T: Serialize + DeserializeOwned,
        K: Fn(&T) -> String,
    {
        let replay = self.replay::<T>().await?;
        let lines_before = replay.records.len();
        let mut latest: HashMap<String, T> = HashMap::new();
        let mut order = Vec::new();
        for record in replay.records {
            let k = key(&record);
            if !latest.contains_key(&k) {
                order.push(k.clone());
            }
            latest.insert(k, record);
        }
        let records: Vec<T> = order.iter().filter_map(|k| latest.remove(k)).collect();
        self.objects
            .put(&self.base_key(), Self::encode(&records)?)
            .await?;
        for segment in &replay.segments {
            if let Err(e) = self.objects.delete(segment).await {
                tracing::warn!("compaction left segment {segment}: {e}");
            }
        }
        Ok(CompactReport {
            lines_before,
            records: records.len(),
            segments_removed: replay.segments.len(),
            skipped_lines: replay.skipped,
        })
    }
}

/// What a compaction did.
#[derive(Debug, Clone, Serialize)]
pub struct CompactReport {
    pub lines_before: usize,
    pub records: usize,
    pub segments_removed: usize,
    /// Unreadable lines dropped.
    pub skipped_lines: u64,
}

fn parse_into<T: DeserializeOwned>(bytes: &[u8], replay: &mut Replay<T>) {
    for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(record) => replay.records.push(record),
            Err(e) => {
                replay.skipped += 1;
                tracing::warn!("skipping unreadable log line {}: {e}", n + 1);
            }
        }
    }
}
