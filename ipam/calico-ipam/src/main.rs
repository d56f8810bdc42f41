fn main() {
    // A runtime runs us with CNI_COMMAND and no arguments; an operator with a command.
    if std::env::args_os().len() > 1 {
        std::process::exit(calico_ipam::cli::run_from_args());
    }
    std::process::exit(shared::skel::run(&calico_ipam::cni::CalicoIpam));
}
