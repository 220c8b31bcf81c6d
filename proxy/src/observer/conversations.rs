//! Captured conversations, each message written once.
//!
//! An agent resends its whole conversation every turn, so a log that kept
//! each chat's messages whole grew with the square of the turns, and writing
//! them was most of a long chat's CPU. The writer ([`MessageIndex`])
//! remembers a digest of every message it logged, and writes a chat whose
//! messages are partly in the log already as `message_pieces` instead of
//! `messages`: runs of an earlier chat's messages by reference
//! (`{"earlier":{"of":"<completion id>","from":2,"count":7}}`) and the rest
//! whole (`{"new":[...]}`). Readers resolve the pieces in log order
//! ([`Resolver`]). A chat with nothing to refer to is written as before.
//!
//! A chat refers only to the same caller's chats (digests are keyed by the
//! caller: no caller can make another's conversation read back with its
//! messages), and only to chats whose own chain starts at most
//! [`CHAIN_SPAN_MS`] before it. Retention deletes whole segments by age, so
//! a chain loses its start only in the last hour before its own chats are
//! deleted too; such a chat, or one whose start is unreadable, is read
//! without messages (a warning says how many).
//!
//! The index is shared by every thread that records chats, so only the
//! lookups need it: a chat's digests are taken before ([`Prepared::digest`])
//! and its JSON written after ([`Prepared::write`]), outside the writer's
//! lock (unless a segment was given up in between; see
//! [`MessageIndex::is_current`]).

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;

use lakehouse_providers::encode::json::to_digest_input;
use lakehouse_providers::encode::{write_messages, write_str, write_u64};
use lakehouse_providers::openai::Message;
use serde::Deserialize;

use super::ChatEvent;

/// How long before a chat the chain of chats it refers to may start.
const CHAIN_SPAN_MS: u64 = 3_600_000;
/// The most chats the writer remembers.
const MAX_CHATS: usize = 4096;
/// The most messages the writer remembers, over all its chats (with their
/// digests' map, a few MB): a turn refers mostly to the turn before it, so
/// this is hundreds of agents' conversations.
const MAX_MESSAGES: usize = 1 << 16;
/// The scratch buffer kept between chats: one huge message does not hold
/// its size for good.
pub(super) const SCRATCH_KEPT: usize = 1 << 20;
/// A run of earlier messages shorter than this is written again: its
/// reference would be about as long, and would tie the chat to another.
const MIN_REFERRED_BYTES: usize = 128;

/// A message's digest: two 64-bit hashes, under random keys, of its caller
/// and its digest input ([`to_digest_input`]).
type Digest = u128;

/// One piece of a chat's messages, as the log holds them.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessagePiece {
    /// `count` messages of the earlier chat `of` (a completion id), from its
    /// message `from`.
    Earlier {
        of: String,
        from: usize,
        count: usize,
    },
    /// Messages written here.
    New(Vec<Message>),
}

/// `,"messages":[...]`: a chat's messages written whole, as before this index.
fn write_whole(out: &mut Vec<u8>, messages: &[Message]) -> serde_json::Result<()> {
    out.extend_from_slice(b",\"messages\":");
    write_messages(out, messages)
}

/// The chats (by completion id) that `pieces` refer to, once per piece.
fn earlier_ids(pieces: &[MessagePiece]) -> impl Iterator<Item = &String> {
    pieces.iter().filter_map(|piece| match piece {
        MessagePiece::Earlier { of, .. } => Some(of),
        MessagePiece::New(_) => None,
    })
}

/// The random keys of one index's digests.
#[derive(Clone, Default)]
pub(super) struct DigestKeys([hashbrown::DefaultHashBuilder; 2]);

impl DigestKeys {
    fn digest(&self, caller: &str, bytes: &[u8]) -> Digest {
        let [low, high] = self.0.each_ref().map(|key| {
            let mut hasher = key.build_hasher();
            hasher.write_usize(caller.len());
            hasher.write(caller.as_bytes());
            hasher.write(bytes);
            hasher.finish()
        });
        (u128::from(high) << 64) | u128::from(low)
    }
}

/// A chat's messages on their way into its log line: their digests
/// ([`Prepared::digest`]), the runs of them the index found logged
/// ([`MessageIndex::plan`]), then their JSON ([`Prepared::write`]). Kept
/// between chats, so that a chat allocates nothing once they have grown.
#[derive(Default)]
pub(super) struct Prepared {
    /// Whether the chat goes through the index: it has messages to refer to
    /// or to be referred to.
    indexed: bool,
    /// Each message's digest, and the length it was digested at.
    digests: Vec<Digest>,
    sizes: Vec<usize>,
    /// Each message's digest input in turn.
    scratch: Vec<u8>,
    pieces: Vec<Piece>,
    /// The start time of the earliest chat the pieces lean on (the chat's
    /// own when none).
    root_ms: u64,
    /// [`MessageIndex::generation`] when the pieces were found.
    generation: u64,
}

/// A piece of the chat being written: its messages `start..end`, found in
/// the remembered chat with that completion id from that message, or new.
struct Piece {
    start: usize,
    end: usize,
    earlier: Option<(Arc<str>, usize)>,
}

impl Prepared {
    /// Takes the digests of `messages`, the messages of a chat started at
    /// `at_ms` by `caller`, and forgets the last chat's pieces.
    pub(super) fn digest(
        &mut self,
        keys: &DigestKeys,
        caller: Option<&str>,
        at_ms: u64,
        messages: &[Message],
    ) -> serde_json::Result<()> {
        self.clear();
        self.root_ms = at_ms;
        // A one-message chat (most one-shot calls) is written whole and not
        // remembered, at the cost it had before this index: it could only
        // repeat one message, and the next turn of its conversation writes
        // that message once more.
        if messages.len() < 2 {
            return Ok(());
        }
        let caller = caller.unwrap_or_default();
        for message in messages {
            // Digested unescaped: only the new messages are encoded as JSON.
            self.scratch.clear();
            to_digest_input(&mut self.scratch, message)?;
            self.digests.push(keys.digest(caller, &self.scratch));
            self.sizes.push(self.scratch.len());
        }
        if self.scratch.capacity() > SCRATCH_KEPT {
            self.scratch = Vec::new();
        }
        // A chat this short can neither refer to a run of earlier messages
        // nor be referred to.
        self.indexed = self.sizes.iter().sum::<usize>() >= MIN_REFERRED_BYTES;
        Ok(())
    }

    /// Leaves no chat prepared: the next line is written whole.
    pub(super) fn clear(&mut self) {
        self.indexed = false;
        self.digests.clear();
        self.sizes.clear();
        self.pieces.clear();
    }

    /// Whether the index is to be asked for the chat's pieces.
    pub(super) fn is_indexed(&self) -> bool {
        self.indexed
    }

    /// Whether the line is written with pieces referring to earlier chats.
    pub(super) fn refers(&self) -> bool {
        self.pieces.iter().any(|p| p.earlier.is_some())
    }

    /// Appends `,"messages":[...]` for `messages` (those digested), or
    /// `,"message_pieces":[...]` when some of them were found logged.
    pub(super) fn write(&self, out: &mut Vec<u8>, messages: &[Message]) -> serde_json::Result<()> {
        if !self.refers() {
            return write_whole(out, messages);
        }
        out.extend_from_slice(b",\"message_pieces\":[");
        for (n, piece) in self.pieces.iter().enumerate() {
            if n > 0 {
                out.push(b',');
            }
            match &piece.earlier {
                Some((of, from)) => {
                    out.extend_from_slice(b"{\"earlier\":{\"of\":");
                    write_str(out, of)?;
                    out.extend_from_slice(b",\"from\":");
                    write_u64(out, *from as u64);
                    out.extend_from_slice(b",\"count\":");
                    write_u64(out, (piece.end - piece.start) as u64);
                    out.extend_from_slice(b"}}");
                }
                None => {
                    out.extend_from_slice(b"{\"new\":");
                    write_messages(
                        out,
                        messages.get(piece.start..piece.end).unwrap_or_default(),
                    )?;
                    out.push(b'}');
                }
            }
        }
        out.push(b']');
        Ok(())
    }

    /// Lets go of what a chat of very many messages grew.
    pub(super) fn trim(&mut self) {
        const KEPT: usize = 4096;
        if self.digests.capacity() > KEPT {
            self.digests = Vec::new();
            self.sizes = Vec::new();
            self.pieces = Vec::new();
        }
    }

    /// The digested length of messages `start..end` (about their JSON's).
    fn bytes(&self, start: usize, end: usize) -> usize {
        self.sizes.get(start..end).unwrap_or_default().iter().sum()
    }
}

/// A chat the writer logged, that later chats may refer to.
struct Remembered {
    /// Its place in the order of remembered chats.
    seq: u64,
    id: Arc<str>,
    /// The start time of the earliest chat its messages lean on (its own if none).
    root_ms: u64,
    messages: usize,
}

/// The writer's memory of the messages it logged.
#[derive(Default)]
pub(super) struct MessageIndex {
    keys: DigestKeys,
    /// Where each digest was last logged: the chat's `seq` and the position.
    seen: hashbrown::HashMap<Digest, (u64, u32)>,
    /// The chats that can be referred to, oldest first, by consecutive `seq`.
    chats: VecDeque<Remembered>,
    next_seq: u64,
    remembered_messages: usize,
    /// Counts the times every chat was forgotten: pieces found before may
    /// name chats whose lines were left out of the log.
    generation: u64,
}

impl MessageIndex {
    /// The keys to take this index's digests under.
    pub(super) fn keys(&self) -> DigestKeys {
        self.keys.clone()
    }

    /// Splits the chat `prepared` into pieces: the longest runs of its
    /// messages logged in one earlier chat, the rest new. Until [`commit`]
    /// the chat itself is not remembered.
    ///
    /// [`commit`]: Self::commit
    pub(super) fn plan(&self, prepared: &mut Prepared, at_ms: u64) {
        prepared.pieces.clear();
        prepared.root_ms = at_ms;
        prepared.generation = self.generation;
        if !prepared.indexed {
            return;
        }
        let count = prepared.digests.len();
        let mut start = 0;
        while start < count {
            let found = prepared
                .digests
                .get(start)
                .and_then(|digest| self.find(*digest, at_ms));
            let mut end = start + 1;
            if let Some((chat, from)) = found {
                while end < count
                    && prepared
                        .digests
                        .get(end)
                        .and_then(|digest| self.find(*digest, at_ms))
                        == Some((chat, from + end - start))
                {
                    end += 1;
                }
                if let Some(chat) = self.chats.get(chat)
                    && prepared.bytes(start, end) >= MIN_REFERRED_BYTES
                {
                    prepared.root_ms = prepared.root_ms.min(chat.root_ms);
                    prepared.pieces.push(Piece {
                        start,
                        end,
                        earlier: Some((Arc::clone(&chat.id), from)),
                    });
                    start = end;
                    continue;
                }
            }
            // New: joined to the piece before when that is new too.
            match prepared.pieces.last_mut() {
                Some(last) if last.earlier.is_none() => last.end = end,
                _ => prepared.pieces.push(Piece {
                    start,
                    end,
                    earlier: None,
                }),
            }
            start = end;
        }
    }

    /// Whether `prepared`'s pieces were found since every chat was last
    /// forgotten: otherwise they may name chats whose lines were left out.
    pub(super) fn is_current(&self, prepared: &Prepared) -> bool {
        prepared.generation == self.generation
    }

    /// Remembers the chat `id`, written from `prepared`: its line is in the
    /// segment.
    pub(super) fn commit(&mut self, id: Option<&str>, prepared: &Prepared) {
        let (true, Some(id)) = (prepared.indexed, id) else {
            return;
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        for (position, digest) in prepared.digests.iter().enumerate() {
            self.seen
                .insert(*digest, (seq, u32::try_from(position).unwrap_or(u32::MAX)));
        }
        self.chats.push_back(Remembered {
            seq,
            id: Arc::from(id),
            root_ms: prepared.root_ms,
            messages: prepared.digests.len(),
        });
        self.remembered_messages += prepared.digests.len();
        while self.chats.len() > MAX_CHATS || self.remembered_messages > MAX_MESSAGES {
            let Some(oldest) = self.chats.pop_front() else {
                break;
            };
            self.remembered_messages -= oldest.messages;
        }
        // Digests of forgotten chats are dropped in bulk, not one by one.
        if self.seen.len() > 2 * self.remembered_messages + 1024 {
            let first = self.first_seq();
            self.seen.retain(|_, (seq, _)| *seq >= first);
        }
    }

    /// Forgets every chat: a segment holding some of them was not written.
    pub(super) fn forget_all(&mut self) {
        self.seen.clear();
        self.chats.clear();
        self.remembered_messages = 0;
        self.generation += 1;
    }

    fn first_seq(&self) -> u64 {
        self.chats.front().map_or(self.next_seq, |c| c.seq)
    }

    /// Where the message with `digest` was last logged, if that chat is
    /// remembered and its chain is recent enough for a chat at `at_ms`:
    /// its index in `chats` and the message's position there.
    fn find(&self, digest: Digest, at_ms: u64) -> Option<(usize, usize)> {
        let &(seq, position) = self.seen.get(&digest)?;
        let chat = usize::try_from(seq.checked_sub(self.first_seq())?).ok()?;
        let remembered = self.chats.get(chat)?;
        (remembered.root_ms.saturating_add(CHAIN_SPAN_MS) >= at_ms)
            .then_some((chat, position as usize))
    }
}

/// The earlier chats a backwards read of the log still needs, to resolve
/// the pieces of the chats it keeps.
pub(super) struct Needed {
    ids: HashSet<String>,
    /// The earliest end of a chat read so far (the log is in the order
    /// chats ended).
    oldest_read_ms: u64,
    /// No chat named starts before this: a chain reaches back at most its
    /// span (doubled, for chats logged out of order by their start).
    reach_ms: u64,
}

impl Default for Needed {
    fn default() -> Self {
        Self {
            ids: HashSet::new(),
            oldest_read_ms: u64::MAX,
            reach_ms: u64::MAX,
        }
    }
}

impl Needed {
    /// Whether `chat`, just read, is one a kept chat names (then it is no
    /// longer needed).
    pub(super) fn take(&mut self, chat: &ChatEvent) -> bool {
        // Whole milliseconds are enough: the reach has hours of slack.
        let ended = chat.at_ms.saturating_add(chat.latency_ms as u64);
        self.oldest_read_ms = self.oldest_read_ms.min(ended);
        chat.id.as_ref().is_some_and(|id| self.ids.remove(id))
    }

    /// Notes the chats that `chat`, kept, names.
    pub(super) fn keep(&mut self, chat: &ChatEvent) {
        for of in earlier_ids(chat.message_pieces.as_deref().unwrap_or_default()) {
            self.ids.insert(of.clone());
            let reach = chat.at_ms.saturating_sub(2 * CHAIN_SPAN_MS);
            self.reach_ms = self.reach_ms.min(reach);
        }
    }

    /// Whether reading further back would find no chat needed: none is, or
    /// the read is past where they can be (deleted by the retention).
    pub(super) fn done(&self) -> bool {
        self.ids.is_empty() || self.oldest_read_ms < self.reach_ms
    }
}

/// Resolves the pieces of chats read back, in log order.
#[derive(Default)]
pub(super) struct Resolver {
    /// The messages of the chats read so far that had them, by completion id.
    by_id: HashMap<String, Arc<Vec<Message>>>,
    /// With [`Resolver::for_chats`], how many pieces of the chats still to
    /// resolve name each chat: only those are kept in `by_id`, and only
    /// until the last piece naming them is resolved.
    named: Option<HashMap<String, usize>>,
    /// Chats whose pieces named a chat not read (deleted, or unreadable).
    unresolved: u64,
}

impl Resolver {
    /// A resolver for `chats` (oldest first, each to be resolved in turn)
    /// that keeps a chat's messages only while a later one names it: a
    /// chain of turns holds at most a few conversations at once, not all.
    pub(super) fn for_chats<'a>(chats: impl IntoIterator<Item = &'a ChatEvent>) -> Self {
        let mut named: HashMap<String, usize> = HashMap::new();
        for chat in chats {
            for of in earlier_ids(chat.message_pieces.as_deref().unwrap_or_default()) {
                *named.entry(of.clone()).or_default() += 1;
            }
        }
        Self {
            named: Some(named),
            ..Self::default()
        }
    }

    /// Fills in `chat`'s messages from its pieces, and keeps them for the
    /// chats after it.
    pub(super) fn resolve(&mut self, chat: &mut ChatEvent) {
        if let Some(pieces) = chat.message_pieces.take() {
            chat.messages = self.assemble(&pieces).map(Arc::new);
            if chat.messages.is_none() {
                self.unresolved += 1;
            }
            self.release(&pieces);
        }
        let (Some(id), Some(messages)) = (&chat.id, &chat.messages) else {
            return;
        };
        let later = self
            .named
            .as_ref()
            .is_none_or(|named| named.get(id).is_some_and(|n| *n > 0));
        if later {
            self.by_id.insert(id.clone(), Arc::clone(messages));
        }
    }

    /// Counts `pieces`' references as resolved, dropping the chats no later
    /// piece names.
    fn release(&mut self, pieces: &[MessagePiece]) {
        let Some(named) = &mut self.named else {
            return;
        };
        for of in earlier_ids(pieces) {
            if let Some(count) = named.get_mut(of) {
                *count = count.saturating_sub(1);
                if *count == 0 {
                    named.remove(of);
                    self.by_id.remove(of);
                }
            }
        }
    }

    /// Says how many chats were read without their messages, if any.
    pub(super) fn warn_unresolved(&self) {
        if self.unresolved > 0 {
            tracing::warn!(
                "observer: {} captured conversations name earlier chats that are not in the log (deleted by the retention, or unreadable) and are read without their messages",
                self.unresolved
            );
        }
    }

    fn assemble(&self, pieces: &[MessagePiece]) -> Option<Vec<Message>> {
        let mut messages = Vec::new();
        for piece in pieces {
            match piece {
                MessagePiece::Earlier { of, from, count } => {
                    let earlier = self.by_id.get(of)?;
                    messages.extend_from_slice(earlier.get(*from..from.checked_add(*count)?)?);
                }
                MessagePiece::New(new) => messages.extend_from_slice(new),
            }
        }
        Some(messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lakehouse_providers::openai::Role;

    /// A message long enough to be referred to.
    fn message(role: Role, text: &str) -> Message {
        Message::text(role, format!("{text} {}", "x".repeat(MIN_REFERRED_BYTES)))
    }

    fn chat(id: &str, at_ms: u64, messages: &[Message]) -> ChatEvent {
        let mut chat = super::super::tests::event("kimi", super::super::Outcome::Ok, 1.0);
        chat.id = Some(id.into());
        chat.at_ms = at_ms;
        chat.messages = Some(Arc::new(messages.to_vec()));
        chat
    }

    /// Writes each chat's messages through one index as the writer does
    /// (committing each), returning the JSON objects written.
    fn write_all(index: &mut MessageIndex, chats: &[ChatEvent]) -> Vec<serde_json::Value> {
        let mut prepared = Prepared::default();
        chats
            .iter()
            .map(|chat| {
                let out = write_one(index, &mut prepared, chat);
                index.commit(chat.id.as_deref(), &prepared);
                serde_json::from_slice(&out).unwrap()
            })
            .collect()
    }

    /// `chat`'s messages as the writer writes them, in a JSON object,
    /// without remembering the chat.
    fn write_one(index: &MessageIndex, prepared: &mut Prepared, chat: &ChatEvent) -> Vec<u8> {
        let messages = chat.messages.as_deref().unwrap();
        let (caller, at_ms) = (chat.caller.as_deref(), chat.at_ms);
        prepared
            .digest(&index.keys(), caller, at_ms, messages)
            .unwrap();
        index.plan(prepared, at_ms);
        let mut out = b"{\"x\":0".to_vec();
        prepared.write(&mut out, messages).unwrap();
        out.push(b'}');
        out
    }

    /// Reads the written objects back as chats, resolved in order.
    fn read_all(chats: &[ChatEvent], written: &[serde_json::Value]) -> (Vec<ChatEvent>, u64) {
        let mut resolver = Resolver::default();
        let read = chats
            .iter()
            .zip(written)
            .map(|(chat, line)| {
                let mut read = chat.clone();
                read.messages = line
                    .get("messages")
                    .map(|m| Arc::new(serde_json::from_value(m.clone()).unwrap()));
                read.message_pieces = line
                    .get("message_pieces")
                    .map(|p| serde_json::from_value(p.clone()).unwrap());
                resolver.resolve(&mut read);
                read
            })
            .collect();
        (read, resolver.unresolved)
    }

    /// Asserts that every chat reads back with the messages it was sent with.
    fn read_back_whole(chats: &[ChatEvent], written: &[serde_json::Value]) {
        let (read, unresolved) = read_all(chats, written);
        assert_eq!(unresolved, 0);
        for (read, sent) in read.iter().zip(chats) {
            assert_eq!(json(read.messages.as_ref()), json(sent.messages.as_ref()));
        }
    }

    fn json(messages: Option<&Arc<Vec<Message>>>) -> serde_json::Value {
        serde_json::to_value(messages).unwrap()
    }

    /// An agent's turns: each resends the conversation with the answer and a new message.
    fn turns(count: usize, context: impl Fn(usize) -> Option<Message>) -> Vec<ChatEvent> {
        let mut conversation = vec![message(Role::System, "You are terse.")];
        let mut chats = Vec::new();
        for turn in 0..count {
            conversation.push(message(Role::User, &format!("question {turn}")));
            let mut sent = conversation.clone();
            if let Some(context) = context(turn) {
                sent.insert(1, context);
            }
            chats.push(chat(&format!("chatcmpl-{turn}"), 1000 + turn as u64, &sent));
            conversation.push(message(Role::Assistant, &format!("answer {turn}")));
        }
        chats
    }

    #[test]
    fn a_growing_conversation_writes_each_message_once_and_reads_back_whole() {
        let chats = turns(12, |_| None);
        let written = write_all(&mut MessageIndex::default(), &chats);
        let text = serde_json::to_string(&written).unwrap();
        for turn in 0..12 {
            for said in [format!("question {turn} "), format!("answer {turn} ")] {
                let times = text.matches(&said).count();
                let expected = usize::from(turn < 11 || said.starts_with('q'));
                assert_eq!(times, expected, "{said:?} written {times} times");
            }
        }
        assert_eq!(text.matches("You are terse.").count(), 1);
        // The second turn refers to the first for its first two messages.
        assert_eq!(
            written[1]["message_pieces"],
            serde_json::json!([
                {"earlier": {"of": "chatcmpl-0", "from": 0, "count": 2}},
                {"new": json(Some(&Arc::new(chats[1].messages.as_ref().unwrap()[2..].to_vec())))},
            ])
        );
        read_back_whole(&chats, &written);
    }

    #[test]
    fn a_context_that_changes_every_turn_is_written_and_the_rest_referred_to() {
        let context = |turn: usize| Some(message(Role::System, &format!("context {turn}")));
        let chats = turns(4, context);
        let written = write_all(&mut MessageIndex::default(), &chats);
        let last = &written[3]["message_pieces"];
        let kinds: Vec<&str> = last
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_object().unwrap().keys().next().unwrap().as_str())
            .collect();
        // The system prompt, the new context, the earlier turns, the new ones.
        assert_eq!(kinds, ["earlier", "new", "earlier", "new"], "{last}");
        read_back_whole(&chats, &written);
    }

    #[test]
    fn short_runs_and_first_sightings_are_written_whole_as_before() {
        let tiny = [
            Message::text(Role::User, "hi"),
            Message::text(Role::User, "there"),
        ];
        let long = [message(Role::User, "one long message")];
        let chats = [
            chat("chatcmpl-a", 1, &tiny),
            chat("chatcmpl-b", 2, &tiny),
            chat("chatcmpl-1", 3, &long),
            chat("chatcmpl-2", 4, &long),
        ];
        let mut index = MessageIndex::default();
        let written = write_all(&mut index, &chats);
        for (line, chat) in written.iter().zip(&chats) {
            assert_eq!(line["messages"], json(chat.messages.as_ref()));
            assert!(line.get("message_pieces").is_none());
        }
        assert!(index.chats.is_empty(), "too short, or one message");
        // A short message shared by two long chats is written in each.
        let first = [tiny[0].clone(), message(Role::User, "one")];
        let second = [tiny[0].clone(), message(Role::User, "two")];
        let chats = [
            chat("chatcmpl-c", 3, &first),
            chat("chatcmpl-d", 4, &second),
        ];
        let written = write_all(&mut index, &chats);
        assert!(written[1].get("messages").is_some(), "{}", written[1]);
    }

    #[test]
    fn a_chain_reaches_back_at_most_its_span() {
        let mut chats = turns(3, |_| None);
        // The third turn comes more than the span after the first: the
        // second leans on the first, so the third cannot lean on either.
        chats[2].at_ms = chats[0].at_ms + CHAIN_SPAN_MS + 1;
        let written = write_all(&mut MessageIndex::default(), &chats);
        assert!(written[1].get("message_pieces").is_some());
        assert!(written[2].get("message_pieces").is_none(), "{}", written[2]);
        assert!(written[2].get("messages").is_some());
    }

    #[test]
    fn after_a_lost_segment_nothing_refers_to_its_chats() {
        let chats = turns(2, |_| None);
        let mut index = MessageIndex::default();
        write_all(&mut index, &chats[..1]);
        index.forget_all();
        let written = write_all(&mut index, &chats[1..]);
        assert!(written[0].get("messages").is_some(), "{}", written[0]);
    }

    #[test]
    fn a_resolver_for_known_chats_holds_a_chain_one_turn_at_a_time() {
        let chats = turns(6, |_| None);
        let written = write_all(&mut MessageIndex::default(), &chats);
        let (mut read, _) = read_all(&chats, &written);
        // As read back from the log: pieces, not messages.
        for (chat, line) in read.iter_mut().zip(&written) {
            if let Some(pieces) = line.get("message_pieces") {
                chat.messages = None;
                chat.message_pieces = Some(serde_json::from_value(pieces.clone()).unwrap());
            }
        }
        let mut resolver = Resolver::for_chats(&read);
        for (chat, sent) in read.iter_mut().zip(&chats) {
            resolver.resolve(chat);
            assert!(resolver.by_id.len() <= 1, "{:?}", resolver.by_id.keys());
            assert_eq!(json(chat.messages.as_ref()), json(sent.messages.as_ref()));
        }
        assert!(resolver.by_id.is_empty(), "nothing names the last turn");
    }

    #[test]
    fn a_chat_refers_only_to_its_own_callers_chats() {
        let mut chats = turns(2, |_| None);
        chats[0].caller = Some("alice".into());
        chats[1].caller = Some("bob".into());
        let written = write_all(&mut MessageIndex::default(), &chats);
        assert!(written[1].get("messages").is_some(), "{}", written[1]);
        chats[1].caller = Some("alice".into());
        let written = write_all(&mut MessageIndex::default(), &chats);
        assert!(written[1].get("message_pieces").is_some(), "{}", written[1]);
    }

    #[test]
    fn a_chat_not_committed_is_never_referred_to() {
        let chats = turns(2, |_| None);
        let mut index = MessageIndex::default();
        write_one(&index, &mut Prepared::default(), &chats[0]);
        let written = write_all(&mut index, &chats[1..]);
        assert!(written[0].get("messages").is_some(), "{}", written[0]);
    }

    #[test]
    fn pieces_found_before_the_index_forgot_its_chats_are_not_current() {
        let chats = turns(2, |_| None);
        let mut index = MessageIndex::default();
        write_all(&mut index, &chats[..1]);
        let mut prepared = Prepared::default();
        let line = write_one(&index, &mut prepared, &chats[1]);
        assert!(String::from_utf8(line).unwrap().contains("message_pieces"));
        assert!(index.is_current(&prepared));
        index.forget_all();
        assert!(!index.is_current(&prepared));
    }

    #[test]
    fn pieces_naming_a_chat_not_read_leave_the_chat_without_messages() {
        let chats = turns(3, |_| None);
        let written = write_all(&mut MessageIndex::default(), &chats);
        // The first chat's segment is gone: the second cannot be resolved,
        // and the third (which leans on the second) neither.
        let (read, unresolved) = read_all(&chats[1..], &written[1..]);
        assert_eq!(unresolved, 2);
        assert!(read.iter().all(|c| c.messages.is_none()));
        // A range past the earlier chat's messages is not resolved either.
        let mut resolver = Resolver::default();
        let mut first = chats[0].clone();
        resolver.resolve(&mut first);
        let mut past = chats[1].clone();
        past.messages = None;
        past.message_pieces = Some(vec![MessagePiece::Earlier {
            of: "chatcmpl-0".into(),
            from: 1,
            count: 5,
        }]);
        resolver.resolve(&mut past);
        assert!(past.messages.is_none());
    }

    #[test]
    fn the_memory_is_bounded() {
        let conversation = |n: usize, length: usize| -> Vec<Message> {
            (0..length)
                .map(|i| message(Role::User, &format!("{n}.{i}")))
                .collect()
        };
        let mut index = MessageIndex::default();
        let chats: Vec<ChatEvent> = (0..MAX_CHATS + 10)
            .map(|n| chat(&format!("c{n}"), 1, &conversation(n, 2)))
            .collect();
        write_all(&mut index, &chats);
        assert_eq!(index.chats.len(), MAX_CHATS);
        assert!(index.seen.len() <= 2 * index.remembered_messages + 1024);
        // The first chats are forgotten: their messages are written again.
        let again = write_all(&mut index, &chats[..1]);
        assert!(again[0].get("messages").is_some());
        let recent = write_all(&mut index, &chats[MAX_CHATS + 9..]);
        assert!(recent[0].get("message_pieces").is_some());

        // Long conversations are bounded by their messages.
        let long: Vec<ChatEvent> = (0..MAX_MESSAGES / 40 + 10)
            .map(|n| chat(&format!("l{n}"), 1, &conversation(n, 40)))
            .collect();
        write_all(&mut index, &long);
        assert!(index.remembered_messages <= MAX_MESSAGES);
        assert!(index.chats.len() < MAX_MESSAGES / 40 + 10);
        assert!(index.seen.len() <= 2 * index.remembered_messages + 1024);
    }
}
