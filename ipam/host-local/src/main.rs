fn main() {
    cni_shared::skel::run(&host_local::HostLocal, host_local::ABOUT)
}
