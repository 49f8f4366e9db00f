//! Log lines collected in memory and written to stderr in batches by a thread of their own.
//!
//! A request formats its log line and appends it to a shared buffer (a copy under a short lock;
//! no allocation per line, no system call; a thread is woken at most twice per batch, never per
//! line). The writer thread sleeps until a line arrives, lets lines gather for
//! [`Limits::flush_interval`] (or until [`Limits::flush_bytes`] wait), then takes the whole buffer
//! and writes it with one `write` (two buffers swap places, so neither is reallocated). An idle
//! gateway's writer never wakes.
//!
//! Why not `tracing_appender::non_blocking`: it sends each line through a channel as its own
//! allocation, and its writer thread, woken by each line, wrote each line with its own system call
//! and spun (`sched_yield`) waiting for the next one. Under load that cost a `write` and a
//! `sched_yield` per request on the gateway's CPU — more than formatting the line
//! (docs/BENCHMARKS.md).
//!
//! A slow reader of stderr (a full pipe, a stalled log collector) blocks only the writer thread.
//! Lines arriving while [`Limits::max_bytes`] are already waiting are dropped, never waited for,
//! and the writer reports how many when it next writes. Dropping the [`LogWriterGuard`] writes
//! everything still waiting.

use std::{
    io::Write,
    sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use tracing_subscriber::fmt::MakeWriter;

/// When the writer thread writes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Longest a line waits before it is written.
    pub(crate) flush_interval: Duration,
    /// Waiting bytes that wake the writer before the interval is up.
    pub(crate) flush_bytes: usize,
    /// Most bytes waiting; lines beyond are dropped.
    pub(crate) max_bytes: usize,
}

impl Limits {
    /// Waiting bytes that wake the writer early, at most: a batch this size is one write.
    const FLUSH_BYTES: usize = 256 * 1024;

    /// Lines written at least every `flush_interval`, at most `max_bytes` waiting; the writer is
    /// woken early once 256 KiB (or a quarter of `max_bytes`, if less) wait.
    pub(crate) fn new(flush_interval: Duration, max_bytes: usize) -> Self {
        Self {
            flush_interval,
            flush_bytes: Self::FLUSH_BYTES.min(max_bytes / 4),
            max_bytes,
        }
    }
}

/// The line reporting dropped lines, in the log's own format: given the count, returns the bytes
/// to write (a whole line, newline included).
pub(crate) type DropNotice = Box<dyn Fn(u64) -> Vec<u8> + Send>;

/// What requests and the writer thread share.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Signalled by the first line of a batch, when `flush_bytes` wait, and when the guard is
    /// dropped.
    wake: Condvar,
    limits: Limits,
}

#[derive(Default)]
struct State {
    /// Lines waiting to be written.
    pending: Vec<u8>,
    /// Lines dropped since the last batch.
    dropped: u64,
    /// Set by the guard: write what is left and stop.
    closing: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves whole lines or none: the state is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn push(&self, line: &[u8]) {
        let mut state = self.lock();
        let waiting = state.pending.len();
        if waiting + line.len() > self.limits.max_bytes {
            state.dropped += 1;
            return;
        }
        state.pending.extend_from_slice(line);
        // The writer sleeps until a first line arrives, then until the interval is up or
        // `flush_bytes` wait: two wake-ups per batch at most, none per line.
        let first = waiting == 0;
        let reached =
            waiting < self.limits.flush_bytes && waiting + line.len() >= self.limits.flush_bytes;
        drop(state);
        if first || reached {
            self.wake.notify_one();
        }
    }
}

/// The `MakeWriter` given to the log formatter: each line goes to the shared buffer (or, without
/// a writer thread, straight to stderr).
#[derive(Clone)]
pub(crate) struct LogBuffer {
    shared: Option<Arc<Shared>>,
}

impl LogBuffer {
    /// Lines written to stderr by the caller, one system call each: for when no writer thread
    /// could be started.
    pub(crate) fn unbuffered() -> Self {
        Self { shared: None }
    }
}

/// One formatted line on its way to the buffer.
pub(crate) enum LineSink<'a> {
    Buffer(&'a Shared),
    Stderr(std::io::Stderr),
}

impl Write for LineSink<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Self::Buffer(shared) => {
                // The formatter hands over each event as one whole line; a dropped line still
                // counts as written, so that logging never fails a request.
                shared.push(buf);
                Ok(buf.len())
            }
            Self::Stderr(stderr) => stderr.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Self::Buffer(_) => Ok(()),
            Self::Stderr(stderr) => stderr.flush(),
        }
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = LineSink<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        match &self.shared {
            Some(shared) => LineSink::Buffer(shared),
            None => LineSink::Stderr(std::io::stderr()),
        }
    }
}

/// Owns the writer thread: dropping it writes the lines still waiting and stops the thread.
#[must_use = "dropping the guard stops the log writer"]
pub(crate) struct LogWriterGuard {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for LogWriterGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriterGuard").finish_non_exhaustive()
    }
}

impl Drop for LogWriterGuard {
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.take() {
            // A writer that panicked has nothing more to write.
            drop(thread.join());
        }
    }
}

/// Starts the writer thread over `out`, with `notice` as the line reporting dropped lines.
pub(crate) fn start<W>(
    out: W,
    limits: Limits,
    notice: DropNotice,
) -> std::io::Result<(LogBuffer, LogWriterGuard)>
where
    W: Write + Send + 'static,
{
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        wake: Condvar::new(),
        limits,
    });
    let thread = std::thread::Builder::new()
        .name("bff-log-writer".to_owned())
        .spawn({
            let shared = Arc::clone(&shared);
            move || write_batches(&shared, out, &notice)
        })?;
    Ok((
        LogBuffer {
            shared: Some(Arc::clone(&shared)),
        },
        LogWriterGuard {
            shared,
            thread: Some(thread),
        },
    ))
}

/// The writer thread: waits for a batch, writes it, until the guard is dropped.
fn write_batches<W: Write>(shared: &Shared, mut out: W, notice: &DropNotice) {
    let limits = shared.limits;
    let mut batch = Vec::new();
    loop {
        let (dropped, closing) = {
            let mut state = shared.lock();
            // Nothing to write: no wake-ups until a line arrives.
            while state.pending.is_empty() && !state.closing {
                state = shared
                    .wake
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            let deadline = Instant::now() + limits.flush_interval;
            while !state.closing && state.pending.len() < limits.flush_bytes {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                state = shared
                    .wake
                    .wait_timeout(state, deadline - now)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            std::mem::swap(&mut state.pending, &mut batch);
            (std::mem::take(&mut state.dropped), state.closing)
        };
        if dropped > 0 {
            batch.extend_from_slice(&notice(dropped));
        }
        if !batch.is_empty() {
            // Nowhere to report a failing stderr: the lines are lost, the gateway goes on.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
            batch.clear();
            // A burst's capacity is not kept for ever.
            batch.shrink_to(limits.flush_bytes * 2);
        }
        if closing {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer whose bytes the test can read, counting its `write` calls.
    #[derive(Clone, Default)]
    struct Captured {
        bytes: Arc<Mutex<Vec<u8>>>,
        writes: Arc<Mutex<usize>>,
    }

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.bytes.lock().unwrap().extend_from_slice(buf);
            *self.writes.lock().unwrap() += 1;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8(self.bytes.lock().unwrap().clone()).unwrap()
        }
        fn writes(&self) -> usize {
            *self.writes.lock().unwrap()
        }
        /// Waits (at most 10 s) until `done` holds of the text written.
        fn wait_for(&self, done: impl Fn(&str) -> bool) -> String {
            let give_up = Instant::now() + Duration::from_secs(10);
            loop {
                let text = self.text();
                if done(&text) || Instant::now() > give_up {
                    return text;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    fn notice() -> DropNotice {
        Box::new(|dropped| format!("dropped {dropped}\n").into_bytes())
    }

    fn line(buffer: &LogBuffer, text: &str) {
        buffer.make_writer().write_all(text.as_bytes()).unwrap();
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn every_line_is_written_in_order_in_one_write_when_the_guard_is_dropped() {
        let out = Captured::default();
        let limits = Limits {
            flush_interval: HOUR,
            flush_bytes: 1 << 20,
            max_bytes: 1 << 20,
        };
        let (buffer, guard) = start(out.clone(), limits, notice()).unwrap();
        let expected: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        for i in 0..1000 {
            line(&buffer, &format!("line {i}\n"));
        }
        assert_eq!(out.text(), "", "nothing is written before a batch is due");
        drop(guard);
        assert_eq!(out.text(), expected);
        assert_eq!(out.writes(), 1, "one batch, one write");
    }

    #[test]
    fn lines_from_many_threads_are_never_interleaved_or_lost() {
        let out = Captured::default();
        let limits = Limits {
            flush_interval: Duration::from_millis(1),
            flush_bytes: 4096,
            max_bytes: 1 << 24,
        };
        let (buffer, guard) = start(out.clone(), limits, notice()).unwrap();
        std::thread::scope(|scope| {
            for t in 0..4 {
                let buffer = buffer.clone();
                scope.spawn(move || {
                    for i in 0..2000 {
                        line(
                            &buffer,
                            &format!("thread {t} line {i} {}\n", "x".repeat(40)),
                        );
                    }
                });
            }
        });
        drop(guard);
        let text = out.text();
        let mut seen = vec![0_usize; 4];
        for written in text.lines() {
            let mut words = written.split(' ');
            assert_eq!(words.next(), Some("thread"), "{written}");
            let t: usize = words.next().unwrap().parse().unwrap();
            assert_eq!(words.next(), Some("line"));
            let i: usize = words.next().unwrap().parse().unwrap();
            assert_eq!(i, seen[t], "thread {t}'s lines in order");
            seen[t] += 1;
        }
        assert_eq!(seen, vec![2000; 4]);
    }

    #[test]
    fn a_full_buffer_drops_lines_and_says_how_many() {
        let out = Captured::default();
        let limits = Limits {
            flush_interval: HOUR,
            flush_bytes: 1 << 20,
            max_bytes: 100,
        };
        let (buffer, guard) = start(out.clone(), limits, notice()).unwrap();
        for i in 0..20 {
            // 10 bytes each: 10 fit.
            line(&buffer, &format!("line {i:04}\n"));
        }
        drop(guard);
        let expected: String = (0..10).map(|i| format!("line {i:04}\n")).collect();
        assert_eq!(out.text(), format!("{expected}dropped 10\n"));
    }

    #[test]
    fn enough_waiting_bytes_wake_the_writer_before_the_interval() {
        let out = Captured::default();
        let limits = Limits {
            flush_interval: HOUR,
            flush_bytes: 64,
            max_bytes: 1 << 20,
        };
        let (buffer, guard) = start(out.clone(), limits, notice()).unwrap();
        line(&buffer, "short\n");
        for i in 0..10 {
            line(&buffer, &format!("line number {i}\n"));
        }
        let text = out.wait_for(|text| text.contains("line number 9"));
        assert!(text.starts_with("short\nline number 0\n"), "{text}");
        drop(guard);
    }

    #[test]
    fn a_quiet_log_is_written_when_the_interval_is_up() {
        let out = Captured::default();
        let limits = Limits {
            flush_interval: Duration::from_millis(10),
            flush_bytes: 1 << 20,
            max_bytes: 1 << 20,
        };
        let (buffer, guard) = start(out.clone(), limits, notice()).unwrap();
        line(&buffer, "one line\n");
        assert_eq!(out.wait_for(|text| !text.is_empty()), "one line\n");
        drop(guard);
    }
}
