//! TEMPORARY stub, replaced by the full CLI module.
use clap::Parser;
use std::path::PathBuf;
#[derive(Parser, Debug, Clone)]
#[command(name = "forkd", version)]
pub struct Cli {
    #[arg(short = 'c', long)]
    pub config: Option<PathBuf>,
    #[arg(long)]
    pub check_config: bool,
    #[arg(long)]
    pub print_config: bool,
    #[arg(short = 's', long)]
    pub signal: Option<String>,
    #[arg(short = 'b', long)]
    pub bind: Vec<String>,
    #[arg(short = 'w', long)]
    pub workers: Option<usize>,
    #[arg(short = 't', long)]
    pub timeout: Option<f64>,
    #[arg(long)]
    pub graceful_timeout: Option<f64>,
    #[arg(long)]
    pub max_requests: Option<u64>,
    #[arg(long)]
    pub max_requests_jitter: Option<u64>,
    #[arg(short = 'p', long)]
    pub pid: Option<PathBuf>,
    pub app: Option<String>,
    #[arg(last = true)]
    pub command: Vec<String>,
}
impl Cli {
    pub fn parse_args<I, T>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        Cli::try_parse_from(args)
    }
}
