fn main() {
    std::process::exit(shared::skel::run(&loopback::Loopback));
}
