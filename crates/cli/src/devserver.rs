//! `skysync devserver`: the dev server, with the same flags as `skysync-devserver`.

use crate::error::CliError;
use skysync_devserver::{DevServer, ServerConfig};
use std::io::Write as _;

pub use skysync_devserver::command_line::ServerArgs as DevServerArgs;

/// The server configuration the flags ask for (key files are read here, before the runtime).
pub fn config(args: DevServerArgs) -> Result<ServerConfig, CliError> {
    Ok(args.into_config()?)
}

/// Runs the server until ctrl-c, printing `skysync devserver listening on URL` once it accepts.
pub async fn run(config: ServerConfig) -> Result<(), CliError> {
    let server = DevServer::start(config).await?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "skysync devserver listening on {}", server.base_url())?;
        out.flush()?;
    }
    tokio::signal::ctrl_c().await?;
    server.shutdown().await?;
    Ok(())
}
