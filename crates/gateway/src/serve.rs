//! Serving the gateway's connections: one event loop per CPU core, each accepting from the
//! shared listener and serving its connections ([`crate::h1`]) with the gateway's [`Front`]
//! as the service. A connection, the upstream connections its requests use
//! ([`crate::client`]) and every task involved stay on one thread, as in nginx's
//! process-per-core model: no request hops threads, and there is no router between the
//! connection and the proxy.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::{h1, Front};

/// Serves `front` on `listener` with `threads` event loops (single-threaded runtimes on
/// threads of their own; with one thread, on the caller's runtime) until `shutdown`
/// resolves or this future is dropped; then every loop stops accepting and lets its
/// in-flight requests finish. One loop failing stops the others and its error is returned.
pub(crate) async fn serve_per_core(
    listener: TcpListener,
    front: Front,
    shutdown: impl Future<Output = ()> + Send + 'static,
    threads: usize,
) -> std::io::Result<()> {
    if threads <= 1 {
        return serve_loop(listener, front, shutdown, Share::alone()).await;
    }
    let loads: Arc<[AtomicUsize]> = (0..threads).map(|_| AtomicUsize::new(0)).collect();
    let listener = listener.into_std()?;
    // Dropping `stop` (with this future) ends the loops as sending to it does.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (finished, mut ended) = tokio::sync::mpsc::unbounded_channel();
    for n in 0..threads {
        let listener = listener.try_clone()?;
        let front = front.clone();
        let mut stopped = stopped.clone();
        let finished = finished.clone();
        let share = Share {
            loads: loads.clone(),
            me: n,
        };
        std::thread::Builder::new()
            .name(format!("http-{n}"))
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|runtime| {
                        runtime.block_on(async move {
                            // Ends with the runtime, once the loop has drained.
                            tokio::spawn(keep_a_timer_due_soon());
                            let listener = TcpListener::from_std(listener)?;
                            let stop = async move {
                                let _ = stopped.wait_for(|stop| *stop).await;
                            };
                            serve_loop(listener, front, stop, share).await
                        })
                    });
                let _ = finished.send(result);
            })?;
    }
    drop(finished);
    let mut results = Vec::with_capacity(threads);
    tokio::pin!(shutdown);
    tokio::select! {
        () = &mut shutdown => {}
        // A loop only ends by itself when it fails.
        Some(result) = ended.recv() => results.push(result),
    }
    let _ = stop.send(true);
    while let Some(result) = ended.recv().await {
        results.push(result);
    }
    results.into_iter().collect()
}

/// Keeps a timer of this event loop due within the next quarter second, for ever.
///
/// Tokio wakes a parked event loop (an eventfd write, then an extra `epoll_wait`) whenever
/// a timer is armed that falls due before every other pending one. Every proxied request
/// arms one (its timeout, seconds away); on a loop with nothing else pending, that made
/// two more system calls and a wake-up per request. With this timer always due first,
/// arming a request's timeout is a plain insertion into the timer wheel.
async fn keep_a_timer_due_soon() {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
    }
}

/// Accepts connections on this event loop until `stop`, serving each in a task of its own
/// ([`h1::serve`]: HTTP/1.1, or HTTP/2 when it opens with the HTTP/2 preface: h2c with prior
/// knowledge); then closes the listener and waits until every connection has finished its
/// in-flight requests (each is told to close once they are done).
async fn serve_loop(
    listener: TcpListener,
    front: Front,
    stop: impl Future<Output = ()>,
    share: Share,
) -> std::io::Result<()> {
    let hyper = h1::hyper(front.gateway.config());
    platform::http::accept_until(listener, stop, |tcp, peer, stopping| {
        let serving = h1::serve(tcp, peer, front.clone(), hyper.clone(), stopping);
        let counted = share.counted();
        tokio::spawn(async move {
            serving.await;
            drop(counted);
        });
        share.over().then_some(YIELD_ACCEPTS)
    })
    .await
}

/// How long a loop with more connections than another leaves new ones to the others.
const YIELD_ACCEPTS: Duration = Duration::from_millis(1);

/// One event loop's part in spreading the connections over the loops.
///
/// Every loop waits on the one listener and the kernel wakes them all for a new connection,
/// so whichever loop happens to be awake takes it, and a burst of connections (a client
/// opening its pool) tends to land on one loop: measured, under a load over 32 kept-alive
/// connections the two loops of a 2-core machine split their CPU time 0:288 or 101:200 as
/// often as evenly, and the loop with most connections was the bottleneck (about 64,000
/// against 74,000 requests per second). nginx's workers share the same fate unless told
/// `reuseport`. So a loop that serves more connections than another pauses its accepting
/// for [`YIELD_ACCEPTS`] after each connection it takes: the least-loaded loop never pauses,
/// so a new connection never waits for a pause, and it goes to a loop with fewer.
struct Share {
    /// Open connections per loop.
    loads: Arc<[AtomicUsize]>,
    me: usize,
}

impl Share {
    /// The only loop.
    fn alone() -> Share {
        Share {
            loads: Arc::new([AtomicUsize::new(0)]),
            me: 0,
        }
    }

    /// Counts one more connection on this loop until the guard is dropped.
    fn counted(&self) -> Counted {
        self.loads[self.me].fetch_add(1, Ordering::Relaxed);
        Counted {
            loads: self.loads.clone(),
            me: self.me,
        }
    }

    /// Whether this loop serves more connections than another.
    fn over(&self) -> bool {
        let mine = self.loads[self.me].load(Ordering::Relaxed);
        self.loads
            .iter()
            .enumerate()
            .any(|(n, load)| n != self.me && load.load(Ordering::Relaxed) < mine)
    }
}

/// One open connection of a loop ([`Share::counted`]).
struct Counted {
    loads: Arc<[AtomicUsize]>,
    me: usize,
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.loads[self.me].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_loop_with_more_connections_than_another_yields_new_ones() {
        let loads: Arc<[AtomicUsize]> = (0..3).map(|_| AtomicUsize::new(0)).collect();
        let share = |me| Share {
            loads: loads.clone(),
            me,
        };
        let (a, b, c) = (share(0), share(1), share(2));
        assert!(!a.over() && !b.over() && !c.over(), "all even");
        let first = a.counted();
        assert!(a.over(), "one more than the others");
        assert!(!b.over() && !c.over());
        let _second = b.counted();
        assert!(
            a.over() && b.over() && !c.over(),
            "c, with none, never waits"
        );
        let _third = c.counted();
        assert!(!a.over() && !b.over() && !c.over(), "even again");
        drop(first);
        assert!(
            b.over() && c.over() && !a.over(),
            "a closed one: a takes the next"
        );
        let alone = Share::alone();
        let _one = alone.counted();
        assert!(!alone.over(), "a single loop never pauses");
    }
}
