//! A panic still answers the runtime. Release builds abort on panic (`panic = "abort"`), so
//! without this the runtime would read an empty stdout and a signal, and show its operator
//! nothing. The hook runs before the abort: it writes a CNI error object (code 999, the
//! panic's message and place) to stdout and the same line to the log.
//!
//! Why straight to the file descriptor: the thread that panicked may not be the one holding
//! stdout's lock (the skeleton holds it for the whole invocation), and a hook that waited for
//! it would hang instead of answering.

use std::any::Any;
use std::io::Write;

use crate::spec::error::{CniError, ErrorCode};

/// Installs the hook for `plugin`. Called once, by the skeleton, before anything else runs.
pub fn install(plugin: &'static str) {
    std::panic::set_hook(Box::new(move |info| {
        let place = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let error = answer(plugin, info.payload(), &place);
        let _ = nix::unistd::write(std::io::stdout(), error.to_json(None).as_bytes());
        if !crate::log::in_progress() {
            log::error!("{}: {}", error.msg, error.details);
        } else {
            let _ = writeln!(std::io::stderr(), "{plugin}: {}", error.msg);
        }
    }));
}

/// The error object a panic with `payload` at `place` answers with.
fn answer(plugin: &str, payload: &(dyn Any + Send), place: &str) -> CniError {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_string());
    CniError::new(
        ErrorCode::Internal,
        format!(
            "{plugin} panicked: {}{place}",
            crate::redact::quoted(&text, crate::redact::QUOTE_MAX)
        ),
    )
    .with_details(
        "a bug in the plugin, not in the request: report this message; what the plugin had \
         started is undone by the DEL the runtime sends next",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The child half of the test below: panics with the hook installed, in a thread other
    /// than the one holding stdout's lock, as a plugin's namespace thread would.
    #[test]
    #[ignore = "the child half of a_panic_answers_with_an_error_object_naming_the_place"]
    fn panicking_child() {
        install("test-plugin");
        let stdout = std::io::stdout();
        let _held = stdout.lock();
        let _ = std::thread::spawn(|| panic!("the ruleset token=s3cr3t is unreadable")).join();
        std::process::exit(3);
    }

    #[test]
    fn a_panic_answers_with_an_error_object_naming_the_place() {
        let exe = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "panic::tests::panicking_child",
                "--ignored",
                "--nocapture",
            ])
            .output()
            .expect("run the child");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let start = stdout.find('{').expect("an error object on stdout");
        let end = stdout.rfind('}').expect("its end");
        let error = CniError::from_json(stdout[start..=end].as_bytes()).expect("a CNI error");
        assert_eq!(error.code, ErrorCode::Internal);
        assert!(
            error.msg.starts_with("test-plugin panicked: the ruleset"),
            "{}",
            error.msg
        );
        assert!(
            error.msg.contains("shared/src/panic.rs:"),
            "names the place: {}",
            error.msg
        );
        assert!(!stdout.contains("s3cr3t"), "no secret: {stdout}");
        assert!(error.details.contains("bug"), "{}", error.details);
    }
}
