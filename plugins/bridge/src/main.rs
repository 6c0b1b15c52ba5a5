//! bridge: a Linux bridge on the host, a veth pair per container, the gateway on the bridge and
//! NAT for outbound traffic — Docker's default network as a CNI plugin. A drop-in for the
//! reference `bridge`; the work is done by `cni_shared::bridged` (shared with vxlan). See
//! README.md for every key.

mod config;

use cni_shared::bridged;
use cni_shared::skel::{self, About, Plugin, Request};
use cni_shared::spec::CniResult;
use cni_shared::Result;

const ABOUT: About = About {
    name: "bridge",
    version: env!("CARGO_PKG_VERSION"),
};

fn main() {
    // host-local runs in-process when the one in CNI_PATH is the same build.
    cni_shared::invoke::set_builtin(&host_local::BUILTIN);
    skel::run(&Bridge, ABOUT)
}

struct Bridge;

impl Plugin for Bridge {
    fn add(&self, req: &Request) -> Result<CniResult> {
        bridged::add(req, &config::load(req)?)
    }

    fn del(&self, req: &Request) -> Result<()> {
        bridged::del(req, &config::load(req)?)
    }

    fn check(&self, req: &Request) -> Result<()> {
        bridged::check(req, &config::load(req)?)
    }

    fn status(&self, req: &Request) -> Result<()> {
        bridged::status(req, &config::load(req)?)
    }

    fn gc(&self, req: &Request) -> Result<()> {
        bridged::gc(req, &config::load(req)?)
    }
}
