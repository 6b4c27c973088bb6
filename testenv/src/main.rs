//! `duo-testenv`: starts etcd + kube-apiserver on loopback (see the library), optionally installs CRDs,
//! prints the kubeconfig path on stdout and runs until SIGTERM / SIGINT, then stops both.
//!
//! Usage: `duo-testenv [--crds DIR]` with `DUO_TOOLS_BIN` set (`source .tools/env`).

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut crds: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--crds" => crds = args.next().map(PathBuf::from),
            "-h" | "--help" => {
                println!(
                    "usage: duo-testenv [--crds DIR]   (needs DUO_TOOLS_BIN; prints the kubeconfig path)"
                );
                return ExitCode::SUCCESS;
            }
            other => {
                eprintln!("duo-testenv: unknown argument {other:?}");
                return ExitCode::FAILURE;
            }
        }
    }
    let Some(tools) = std::env::var_os(duo_testenv::TOOLS_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
    else {
        eprintln!(
            "duo-testenv: {} is not set: run scripts/setup.sh and `source .tools/env`",
            duo_testenv::TOOLS_ENV
        );
        return ExitCode::FAILURE;
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("duo-testenv: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result: anyhow::Result<()> = rt.block_on(async {
        let env = duo_testenv::TestEnv::start(&tools).await?;
        if let Some(dir) = &crds {
            env.install_crds(dir).await?;
        }
        println!("{}", env.kubeconfig.display());
        eprintln!(
            "duo-testenv: API server {} ready; Ctrl-C or SIGTERM stops it",
            env.server
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        drop(env);
        Ok(())
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duo-testenv: {e:#}");
            ExitCode::FAILURE
        }
    }
}
