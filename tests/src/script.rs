//! A response body as a script of frames and pauses, played back as a stream.
//!
//! Every [`Piece::Data`] becomes its own body frame. A body played with a
//! [`FakeState`] counts as cancelled when it is dropped before its last frame
//! was handed to hyper.

use std::collections::VecDeque;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use serde_json::Value;

use crate::state::FakeState;

/// Pause between the two halves of a line that is deliberately split, so that
/// the client sees them in two reads.
const SPLIT_PAUSE: Duration = Duration::from_millis(10);
/// Pause before an abort: hyper flushes what it holds while the body is pending.
const FLUSH_PAUSE: Duration = Duration::from_millis(20);

/// One step of a body.
#[derive(Debug, Clone)]
pub(crate) enum Piece {
    Data(Bytes),
    Pause(Duration),
    /// Fail the body so hyper aborts the connection without an end marker.
    Abort,
}

/// Builds a list of pieces, putting `gap` between consecutive events.
#[derive(Debug, Default)]
pub(crate) struct Script {
    pieces: Vec<Piece>,
    gap: Option<Duration>,
    events: usize,
}

impl Script {
    pub(crate) fn new(gap: Option<Duration>) -> Self {
        Self {
            pieces: Vec::new(),
            gap,
            events: 0,
        }
    }

    fn before_event(&mut self) {
        if self.events > 0
            && let Some(gap) = self.gap
        {
            self.pieces.push(Piece::Pause(gap));
        }
        self.events += 1;
    }

    /// One event in one frame.
    pub(crate) fn event(&mut self, bytes: impl Into<Bytes>) {
        self.before_event();
        self.pieces.push(Piece::Data(bytes.into()));
    }

    /// One event sent as two frames, split in the middle.
    pub(crate) fn event_split(&mut self, bytes: impl Into<Bytes>) {
        let bytes: Bytes = bytes.into();
        self.before_event();
        let mid = bytes.len() / 2;
        self.pieces.push(Piece::Data(bytes.slice(..mid)));
        self.pieces.push(Piece::Pause(SPLIT_PAUSE));
        self.pieces.push(Piece::Data(bytes.slice(mid..)));
    }

    /// `data: <json>\n\n`.
    pub(crate) fn data(&mut self, value: &Value) {
        self.event(format!("data: {value}\n\n"));
    }

    /// `event: <name>\ndata: <json>\n\n`.
    pub(crate) fn named(&mut self, name: &str, value: &Value) {
        self.event(format!("event: {name}\ndata: {value}\n\n"));
    }

    /// Ends the body with an error instead of a clean end, after a short pause
    /// so that the headers and the frames before it reach the client first.
    pub(crate) fn abort(&mut self) {
        self.pieces.push(Piece::Pause(FLUSH_PAUSE));
        self.pieces.push(Piece::Abort);
    }

    pub(crate) fn into_pieces(self) -> Vec<Piece> {
        self.pieces
    }
}

/// Counts a cancellation when dropped before `completed` is set.
struct CancelGuard {
    state: Option<FakeState>,
    completed: bool,
}

impl CancelGuard {
    /// The fake has handed over everything it meant to send.
    fn finish(&mut self) {
        self.completed = true;
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        if !self.completed
            && let Some(state) = &self.state
        {
            state.count_cancel();
        }
    }
}

struct Playback {
    pieces: VecDeque<Piece>,
    guard: CancelGuard,
}

impl Playback {
    fn only_pauses_left(&self) -> bool {
        self.pieces.iter().all(|p| matches!(p, Piece::Pause(_)))
    }
}

/// Plays `pieces` as a body; with `state`, an early drop counts as a cancellation.
pub(crate) fn play(pieces: Vec<Piece>, state: Option<FakeState>) -> Body {
    let playback = Playback {
        pieces: pieces.into(),
        guard: CancelGuard {
            state,
            completed: false,
        },
    };
    let stream = futures::stream::unfold(playback, |mut pb| async move {
        loop {
            match pb.pieces.pop_front() {
                None => {
                    pb.guard.finish();
                    return None;
                }
                Some(Piece::Pause(duration)) => tokio::time::sleep(duration).await,
                Some(Piece::Data(bytes)) => {
                    if let Some(state) = &pb.guard.state {
                        state.count_piece();
                    }
                    if pb.only_pauses_left() {
                        pb.guard.finish();
                    }
                    return Some((Ok::<Bytes, std::io::Error>(bytes), pb));
                }
                Some(Piece::Abort) => {
                    // A deliberate abort is not a client cancellation.
                    pb.guard.finish();
                    pb.pieces.clear();
                    let error = std::io::Error::other("fake upstream dropped the connection");
                    return Some((Err(error), pb));
                }
            }
        }
    });
    Body::from_stream(stream)
}
