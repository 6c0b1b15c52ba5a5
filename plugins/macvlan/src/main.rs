//! macvlan: each container gets a macvlan child of a host interface (the master), with its own
//! MAC address, directly on the master's network. A drop-in for the reference `macvlan`, plus
//! STATUS, GC and the `vlan` key (an 802.1q sub-interface as the master, like Docker's
//! `parent: eth0.10`). See README.md for the keys.

mod add;
mod check;
mod config;
mod del;
mod master;
mod records;
mod vlan;

use cni_shared::skel::{self, About, Plugin, Request};
use cni_shared::spec::CniResult;
use cni_shared::Result;

const ABOUT: About = About {
    name: "macvlan",
    version: env!("CARGO_PKG_VERSION"),
};

fn main() {
    // host-local runs in-process when the one in CNI_PATH is the same build.
    cni_shared::invoke::set_builtin(&host_local::BUILTIN);
    skel::run(&Macvlan, ABOUT)
}

struct Macvlan;

impl Plugin for Macvlan {
    fn add(&self, req: &Request) -> Result<CniResult> {
        add::add(req)
    }

    fn del(&self, req: &Request) -> Result<()> {
        del::del(req)
    }

    fn check(&self, req: &Request) -> Result<()> {
        check::check(req)
    }

    fn status(&self, req: &Request) -> Result<()> {
        check::status(req)
    }

    fn gc(&self, req: &Request) -> Result<()> {
        del::gc(req)
    }
}
