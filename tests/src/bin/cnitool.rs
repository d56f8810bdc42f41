//! `cnitool [--annotation KEY=VALUE]... add|check|del|gc|status <net> <netns>`: see
//! `cni_tests::cnitool`.

use std::io::Write;
use std::process::ExitCode;

use cni_tests::cnitool::{run, usage, CnitoolError};

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    let exe = argv
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cnitool".to_string());
    match run(argv.get(1..).unwrap_or(&[]), |k| std::env::var(k).ok()) {
        Ok(Some(out)) => {
            let mut stdout = std::io::stdout();
            let _ = stdout.write_all(out.as_bytes());
            let _ = stdout.flush();
            ExitCode::SUCCESS
        }
        Ok(None) => ExitCode::SUCCESS,
        Err(CnitoolError::Usage(why)) => {
            if !why.is_empty() {
                eprintln!("{why}");
            }
            eprint!("{}", usage(&exe));
            ExitCode::FAILURE
        }
        Err(CnitoolError::Annotation(error)) => {
            // What a runtime would report: the CNI error object, nothing run.
            print!("{}", error.to_json(None));
            eprintln!("invalid pod annotations: {error}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}
