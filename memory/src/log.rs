//! An append-only JSONL log kept in the object store.
//!
//! Object stores cannot append, so a log is a compacted base object
//! `<name>.jsonl` plus segments `<name>/<time>-<unique>.jsonl`, each written
//! whole by one PUT (atomic on every backend, never torn, and safe for several
//! replicas since names never collide). Replay reads the base, then the
//! segments in name (time) order. Compaction folds everything into a new base
//! and deletes the segments it read; segments written meanwhile stay.
//!
//! Replay is safe against a compaction in another replica. A base written by
//! compaction starts with a header line naming the segments folded into it.
//! Replay lists the segments first, then reads the base, and skips the
//! segments its header names (still there until the compaction deletes them).
//! A listed segment that is gone and not named was folded into a base newer
//! than the one read, so the replay starts again.
//! Retention ([`JsonlLog::prune_before`]) deletes whole segments by the time
//! their name starts with, so it reads nothing.
//!
//! Lines that do not parse (corruption, a truncated tail from a hand copy) are
//! skipped and counted, never fatal.

use std::collections::{HashMap, HashSet};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use lakehouse_retrieval::StoreError;
use lakehouse_retrieval::objects::Objects;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

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
    /// The time the last segment was named by ([`JsonlLog::segment_micros`]).
    last_micros: AtomicU64,
}

/// How long a compaction's lease keeps other replicas from compacting the
/// same log; an older lease was left by a replica that stopped mid-way.
const COMPACTION_LEASE: Duration = Duration::from_secs(600);

/// How long a claim to take over a stale lease keeps other replicas from
/// taking it over too; a takeover is a read, a delete and a write, so an
/// older claim was left by a replica that stopped in between.
const TAKEOVER_CLAIM: Duration = Duration::from_secs(60);

/// How many claims left by stopped replicas a takeover walks past.
const TAKEOVER_LINKS: usize = 4;

/// How many times a replay starts again when compactions keep folding the
/// segments it listed; past that it fails with a conflict.
const REPLAY_ATTEMPTS: usize = 5;

/// The first line of a base written by compaction: the segment keys folded
/// into it. The field name is one no record has, so a header is never read
/// as a record.
#[derive(Serialize, Deserialize)]
struct BaseHeader {
    lakehouse_log_base: Folded,
}

#[derive(Serialize, Deserialize)]
struct Folded {
    folded: Vec<String>,
}

const HEADER_START: &[u8] = b"{\"lakehouse_log_base\":";

/// The segments a base names as folded into it, and its record lines.
/// A base without a header (written before headers, or by hand) folded
/// nothing that could still be listed.
fn split_base(base: &[u8]) -> Result<(HashSet<String>, &[u8])> {
    if !base.starts_with(HEADER_START) {
        return Ok((HashSet::new(), base));
    }
    let end = base.iter().position(|b| *b == b'\n').unwrap_or(base.len());
    let header: BaseHeader = serde_json::from_slice(&base[..end])
        .map_err(|e| MemoryError::InvalidInput(format!("unreadable log base header: {e}")))?;
    let rest = base.get(end + 1..).unwrap_or_default();
    Ok((header.lakehouse_log_base.folded.into_iter().collect(), rest))
}

/// The body of a compaction lease.
#[derive(Deserialize)]
struct Lease {
    since_ms: u64,
    #[serde(default)]
    holder: String,
}

async fn read_lease(objects: &Objects, key: &str) -> Result<Option<Lease>> {
    Ok(objects
        .get_opt(key)
        .await?
        .and_then(|held| serde_json::from_slice::<Lease>(&held).ok()))
}

/// A compaction lease this process holds. Given back after the compaction,
/// or, when the compaction is dropped part-way (its request cancelled), by a
/// task spawned on drop, so that other replicas need not wait out
/// [`COMPACTION_LEASE`].
#[derive(Debug)]
struct CompactionLease {
    objects: Objects,
    key: String,
    holder: String,
    held: bool,
}

impl CompactionLease {
    async fn give_back(mut self) {
        self.held = false;
        release_lease(&self.objects, &self.key, &self.holder).await;
    }
}

impl Drop for CompactionLease {
    fn drop(&mut self) {
        if !self.held {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (objects, key, holder) = (
            self.objects.clone(),
            std::mem::take(&mut self.key),
            std::mem::take(&mut self.holder),
        );
        runtime.spawn(async move { release_lease(&objects, &key, &holder).await });
    }
}

/// Deletes the lease at `key` if `holder` still holds it: a compaction that
/// ran past [`COMPACTION_LEASE`] may have been taken over meanwhile.
async fn release_lease(objects: &Objects, key: &str, holder: &str) {
    match read_lease(objects, key).await {
        Ok(Some(lease)) if lease.holder == holder => {
            if let Err(e) = objects.delete(key).await {
                tracing::warn!("compaction could not give back its lease {key}: {e}");
            }
        }
        Ok(_) => tracing::warn!("compaction lease {key} was taken over before it ended"),
        Err(e) => tracing::warn!("compaction could not read its lease {key}: {e}"),
    }
}

/// How long ago a lease or claim was taken; `None` when it cannot be read
/// (treated as stale: nothing of ours writes such a body).
fn age(body: &[u8], now: u64) -> Option<Duration> {
    let lease = serde_json::from_slice::<Lease>(body).ok()?;
    Some(Duration::from_millis(now.saturating_sub(lease.since_ms)))
}

/// 64-bit FNV-1a: names a takeover claim after the bytes of what it claims,
/// the same in every replica and every build.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
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
            last_micros: AtomicU64::new(0),
        }
    }

    /// The time a new segment is named by: now, or just after this log's
    /// last segment when the clock stepped back, so that a reader meets its
    /// segments in the order they were written (later records may refer to
    /// earlier ones).
    fn segment_micros(&self) -> u64 {
        let now = u64::try_from(unix_micros()).unwrap_or(u64::MAX);
        let next = |last: u64| now.max(last.saturating_add(1));
        match self
            .last_micros
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
                Some(next(last))
            }) {
            Ok(last) | Err(last) => next(last),
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
            lakehouse_providers::encode::write_value(&mut out, record)
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
        self.append_encoded(vec![Self::encode(records)?]).await
    }

    /// Writes `parts` (records already encoded, one JSON object and `\n`
    /// each, in parts that end at a line's end) as one new segment: for
    /// writers that encode their records by hand.
    pub async fn append_encoded(&self, parts: Vec<Bytes>) -> Result<()> {
        if parts.iter().all(Bytes::is_empty) {
            return Ok(());
        }
        self.write_segment(&self.new_segment_key(), parts).await
    }

    /// The key of a new segment, after every segment named before it.
    pub fn new_segment_key(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "{}/{:020}-{}-{n:06}.jsonl",
            self.name,
            self.segment_micros(),
            lakehouse_providers::openai::new_id("")
        )
    }

    /// The key of the segment whose file name (the key's last part) is
    /// `file_name`, as [`new_segment_key`] named it.
    ///
    /// [`new_segment_key`]: Self::new_segment_key
    pub fn segment_key(&self, file_name: &str) -> String {
        format!("{}/{file_name}", self.name)
    }

    /// Writes `parts` (as [`append_encoded`]) as the segment `key`, from
    /// [`new_segment_key`]: a writer that tries a refused segment again does
    /// so under the same key, so that a write that was in fact stored is
    /// not kept twice.
    ///
    /// [`append_encoded`]: Self::append_encoded
    /// [`new_segment_key`]: Self::new_segment_key
    pub async fn write_segment(&self, key: &str, parts: Vec<Bytes>) -> Result<()> {
        self.objects.put_parts(key, parts).await?;
        Ok(())
    }

    /// Reads the base and every segment not folded into it, starting again
    /// when a compaction elsewhere folds listed segments meanwhile.
    pub async fn replay<T: DeserializeOwned>(&self) -> Result<Replay<T>> {
        for _ in 0..REPLAY_ATTEMPTS {
            let listed = self.segment_keys().await?;
            if let Some(replay) = self.read_listed(listed).await? {
                return Ok(replay);
            }
        }
        Err(StoreError::Conflict(format!(
            "{} was compacted elsewhere {REPLAY_ATTEMPTS} times while it was read; try again",
            self.name
        ))
        .into())
    }

    /// Reads the base, then the `listed` segments its header does not name.
    /// `None` when one of those is gone: a compaction newer than the base
    /// read has folded it (or retention removed it), so the caller lists again.
    async fn read_listed<T: DeserializeOwned>(
        &self,
        listed: Vec<String>,
    ) -> Result<Option<Replay<T>>> {
        let mut replay = Replay {
            records: Vec::new(),
            skipped: 0,
            segments: Vec::new(),
        };
        let mut folded = HashSet::new();
        if let Some(base) = self.objects.get_opt(&self.base_key()).await? {
            let (named, records) = split_base(&base)?;
            folded = named;
            replay.skipped += parse_lines(records, &mut replay.records);
        }
        for key in &listed {
            if folded.contains(key) {
                continue;
            }
            let Some(bytes) = self.objects.get_opt(key).await? else {
                return Ok(None);
            };
            replay.skipped += parse_lines(&bytes, &mut replay.records);
        }
        // Every listed segment is the compaction's to delete, folded or not.
        replay.segments = listed;
        Ok(Some(replay))
    }

    /// Reads the log from its end: `take` gets the records of each segment
    /// (in log order), newest segment first and the base last, until it
    /// answers `Break`. For readers that want only the tail of a long log,
    /// which `replay` would read (and hold) whole. Returns the number of
    /// lines that could not be read. Meant for logs that are pruned, not
    /// compacted: a compaction elsewhere during the read may hand over the
    /// records of a folded segment twice, once from it and once from the base.
    pub async fn replay_newest<T: DeserializeOwned>(
        &self,
        mut take: impl FnMut(Vec<T>) -> ControlFlow<()>,
    ) -> Result<u64> {
        let mut skipped = 0;
        let mut keys = self.segment_keys().await?;
        keys.reverse();
        let base_key = self.base_key();
        keys.push(base_key.clone());
        for key in keys {
            let Some(bytes) = self.objects.get_opt(&key).await? else {
                continue;
            };
            let mut records = Vec::new();
            let lines = if key == base_key {
                split_base(&bytes)?.1
            } else {
                &bytes[..]
            };
            skipped += parse_lines(lines, &mut records);
            if take(records).is_break() {
                break;
            }
        }
        Ok(skipped)
    }

    /// The segments' keys, oldest first (names start with their time).
    async fn segment_keys(&self) -> Result<Vec<String>> {
        let prefix = format!("{}/", self.name);
        let mut keys: Vec<String> = self
            .objects
            .list(&self.name)
            .await?
            .into_iter()
            .map(|info| info.key)
            .filter(|key| key.starts_with(&prefix) && key.ends_with(".jsonl"))
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Deletes the segments written before `cutoff` (by the time their name
    /// starts with) and answers how many went. The base and segments whose
    /// name carries no time are kept. A segment that cannot be deleted is
    /// logged and left for the next call.
    pub async fn prune_before(&self, cutoff: std::time::SystemTime) -> Result<usize> {
        let cutoff = cutoff
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        let prefix = format!("{}/", self.name);
        let mut removed = 0;
        for key in self.segment_keys().await? {
            let written = key
                .strip_prefix(&prefix)
                .and_then(|file| file.split_once('-'))
                .and_then(|(micros, _)| micros.parse::<u128>().ok());
            if written.is_none_or(|micros| micros >= cutoff) {
                continue;
            }
            match self.objects.delete(&key).await {
                Ok(()) => removed += 1,
                Err(e) => tracing::warn!("retention left segment {key}: {e}"),
            }
        }
        Ok(removed)
    }

    /// Folds the log into one base object holding the last record of every
    /// key, in first-seen order. The log is read afresh (so other replicas'
    /// segments are kept); segments written meanwhile are left for next time.
    /// Refused with a conflict while another replica compacts the log.
    pub async fn compact<T, K>(&self, key: K) -> Result<CompactReport>
    where
        T: Serialize + DeserializeOwned,
        K: Fn(&T) -> String,
    {
        let lease = self.take_compaction_lease().await?;
        let compacted = self.compact_holding_lease(key).await;
        lease.give_back().await;
        compacted
    }

    /// Creates the log's compaction lease; a lease older than
    /// [`COMPACTION_LEASE`] (its holder stopped mid-way) is taken over.
    ///
    /// The object store offers create-if-absent but no compare-and-swap on
    /// every backend, so replacing the stale lease is guarded by a claim: an
    /// object named after the stale lease's bytes, created if absent. Of
    /// replicas finding the same stale lease, the one that creates the claim
    /// replaces the lease, after checking that it is still the one it
    /// read; the others get a conflict. A claim older than
    /// [`TAKEOVER_CLAIM`] was left by a replica that stopped mid-takeover and
    /// is itself claimed the same way.
    async fn take_compaction_lease(&self) -> Result<CompactionLease> {
        let key = format!("{}.compacting", self.name);
        let holder = lakehouse_providers::openai::new_id("");
        let now = unix_millis();
        let body = Bytes::from(format!("{{\"since_ms\":{now},\"holder\":\"{holder}\"}}\n"));
        let mut lease = CompactionLease {
            objects: self.objects.clone(),
            key,
            holder,
            held: false,
        };
        let elsewhere = |held_for: Option<Duration>| {
            let held = held_for.map_or(String::new(), |d| format!(" (for {}s)", d.as_secs()));
            MemoryError::from(StoreError::Conflict(format!(
                "{} is being compacted elsewhere{held}; try again later",
                self.name
            )))
        };
        if self.objects.put_if_absent(&lease.key, body.clone()).await? {
            lease.held = true;
            return Ok(lease);
        }
        let Some(stale) = self.objects.get_opt(&lease.key).await? else {
            // Given back meanwhile.
            return Err(elsewhere(None));
        };
        if let Some(held_for) = age(&stale, now).filter(|held| *held < COMPACTION_LEASE) {
            return Err(elsewhere(Some(held_for)));
        }
        let Some(claims) = self.claim_takeover(&lease.key, &stale, &body, now).await? else {
            return Err(elsewhere(None));
        };
        let taken = self.replace_stale_lease(&lease.key, &stale, body).await;
        for claim in &claims {
            if let Err(e) = self.objects.delete(claim).await {
                tracing::warn!("compaction could not delete its takeover claim {claim}: {e}");
            }
        }
        if taken? {
            lease.held = true;
            Ok(lease)
        } else {
            Err(elsewhere(None))
        }
    }

    /// Creates the claim to take over the lease `stale` at `key`, walking
    /// past claims left by replicas that stopped; answers the claims to
    /// delete afterwards (this one's and the abandoned ones), or `None` when
    /// another replica holds a live claim.
    async fn claim_takeover(
        &self,
        key: &str,
        stale: &[u8],
        body: &Bytes,
        now: u64,
    ) -> Result<Option<Vec<String>>> {
        let mut claims = Vec::new();
        let mut claimed = stale.to_vec();
        for _ in 0..TAKEOVER_LINKS {
            let claim = format!("{key}.takeover-{:016x}", fnv1a(&claimed));
            claims.push(claim.clone());
            if self.objects.put_if_absent(&claim, body.clone()).await? {
                return Ok(Some(claims));
            }
            let Some(other) = self.objects.get_opt(&claim).await? else {
                // Its takeover ended: the lease is no longer the stale one.
                return Ok(None);
            };
            if age(&other, now).is_some_and(|held| held < TAKEOVER_CLAIM) {
                return Ok(None);
            }
            claimed = other.to_vec();
        }
        Ok(None)
    }

    /// Replaces the lease at `key` with `body` if it still is `stale`; answers
    /// whether this replica now holds it.
    async fn replace_stale_lease(&self, key: &str, stale: &[u8], body: Bytes) -> Result<bool> {
        if self.objects.get_opt(key).await?.as_deref() != Some(stale) {
            return Ok(false);
        }
        match self.objects.delete(key).await {
            Ok(()) | Err(StoreError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        // A replica starting a compaction right now may create it first.
        Ok(self.objects.put_if_absent(key, body).await?)
    }

    async fn compact_holding_lease<T, K>(&self, key: K) -> Result<CompactReport>
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
        let header = BaseHeader {
            lakehouse_log_base: Folded {
                folded: replay.segments.clone(),
            },
        };
        let base = vec![Self::encode(&[header])?, Self::encode(&records)?];
        self.objects.put_parts(&self.base_key(), base).await?;
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

/// Appends the records of `bytes`' lines to `records`; answers how many
/// lines could not be read.
fn parse_lines<T: DeserializeOwned>(bytes: &[u8], records: &mut Vec<T>) -> u64 {
    let mut skipped = 0;
    for (n, line) in bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(record) => records.push(record),
            Err(e) => {
                skipped += 1;
                tracing::warn!("skipping unreadable log line {}: {e}", n + 1);
            }
        }
    }
    skipped
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakehouse_retrieval::objects::{Caps, StoreConfig};
    use serde_json::json;

    fn log() -> JsonlLog {
        let root = std::env::temp_dir().join(lakehouse_providers::openai::new_id("log-test-"));
        let objects = Objects::open(&StoreConfig::Local {
            root,
            caps: Caps::default(),
        })
        .unwrap();
        JsonlLog::new(objects, "test/log")
    }

    #[tokio::test]
    async fn segments_sort_in_write_order_when_the_clock_steps_back() {
        let log = log();
        // The first segment was named while the clock was an hour ahead.
        let ahead = u64::try_from(unix_micros()).unwrap() + 3_600_000_000;
        let first = format!("test/log/{ahead:020}-x-000000.jsonl");
        log.objects.put(&first, "{\"n\":1}\n".into()).await.unwrap();
        log.last_micros.store(ahead, Ordering::Relaxed);
        log.append(&[json!({"n": 2})]).await.unwrap();
        log.append(&[json!({"n": 3})]).await.unwrap();
        let replay = log.replay::<serde_json::Value>().await.unwrap();
        let order: Vec<u64> = replay
            .records
            .iter()
            .map(|r| r["n"].as_u64().unwrap())
            .collect();
        assert_eq!(order, [1, 2, 3]);
        assert_eq!(log.last_micros.load(Ordering::Relaxed), ahead + 2);
    }

    #[tokio::test]
    async fn the_tail_is_read_newest_segment_first_and_no_further_than_asked() {
        let log = log();
        // A base with an unreadable line, then three segments of two records.
        log.objects
            .put(&log.base_key(), Bytes::from_static(b"0\nnot json\n"))
            .await
            .unwrap();
        for segment in [[1, 2], [3, 4], [5, 6]] {
            log.append(&segment).await.unwrap();
        }

        let mut seen: Vec<Vec<u32>> = Vec::new();
        let skipped = log
            .replay_newest::<u32>(|records| {
                seen.push(records);
                if seen.len() == 2 {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            })
            .await
            .unwrap();
        assert_eq!(seen, [vec![5, 6], vec![3, 4]]);
        assert_eq!(skipped, 0, "the base was not read");

        let mut all = Vec::new();
        let skipped = log
            .replay_newest::<u32>(|records| {
                all.push(records);
                ControlFlow::Continue(())
            })
            .await
            .unwrap();
        assert_eq!(all, [vec![5, 6], vec![3, 4], vec![1, 2], vec![0]]);
        assert_eq!(skipped, 1);
        // The whole replay reads the same records in log order.
        let replay = log.replay::<u32>().await.unwrap();
        assert_eq!(replay.records, [0, 1, 2, 3, 4, 5, 6]);
        assert_eq!((replay.skipped, replay.segments.len()), (1, 3));
    }

    #[tokio::test]
    async fn a_replay_skips_segments_the_base_folded_and_lists_again_when_one_vanished() {
        let log = log();
        // Another replica over the same store.
        let other = JsonlLog::new(log.objects.clone(), "test/log");
        log.append(&[1u32]).await.unwrap();
        log.append(&[2u32]).await.unwrap();
        let listed = log.segment_keys().await.unwrap();
        let kept: Vec<Bytes> = {
            let mut kept = Vec::new();
            for key in &listed {
                kept.push(log.objects.get_opt(key).await.unwrap().unwrap());
            }
            kept
        };

        // The other replica compacts between this one's listing and its
        // reading: the folded segments are found in the new base, once.
        other.compact(|n: &u32| n.to_string()).await.unwrap();
        other.append(&[3u32]).await.unwrap();
        let replay = log
            .read_listed::<u32>(listed.clone())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((replay.records, replay.skipped), (vec![1, 2], 0));

        // A compaction that wrote its base but has not yet deleted what it
        // folded: those segments are not read twice, and the next compaction
        // deletes them.
        for (key, bytes) in listed.iter().zip(kept) {
            log.objects.put(key, bytes).await.unwrap();
        }
        let replay = log.replay::<u32>().await.unwrap();
        assert_eq!((replay.records, replay.skipped), (vec![1, 2, 3], 0));
        assert_eq!(replay.segments.len(), 3);
        let mut newest_first = Vec::new();
        log.replay_newest::<u32>(|records| {
            newest_first.push(records);
            ControlFlow::Continue(())
        })
        .await
        .unwrap();
        assert_eq!(
            newest_first.last().unwrap(),
            &[1, 2],
            "the header is no record"
        );
        let report = log.compact(|n: &u32| n.to_string()).await.unwrap();
        assert_eq!((report.records, report.segments_removed), (3, 3));
        assert!(log.segment_keys().await.unwrap().is_empty());

        // A listed segment that is gone and that the base does not name was
        // folded into a base newer than the one read: the replay lists again.
        log.append(&[4u32]).await.unwrap();
        log.append(&[5u32]).await.unwrap();
        let listed = log.segment_keys().await.unwrap();
        log.objects.delete(&listed[0]).await.unwrap();
        assert!(log.read_listed::<u32>(listed).await.unwrap().is_none());
        let replay = log.replay::<u32>().await.unwrap();
        assert_eq!(replay.records, [1, 2, 3, 5]);
    }

    #[tokio::test]
    async fn retention_deletes_only_the_segments_written_before_the_cutoff() {
        let log = log();
        log.objects
            .put(&log.base_key(), Bytes::from_static(b"0\n"))
            .await
            .unwrap();
        // Two segments from 2001 (by their names), one with no time in its
        // name, and one written now.
        for (key, line) in [
            ("test/log/00000978307200000000-a-000000.jsonl", "1\n"),
            ("test/log/00000978307300000000-b-000001.jsonl", "2\n"),
            ("test/log/handmade.jsonl", "3\n"),
        ] {
            log.objects.put(key, Bytes::from(line)).await.unwrap();
        }
        log.append(&[4]).await.unwrap();

        let day = std::time::Duration::from_secs(86_400);
        let removed = log
            .prune_before(std::time::SystemTime::now() - day)
            .await
            .unwrap();
        assert_eq!(removed, 2);
        let replay = log.replay::<u32>().await.unwrap();
        // Segments replay in name order: digits before letters.
        assert_eq!(replay.records, [0, 4, 3], "base, new and timeless kept");
        // Nothing is left to prune.
        let again = log
            .prune_before(std::time::SystemTime::now() - day)
            .await
            .unwrap();
        assert_eq!(again, 0);
    }

    #[tokio::test]
    async fn one_compaction_at_a_time_across_replicas_and_a_stale_lease_is_taken_over() {
        let log = log();
        // Another replica over the same store.
        let other = JsonlLog::new(log.objects.clone(), "test/log");
        log.append(&[1u32, 2]).await.unwrap();
        other.append(&[3u32]).await.unwrap();
        let by_value = |n: &u32| n.to_string();

        // `other` is compacting: its lease is fresh.
        let lease = "test/log.compacting";
        let fresh = format!("{{\"since_ms\":{}}}\n", unix_millis());
        assert!(
            other
                .objects
                .put_if_absent(lease, fresh.into())
                .await
                .unwrap()
        );
        let refused = log.compact(by_value).await.unwrap_err();
        assert!(
            matches!(&refused, MemoryError::Store(StoreError::Conflict(m)) if m.starts_with("test/log is being compacted elsewhere")),
            "{refused}"
        );
        // Nothing was folded or deleted, and the other's lease stays.
        let replay = log.replay::<u32>().await.unwrap();
        assert_eq!((replay.records, replay.segments.len()), (vec![1, 2, 3], 2));
        assert!(log.objects.get_opt(lease).await.unwrap().is_some());

        // A lease from 1970 was left by a replica that stopped: taken over.
        log.objects
            .put(lease, Bytes::from_static(b"{\"since_ms\":1}\n"))
            .await
            .unwrap();
        let report = log.compact(by_value).await.unwrap();
        assert_eq!((report.records, report.segments_removed), (3, 2));
        // Given back afterwards, so the next compaction runs.
        assert!(log.objects.get_opt(lease).await.unwrap().is_none());
        other.append(&[4u32]).await.unwrap();
        other.compact(by_value).await.unwrap();
        let replay = log.replay::<u32>().await.unwrap();
        assert_eq!(
            (replay.records, replay.segments.len()),
            (vec![1, 2, 3, 4], 0)
        );

        // A lease taken over meanwhile (its compaction ran past the limit)
        // stays with the replica that took it.
        let held = log.take_compaction_lease().await.unwrap();
        let theirs = Bytes::from_static(b"{\"since_ms\":2,\"holder\":\"other\"}\n");
        log.objects.put(lease, theirs.clone()).await.unwrap();
        held.give_back().await;
        assert_eq!(log.objects.get_opt(lease).await.unwrap(), Some(theirs));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn replicas_finding_one_stale_lease_at_once_take_it_over_once() {
        let log = log();
        let lease = "test/log.compacting";
        for round in 0..20u64 {
            let stale = format!(
                "{{\"since_ms\":{},\"holder\":\"gone{round}\"}}\n",
                round + 1
            );
            log.objects.put(lease, stale.into()).await.unwrap();
            let tries: Vec<_> = (0..8)
                .map(|_| {
                    let replica = JsonlLog::new(log.objects.clone(), "test/log");
                    tokio::spawn(async move { replica.take_compaction_lease().await })
                })
                .collect();
            let mut held = Vec::new();
            for attempt in tries {
                match attempt.await.unwrap() {
                    Ok(lease) => held.push(lease),
                    Err(e) => assert!(e.to_string().contains("being compacted elsewhere"), "{e}"),
                }
            }
            assert_eq!(
                held.len(),
                1,
                "round {round}: one replica takes the lease over"
            );
            for lease in held {
                lease.give_back().await;
            }
            // Claims go with the takeover.
            let left: Vec<String> = log
                .objects
                .list("test")
                .await
                .unwrap()
                .into_iter()
                .map(|o| o.key)
                .collect();
            assert!(left.iter().all(|k| !k.contains(".takeover-")), "{left:?}");
        }
    }

    #[tokio::test]
    async fn a_takeover_claim_left_by_a_stopped_replica_is_walked_past() {
        let log = log();
        let lease = "test/log.compacting";
        let stale = Bytes::from_static(b"{\"since_ms\":1,\"holder\":\"gone\"}\n");
        log.objects.put(lease, stale.clone()).await.unwrap();
        let claim = format!("{lease}.takeover-{:016x}", fnv1a(&stale));
        // A live claim: another replica is taking the lease over right now.
        let live = format!("{{\"since_ms\":{},\"holder\":\"busy\"}}\n", unix_millis());
        log.objects.put(&claim, live.into()).await.unwrap();
        let refused = log.take_compaction_lease().await.unwrap_err();
        assert!(
            refused.to_string().contains("being compacted elsewhere"),
            "{refused}"
        );
        assert_eq!(
            log.objects.get_opt(lease).await.unwrap(),
            Some(stale.clone())
        );
        // The claimer stopped a minute ago: its claim is claimed in turn.
        log.objects
            .put(
                &claim,
                Bytes::from_static(b"{\"since_ms\":2,\"holder\":\"stopped\"}\n"),
            )
            .await
            .unwrap();
        let held = log.take_compaction_lease().await.unwrap();
        assert_ne!(log.objects.get_opt(lease).await.unwrap(), Some(stale));
        assert!(log.objects.get_opt(&claim).await.unwrap().is_none());
        held.give_back().await;
        assert!(log.objects.list("test").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_lease_whose_compaction_is_dropped_part_way_is_given_back() {
        let log = log();
        let lease = "test/log.compacting";
        drop(log.take_compaction_lease().await.unwrap());
        // Given back by a task: wait for it, without a fixed sleep.
        while log.objects.get_opt(lease).await.unwrap().is_some() {
            tokio::task::yield_now().await;
        }
        log.append(&[1u32]).await.unwrap();
        log.compact(|n: &u32| n.to_string()).await.unwrap();
    }
}
