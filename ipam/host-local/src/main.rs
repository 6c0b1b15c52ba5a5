/// The build ID, for the plugins with a built-in host-local to recognise this binary by.
#[used]
#[link_section = ".note.cni-rs"]
static BUILD_NOTE: cni_shared::builtin::Note = cni_shared::builtin::Note::new(host_local::BUILD_ID);

fn main() {
    cni_shared::skel::run(&host_local::HostLocal, host_local::ABOUT)
}
