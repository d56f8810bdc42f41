use std::io::Read;

use shared::spec::error::{CniError, ErrorCode};

fn main() {
    match std::env::args().nth(1).as_deref() {
        // `calico -v`, as the installer and operators use it.
        Some("-v") => {
            println!("{}", env!("CARGO_PKG_VERSION"));
        }
        // `calico -t`: the installer's datastore connection test.
        Some("-t") => std::process::exit(connection_test()),
        _ => std::process::exit(shared::skel::run(&calico::Calico)),
    }
}

fn connection_test() -> i32 {
    let mut stdin = Vec::new();
    let outcome = std::io::stdin()
        .read_to_end(&mut stdin)
        .map_err(|e| format!("cannot read the network configuration on stdin: {e}"))
        .and_then(|_| calico::connection_test::run(&stdin).map_err(|e| e.to_string()));
    match outcome {
        Ok(()) => 0,
        Err(cause) => {
            let error = CniError::new(ErrorCode::Datastore, calico::connection_test::FAILED)
                .with_details(cause);
            println!("{}", error.to_json(None));
            1
        }
    }
}
