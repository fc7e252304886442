//! Serving the gateway's connections: one event loop per CPU core, each accepting from the
//! shared listener and serving its connections ([`crate::h1`]) with the gateway's [`Front`]
//! as the service. A connection, the upstream connections its requests use
//! ([`crate::client`]) and every task involved stay on one thread, as in nginx's
//! process-per-core model: no request hops threads, and there is no router between the
//! connection and the proxy.

use std::future::Future;
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
        return serve_loop(listener, front, shutdown).await;
    }
    let listener = listener.into_std()?;
    // Dropping `stop` (with this future) ends the loops as sending to it does.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (finished, mut ended) = tokio::sync::mpsc::unbounded_channel();
    for n in 0..threads {
        let listener = listener.try_clone()?;
        let front = front.clone();
        let mut stopped = stopped.clone();
        let finished = finished.clone();
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
                            serve_loop(listener, front, stop).await
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
) -> std::io::Result<()> {
    let hyper = h1::hyper(front.gateway.config());
    platform::http::accept_until(listener, stop, |tcp, peer, stopping| {
        tokio::spawn(h1::serve(tcp, peer, front.clone(), hyper.clone(), stopping));
    })
    .await
}
