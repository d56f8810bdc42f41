fn main() {
    std::process::exit(shared::skel::run(&portmap::Portmap));
}
