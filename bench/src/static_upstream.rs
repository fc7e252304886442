//! `metatron-bench static-upstream`: the cheapest upstream there is, a fixed 1 KiB answer
//! to every request, so the gateway benchmark measures the proxies rather than the
//! service behind them. It runs until killed.

use axum::http::header;
use axum::response::IntoResponse;
use axum::Router;

/// `metatron-bench static-upstream`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Port to listen on (127.0.0.1).
    #[arg(long)]
    pub port: u16,
}

/// The answer: 1 KiB of text, the size of a small JSON document.
static BODY: [u8; 1024] = [b'x'; 1024];

async fn answer() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain")], &BODY[..])
}

/// Serves every path (including the gateway's health check, `GET /ready`) with [`BODY`].
pub fn run(args: &Args) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
        eprintln!("static upstream on 127.0.0.1:{}", args.port);
        axum::serve(listener, Router::new().fallback(answer)).await?;
        Ok(())
    })
}
