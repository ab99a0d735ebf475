//! `quire serve [DIR]`: see `quire serve --help`.

use std::io::Write;

use quire_server::config::{Cli, Command, Config};
use quire_server::{serve, AppState};
use rand::RngCore;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("QUIRE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    use clap::{CommandFactory, FromArgMatches};
    let matches = Cli::command().get_matches();
    let Cli { command } = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let Command::Serve(mut args) = command;
    // QUIRE_TOKEN is private to our account; `--token` is not (see `Config::from_args`).
    args.token_on_command_line = matches
        .subcommand_matches("serve")
        .and_then(|serve| serve.value_source("token"))
        == Some(clap::parser::ValueSource::CommandLine);
    let config = Config::from_args(args)?;
    let token = config.token.clone().unwrap_or_else(|| {
        let mut bytes = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut bytes);
        hex::encode(bytes)
    });
    let open_browser = config.open_browser;
    let bind = config.bind.clone();
    let state = AppState::new(config, token.clone())?;
    let listener = tokio::net::TcpListener::bind(&bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {bind}: {e}"))?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}/?token={token}");
    println!(
        "Quire is serving {} at {url}",
        state.spaces.store_root().display()
    );
    std::io::stdout().flush()?;
    if open_browser {
        // Best effort, like `jupyter lab`: no browser is not an error.
        let _ = std::process::Command::new("xdg-open")
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    serve(listener, state, shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate.recv() => {},
    }
}
