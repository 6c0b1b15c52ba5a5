//! Bridge ports and VLANs: `ip link set <port> type bridge_slave ...`, `bridge vlan ...`,
//! `ip link set <br> type bridge vlan_filtering ...`.

use std::fmt;

use netlink_packet_core::{NLM_F_ACK, NLM_F_DUMP, NLM_F_REQUEST};
use netlink_packet_route::link::{
    AfSpecBridge, BridgeFlag, BridgeVlanInfo, BridgeVlanInfoFlags, InfoBridge, InfoBridgePort,
    InfoData, InfoKind, InfoPortData, InfoPortKind, LinkAttribute, LinkExtentMask, LinkInfo,
    LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};

use super::link::{addressed, LinkRef};
use super::{Netlink, NlError, NlResultExt};
use crate::error::Result;

/// Bridge port settings to change; `None` leaves a setting as it is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BridgePortFlags {
    /// Reflect frames back out of the port they came in on (`hairpinMode`).
    pub hairpin: Option<bool>,
    /// Isolated ports cannot talk to each other, only to non-isolated ports.
    pub isolated: Option<bool>,
    pub learning: Option<bool>,
}

/// A VLAN (or an inclusive range `vid..=last`) on a bridge port or on the bridge itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BridgeVlan {
    pub vid: u16,
    /// Last VID of a range; equal to `vid` for a single VLAN.
    pub last: u16,
    /// Untagged ingress frames get this VID (only for a single VLAN).
    pub pvid: bool,
    /// Egress frames of this VLAN leave untagged.
    pub untagged: bool,
}

impl BridgeVlan {
    pub fn one(vid: u16) -> BridgeVlan {
        BridgeVlan {
            vid,
            last: vid,
            pvid: false,
            untagged: false,
        }
    }

    pub fn range(first: u16, last: u16) -> BridgeVlan {
        BridgeVlan {
            last,
            ..BridgeVlan::one(first)
        }
    }

    pub fn pvid(mut self) -> BridgeVlan {
        self.pvid = true;
        self
    }

    pub fn untagged(mut self) -> BridgeVlan {
        self.untagged = true;
        self
    }

    fn flags(&self) -> BridgeVlanInfoFlags {
        let mut f = BridgeVlanInfoFlags::empty();
        if self.pvid {
            f |= BridgeVlanInfoFlags::Pvid;
        }
        if self.untagged {
            f |= BridgeVlanInfoFlags::Untagged;
        }
        f
    }

    fn push_to(&self, spec: &mut Vec<AfSpecBridge>) {
        let flags = self.flags();
        if self.last == self.vid {
            spec.push(AfSpecBridge::VlanInfo(BridgeVlanInfo {
                vid: self.vid,
                flags,
            }));
        } else {
            spec.push(AfSpecBridge::VlanInfo(BridgeVlanInfo {
                vid: self.vid,
                flags: flags | BridgeVlanInfoFlags::RangeBegin,
            }));
            spec.push(AfSpecBridge::VlanInfo(BridgeVlanInfo {
                vid: self.last,
                flags: flags | BridgeVlanInfoFlags::RangeEnd,
            }));
        }
    }
}

impl fmt::Display for BridgeVlan {
    /// `100 pvid untagged`, `200-202`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.vid)?;
        if self.last != self.vid {
            write!(f, "-{}", self.last)?;
        }
        if self.pvid {
            f.write_str(" pvid")?;
        }
        if self.untagged {
            f.write_str(" untagged")?;
        }
        Ok(())
    }
}

fn list(vlans: &[BridgeVlan]) -> String {
    vlans
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl Netlink {
    /// Change bridge port settings of `port` (which must be attached to a bridge).
    pub fn set_bridge_port<'a>(
        &self,
        port: impl Into<LinkRef<'a>>,
        f: &BridgePortFlags,
    ) -> Result<()> {
        let r = port.into();
        let mut data = Vec::new();
        if let Some(v) = f.hairpin {
            data.push(InfoBridgePort::HairpinMode(v));
        }
        if let Some(v) = f.isolated {
            data.push(InfoBridgePort::Isolated(v));
        }
        if let Some(v) = f.learning {
            data.push(InfoBridgePort::Learning(v));
        }
        if data.is_empty() {
            return Ok(());
        }
        let mut m = addressed(r);
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::PortKind(InfoPortKind::Bridge),
            LinkInfo::PortData(InfoPortData::BridgePort(data)),
        ]));
        self.changelink(m)
            .or_nl(|| format!("setting bridge port flags {f:?} on {r}"))
    }

    /// `ip link set <bridge> type bridge vlan_filtering 0|1`.
    pub fn set_vlan_filtering<'a>(&self, bridge: impl Into<LinkRef<'a>>, on: bool) -> Result<()> {
        let r = bridge.into();
        let mut m = addressed(r);
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            LinkInfo::Data(InfoData::Bridge(vec![InfoBridge::VlanFiltering(on)])),
        ]));
        self.changelink(m)
            .or_nl(|| format!("setting vlan_filtering {} on {r}", u8::from(on)))
    }

    /// `RTM_NEWLINK` on an existing link (no create): apply link-info changes.
    fn changelink(&self, m: LinkMessage) -> std::result::Result<(), NlError> {
        self.request(RouteNetlinkMessage::NewLink(m), NLM_F_REQUEST | NLM_F_ACK)
            .map(drop)
    }

    fn vlan_message(index: u32, vlans: &[BridgeVlan], bridge_self: bool) -> LinkMessage {
        let mut m = LinkMessage::default();
        m.header.interface_family = AddressFamily::Bridge;
        m.header.index = index;
        let mut spec = Vec::new();
        if bridge_self {
            spec.push(AfSpecBridge::Flags(BridgeFlag::LowerDev));
        }
        for v in vlans {
            v.push_to(&mut spec);
        }
        m.attributes.push(LinkAttribute::AfSpecBridge(spec));
        m
    }

    /// `bridge vlan add dev <index> vid ... [pvid] [untagged] [self]`: on a bridge port, or on
    /// the bridge device itself with `bridge_self`. Adding an existing VLAN updates its flags.
    pub fn add_bridge_vlans(
        &self,
        index: u32,
        vlans: &[BridgeVlan],
        bridge_self: bool,
    ) -> Result<()> {
        let m = Self::vlan_message(index, vlans, bridge_self);
        self.request(RouteNetlinkMessage::SetLink(m), NLM_F_REQUEST | NLM_F_ACK)
            .map(drop)
            .or_nl(|| format!("adding vlans {} to {}", list(vlans), LinkRef::Index(index)))
    }

    /// `bridge vlan del dev <index> vid ... [self]`. The kernel accepts deleting VLANs that are
    /// not there, so this cannot report absence.
    pub fn del_bridge_vlans(
        &self,
        index: u32,
        vlans: &[BridgeVlan],
        bridge_self: bool,
    ) -> Result<()> {
        let m = Self::vlan_message(index, vlans, bridge_self);
        self.request(RouteNetlinkMessage::DelLink(m), NLM_F_REQUEST | NLM_F_ACK)
            .map(drop)
            .or_nl(|| {
                format!(
                    "deleting vlans {} from {}",
                    list(vlans),
                    LinkRef::Index(index)
                )
            })
    }

    /// The VLANs of a bridge port or bridge (`bridge vlan show dev <index>`), one entry per VID.
    /// The kernel has no per-device filter for this: it walks every bridge port.
    pub fn bridge_vlans(&self, index: u32) -> Result<Vec<BridgeVlan>> {
        let mut m = LinkMessage::default();
        m.header.interface_family = AddressFamily::Bridge;
        m.attributes
            .push(LinkAttribute::ExtMask(vec![LinkExtentMask::Brvlan]));
        let replies = self
            .request(RouteNetlinkMessage::GetLink(m), NLM_F_REQUEST | NLM_F_DUMP)
            .or_nl(|| format!("listing vlans of {}", LinkRef::Index(index)))?;
        let mut out = Vec::new();
        for r in replies {
            let RouteNetlinkMessage::NewLink(l) = r else {
                continue;
            };
            if l.header.index != index {
                continue;
            }
            let mut range_start = None;
            for a in &l.attributes {
                let LinkAttribute::AfSpecBridge(spec) = a else {
                    continue;
                };
                for s in spec {
                    let AfSpecBridge::VlanInfo(v) = s else {
                        continue;
                    };
                    let mut bv = BridgeVlan::one(v.vid);
                    bv.pvid = v.flags.contains(BridgeVlanInfoFlags::Pvid);
                    bv.untagged = v.flags.contains(BridgeVlanInfoFlags::Untagged);
                    if v.flags.contains(BridgeVlanInfoFlags::RangeBegin) {
                        range_start = Some(v.vid);
                    } else if v.flags.contains(BridgeVlanInfoFlags::RangeEnd) {
                        let first = range_start.take().unwrap_or(v.vid);
                        out.extend((first..=v.vid).map(|vid| BridgeVlan {
                            vid,
                            last: vid,
                            ..bv
                        }));
                    } else {
                        out.push(bv);
                    }
                }
            }
            if !out.is_empty() {
                break;
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vlan_requests_encode_ranges_and_self() {
        let vlans = [
            BridgeVlan::one(10).pvid().untagged(),
            BridgeVlan::range(20, 22),
        ];
        assert_eq!(list(&vlans), "10 pvid untagged, 20-22");
        let m = Netlink::vlan_message(7, &vlans, true);
        assert_eq!(m.header.index, 7);
        assert_eq!(m.header.interface_family, AddressFamily::Bridge);
        let info = |vid, flags| AfSpecBridge::VlanInfo(BridgeVlanInfo { vid, flags });
        let want = vec![
            AfSpecBridge::Flags(BridgeFlag::LowerDev),
            info(
                10,
                BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged,
            ),
            info(20, BridgeVlanInfoFlags::RangeBegin),
            info(22, BridgeVlanInfoFlags::RangeEnd),
        ];
        assert_eq!(m.attributes, vec![LinkAttribute::AfSpecBridge(want)]);
        let m = Netlink::vlan_message(7, &vlans[..1], false);
        let LinkAttribute::AfSpecBridge(spec) = &m.attributes[0] else {
            panic!("{m:?}");
        };
        assert_eq!(spec.len(), 1, "no self flag: {spec:?}");
    }
}
