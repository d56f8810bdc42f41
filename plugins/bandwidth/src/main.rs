fn main() {
    std::process::exit(shared::skel::run(&bandwidth::Bandwidth));
}
