//! Busy polling for the one-worker runtime: when the worker runs out of
//! work, it keeps polling for I/O a short while before it sleeps.
//!
//! A sleeping worker costs a wake-up on every event that ends the sleep. In a
//! virtual machine without guest halt polling (this bench machine's
//! `guest_halt_poll_ns` is 0) the idle vCPU halts, and waking it again costs
//! tens of microseconds on every hop of every request: at one connection,
//! the upstream's answer and the client's next request each find Lakehouse
//! asleep. Polling through those gaps took the p50 of a chat through
//! Lakehouse at one connection on this machine from 89 to 48 µs whole and
//! from 104 to 78 µs streamed (interleaved A/B rounds against the zero-delay
//! fake upstream). HAProxy's `busy-polling` does the same, always on; here the
//! window adapts, as the kernel's haltpoll governor does, so a server whose
//! events come far apart (a model answering in seconds) stops polling at once:
//!
//! - the window starts at zero (no polling);
//! - a sleep shorter than the largest window (`server.busy_poll_us`) means
//!   polling that long would have caught its event: from the second such
//!   sleep in a row, the window doubles, from [`GROW_START`], up to that
//!   largest (a lone short sleep is most often the runtime waking itself
//!   right after a long one, to run a task woken meanwhile);
//! - a longer sleep halves it; below [`GROW_START`] it is zero again.
//!
//! The poller is a task: it yields to the scheduler in a loop, so the
//! runtime polls its I/O driver without blocking between rounds, and to the
//! OS (`sched_yield`), so another thread wanting the core gets it. It tells
//! work from polling by time: a round longer than [`BUSY_ROUND`] ran other
//! tasks, one longer than [`PREEMPTED`] was the OS running another thread.
//! It sleeps once its window passes without work, and the worker's next
//! wake-up (`on_thread_unpark`) wakes it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

/// The smallest window polled: the first step up from zero, and the floor
/// under which a shrinking window stops polling.
pub const GROW_START: Duration = Duration::from_micros(25);

/// A poll round that took longer than this ran other tasks (a bare round,
/// a zero-timeout `epoll_wait` and a `sched_yield`, takes about 1 µs)...
const BUSY_ROUND: Duration = Duration::from_micros(5);
/// ...unless it took longer than this: then the OS ran another thread on
/// the core (a scheduler slice is 0.75 ms or more). Counted as work, a busy
/// machine would keep the poller polling for as long as it stays busy.
const PREEMPTED: Duration = Duration::from_millis(1);

/// The largest window accepted by the configuration: past a millisecond,
/// polling costs more than any wake-up it saves.
pub const MAX_WINDOW: Duration = Duration::from_millis(1);

/// How long to poll before sleeping, adapted to the sleeps seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    current: Duration,
    max: Duration,
    /// Short sleeps in a row.
    short_sleeps: u32,
}

impl Window {
    /// Starts closed; `max` is the largest it grows to.
    pub fn new(max: Duration) -> Self {
        Self {
            current: Duration::ZERO,
            max,
            short_sleeps: 0,
        }
    }

    pub fn current(&self) -> Duration {
        self.current
    }

    /// Adapts to an idle spell of `idle` (polling, then sleeping) that the
    /// window did not cover.
    pub fn adapt(&mut self, idle: Duration) {
        if idle <= self.max {
            self.short_sleeps = self.short_sleeps.saturating_add(1);
            if self.short_sleeps >= 2 {
                self.current = (self.current * 2).max(GROW_START).min(self.max);
            }
        } else {
            self.short_sleeps = 0;
            self.current /= 2;
            if self.current < GROW_START {
                self.current = Duration::ZERO;
            }
        }
    }
}

/// What the poller and the worker's wake-up hook share.
#[derive(Debug)]
struct Shared {
    /// Signalled by the worker each time it wakes from a sleep.
    woke: Notify,
    /// The current window in nanoseconds, and whether the poller sleeps
    /// (read by tests and by nothing on the request path).
    window_ns: AtomicU64,
    asleep: watch::Sender<bool>,
}

/// The poller of one current-thread runtime.
#[derive(Debug, Clone)]
pub struct BusyPoll {
    shared: Arc<Shared>,
    max: Duration,
}

impl BusyPoll {
    /// A poller whose window grows to at most `max` (the configuration
    /// keeps it to [`MAX_WINDOW`]).
    pub fn new(max: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                woke: Notify::new(),
                window_ns: AtomicU64::new(0),
                asleep: watch::Sender::new(false),
            }),
            max,
        }
    }

    /// For the runtime builder's `on_thread_unpark`: wakes the poller when
    /// the worker wakes.
    pub fn unpark_hook(&self) -> impl Fn() + Send + Sync + 'static {
        let shared = Arc::clone(&self.shared);
        move || shared.woke.notify_one()
    }

    /// The window now.
    pub fn window(&self) -> Duration {
        Duration::from_nanos(self.shared.window_ns.load(Ordering::Relaxed))
    }

    /// Whether the poller sleeps (waits for the worker's next wake-up), watched.
    pub fn asleep(&self) -> watch::Receiver<bool> {
        self.shared.asleep.subscribe()
    }

    /// Polls through the worker's idle gaps, for as long as the runtime
    /// runs. Spawn it on the runtime whose builder took
    /// [`unpark_hook`](Self::unpark_hook).
    pub async fn run(self) {
        let window = Window::new(self.max);
        self.run_from(window).await;
    }

    async fn run_from(self, mut window: Window) {
        let mut last_work = Instant::now();
        loop {
            let mut previous = Instant::now();
            while previous.saturating_duration_since(last_work) < window.current() {
                tokio::task::yield_now().await;
                std::thread::yield_now();
                let now = Instant::now();
                let round = now.saturating_duration_since(previous);
                if round > BUSY_ROUND && round < PREEMPTED {
                    last_work = now;
                }
                previous = now;
            }
            self.shared.asleep.send_replace(true);
            self.shared.woke.notified().await;
            self.shared.asleep.send_replace(false);
            let now = Instant::now();
            window.adapt(now.saturating_duration_since(last_work));
            self.shared
                .window_ns
                .store(window.current().as_nanos() as u64, Ordering::Relaxed);
            last_work = now;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(200);

    #[test]
    fn short_sleeps_in_a_row_open_the_window_from_grow_start_up_to_the_max() {
        let mut window = Window::new(MAX);
        assert_eq!(window.current(), Duration::ZERO);
        let steps: Vec<u128> = (0..6)
            .map(|_| {
                window.adapt(Duration::from_micros(60));
                window.current().as_micros()
            })
            .collect();
        assert_eq!(steps, [0, 25, 50, 100, 200, 200]);
    }

    #[test]
    fn a_lone_short_sleep_between_long_ones_keeps_the_window_closed() {
        let mut window = Window::new(MAX);
        for _ in 0..4 {
            window.adapt(Duration::from_millis(30));
            window.adapt(Duration::from_micros(10));
            assert_eq!(window.current(), Duration::ZERO);
        }
    }

    #[test]
    fn long_sleeps_halve_the_window_and_close_it_below_grow_start() {
        let mut window = Window::new(MAX);
        for _ in 0..5 {
            window.adapt(Duration::from_micros(60));
        }
        assert_eq!(window.current(), MAX);
        let steps: Vec<u128> = (0..5)
            .map(|_| {
                window.adapt(Duration::from_millis(30));
                window.current().as_micros()
            })
            .collect();
        assert_eq!(steps, [100, 50, 25, 0, 0]);
    }

    #[test]
    fn a_zero_max_never_polls() {
        let mut window = Window::new(Duration::ZERO);
        window.adapt(Duration::ZERO);
        assert_eq!(window.current(), Duration::ZERO);
    }

    /// A current-thread runtime with the poller, as `lakehouse serve` builds
    /// it with one worker.
    fn runtime(poll: &BusyPoll) -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .on_thread_unpark(poll.unpark_hook())
            .build()
            .unwrap()
    }

    /// Ping-pong over a loopback socket with a thread on the other end: each
    /// reply ends a short sleep of the worker.
    async fn ping_pong(rounds: usize) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let echo = std::thread::spawn(move || {
            use std::io::{Read, Write};
            let (mut socket, _) = listener.accept().unwrap();
            let mut byte = [0u8; 1];
            while socket.read_exact(&mut byte).is_ok() {
                socket.write_all(&byte).unwrap();
            }
        });
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut byte = [7u8; 1];
        for _ in 0..rounds {
            socket.write_all(&byte).await.unwrap();
            socket.read_exact(&mut byte).await.unwrap();
        }
        drop(socket);
        tokio::task::spawn_blocking(move || echo.join().unwrap())
            .await
            .unwrap();
    }

    #[test]
    fn quick_replies_open_the_window_and_idleness_puts_the_poller_to_sleep() {
        // Wide, so that a loaded machine's slow replies still count as quick.
        let poll = BusyPoll::new(Duration::from_millis(50));
        let runtime = runtime(&poll);
        runtime.block_on(async {
            tokio::spawn(poll.clone().run());
            ping_pong(200).await;
            // Open once the worker's sleeps were seen to be short.
            assert!(
                poll.window() >= GROW_START,
                "window {:?} after 200 quick replies",
                poll.window()
            );
            // With nothing to do, the poller goes to sleep once its window
            // passes (were it to poll on, this would wait forever).
            poll.asleep().wait_for(|asleep| *asleep).await.unwrap();
        });
    }

    #[test]
    fn long_sleeps_close_the_window() {
        let poll = BusyPoll::new(MAX_WINDOW);
        let mut open = Window::new(MAX_WINDOW);
        while open.current() < MAX_WINDOW {
            open.adapt(Duration::ZERO);
        }
        let runtime = runtime(&poll);
        runtime.block_on(async {
            tokio::spawn(poll.clone().run_from(open));
            // Each timer wake-up ends a sleep longer than the largest
            // window: six halvings close it. Bounded, for a machine so busy
            // that the poller's rounds keep looking like work.
            let mut wakes = 0;
            while poll.window() != Duration::ZERO || wakes < 6 {
                tokio::time::sleep(Duration::from_millis(5)).await;
                wakes += 1;
                assert!(
                    wakes < 1000,
                    "window {:?} after 5 s of long sleeps",
                    poll.window()
                );
            }
        });
    }
}
