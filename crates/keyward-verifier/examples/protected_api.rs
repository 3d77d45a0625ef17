//! An API protected by keyward's embedded verifier: `KEYWARD_URL=http://127.0.0.1:8080
//! KEYWARD_KEY=<a key with keys:replicate and keys:verify> cargo run -p keyward-verifier --features client --example protected_api`
use axum::{Router, routing::get};
use keyward_verifier::{KeywardLayer, Verifier};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let verifier = Verifier::connect(&std::env::var("KEYWARD_URL")?, &std::env::var("KEYWARD_KEY")?).await?;
    let app = Router::new().route("/hello", get(|| async { "hello\n" })).layer(KeywardLayer::new(verifier));
    let listener = tokio::net::TcpListener::bind(std::env::var("LISTEN").unwrap_or("127.0.0.1:3000".into())).await?;
    println!("listening on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
