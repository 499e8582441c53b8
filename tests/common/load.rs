//! Load for the tests whose claim is that no request fails: while a reload (or a certificate
//! renewal, or a chain reload) runs, threads keep asking, each on its own connection, and
//! every error counts. There are no retries, so a request the server drops shows up as a
//! failure rather than as a slower success.

use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{Client, Response};

/// How many requests one connection's thread makes at most.
const MOST_REQUESTS: usize = 1_000_000;
/// How long one connection's thread asks at most, whatever the test does.
const MOST_TIME: Duration = Duration::from_secs(300);

/// Threads asking until [`Load::finish`] (or the drop), recording each answer of type `A`
/// and each failure.
pub struct Load<A> {
    stop: Arc<AtomicBool>,
    answers: Arc<Mutex<Vec<A>>>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Vec<JoinHandle<()>>,
}

impl<A: Send + 'static> Load<A> {
    /// Starts `connections` threads, each calling `request` again and again on a state of its
    /// own, `S::default()` at first (e.g. no connection yet). `Ok` is an answer; `Err` is a
    /// failure and puts the state back to its default, so the next request opens a new
    /// connection.
    pub fn start<S, F>(connections: usize, request: F) -> Load<A>
    where
        S: Default,
        F: FnMut(&mut S) -> Result<A, String> + Clone + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let answers = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let threads = (0..connections)
            .map(|_| {
                let (stop, answers, failures) = (stop.clone(), answers.clone(), failures.clone());
                let mut request = request.clone();
                std::thread::spawn(move || {
                    let started = Instant::now();
                    let mut state = S::default();
                    for _ in 0..MOST_REQUESTS {
                        if stop.load(Ordering::Relaxed) || started.elapsed() > MOST_TIME {
                            break;
                        }
                        match request(&mut state) {
                            Ok(answer) => answers.lock().unwrap().push(answer),
                            Err(failure) => {
                                failures.lock().unwrap().push(failure);
                                state = S::default();
                            }
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            answers,
            failures,
            threads,
        }
    }

    /// How many answers so far.
    pub fn answered(&self) -> usize {
        self.answers.lock().unwrap().len()
    }

    /// Waits, up to the harness's deadline, until more than `n` answers have come since the
    /// call; `what` names the wait in the timeout's panic.
    pub fn wait_for_more(&self, what: &str, n: usize) {
        let seen = self.answered();
        super::wait_for(what, || (self.answered() > seen + n).then_some(()));
    }

    /// Stops the threads, waits for their last requests, and returns every answer and failure.
    pub fn finish(mut self) -> (Vec<A>, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in std::mem::take(&mut self.threads) {
            t.join().unwrap();
        }
        let answers = std::mem::take(&mut *self.answers.lock().unwrap());
        let failures = std::mem::take(&mut *self.failures.lock().unwrap());
        (answers, failures)
    }
}

impl<A> Drop for Load<A> {
    /// A test that fails before `finish` leaves no thread asking a server that is gone.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sends `raw` on the kept-alive connection in `conn`, opened with `connect` when there is
/// none, and reads the response. A response that closes the connection (`Connection: close`)
/// takes it out of `conn`, so the next request opens another. A failure says whether the
/// connection was new or reused: a reused one closed under a request is the race a reload
/// must not lose.
pub fn keep_alive<S: Read + Write>(
    conn: &mut Option<Client<S>>,
    connect: impl FnOnce() -> std::io::Result<Client<S>>,
    raw: &str,
) -> Result<Response, String> {
    let which = if conn.is_some() {
        "a reused keep-alive"
    } else {
        "a new"
    };
    let client = match conn {
        Some(client) => client,
        None => conn.insert(connect().map_err(|e| format!("connect: {e}"))?),
    };
    let response = client
        .request(raw)
        .map_err(|e| format!("{which} connection: {e}"))?;
    let closes = response
        .header("connection")
        .is_some_and(|v| v.to_ascii_lowercase().contains("close"));
    if closes {
        *conn = None;
    }
    Ok(response)
}
