fn main() {
    // `calico -v`, as the installer and operators use it.
    if std::env::args().nth(1).as_deref() == Some("-v") {
        println!("{}", env!("CARGO_PKG_VERSION"));
        return;
    }
    std::process::exit(shared::skel::run(&calico::Calico));
}
