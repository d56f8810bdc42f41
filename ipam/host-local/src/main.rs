fn main() {
    std::process::exit(shared::skel::run(&host_local::HostLocal));
}
