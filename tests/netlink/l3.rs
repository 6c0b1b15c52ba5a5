//! Addresses and routes.

use cni_shared::netlink::{AddrOpts, Family, Route, RouteFilter, Scope, MAIN_TABLE};
use cni_tests::testkit::Sandbox;

use super::{ip, net, nl, veth_pair};

#[test]
fn addresses_v4_v6_add_list_delete() {
    let sb = Sandbox::new("ad");
    let nl = nl(&sb);
    let (l, peer) = veth_pair(&nl, &sb, "a0", "a0p");
    let (v4, v6) = (net("10.1.0.5/24"), net("fd00:1::5/64"));
    nl.add_address(l.index, v4, &AddrOpts::default()).unwrap();
    nl.add_address(l.index, v6, &AddrOpts { nodad: true })
        .unwrap();
    nl.add_address(peer.index, net("10.1.0.6/24"), &AddrOpts::default())
        .unwrap();

    let all = nl.addresses(Some(l.index), None).unwrap();
    assert!(all.iter().all(|a| a.index == l.index), "{all:?}");
    let a4 = all.iter().find(|a| a.net == v4).unwrap();
    assert!(a4.permanent && !a4.nodad);
    let a6 = all.iter().find(|a| a.net == v6).unwrap();
    assert!(a6.nodad && !a6.tentative && a6.permanent, "{a6:?}");
    let only4 = nl.addresses(Some(l.index), Some(Family::V4)).unwrap();
    assert_eq!(only4.iter().map(|a| a.net).collect::<Vec<_>>(), vec![v4]);
    let everywhere = nl.addresses(None, Some(Family::V4)).unwrap();
    assert!(everywhere.iter().any(|a| a.index == peer.index));
    assert!(everywhere.iter().any(|a| a.net == net("127.0.0.1/8")));
    let shown = sb.ip(&["addr", "show", "dev", "a0"]);
    assert!(
        shown.contains("inet 10.1.0.5/24 brd 10.1.0.255") && shown.contains("fd00:1::5/64"),
        "{shown}"
    );
    assert!(shown.contains("nodad"), "{shown}");

    let e = nl
        .add_address(l.index, v4, &AddrOpts::default())
        .unwrap_err();
    assert_eq!(e.code, 999);
    assert!(
        e.msg.starts_with("adding address 10.1.0.5/24 to link #"),
        "{}",
        e.msg
    );
    assert!(e.msg.contains("File exists (os error 17)"), "{}", e.msg);
    assert!(!nl
        .ensure_address(l.index, v4, &AddrOpts::default())
        .unwrap());
    let v4b = net("10.1.1.5/24");
    assert!(nl
        .ensure_address(l.index, v4b, &AddrOpts::default())
        .unwrap());

    for a in [v4, v6, v4b] {
        assert!(nl.delete_address(l.index, a).unwrap(), "{a}");
        assert!(!nl.delete_address(l.index, a).unwrap(), "{a}");
    }
    let left = nl.addresses(Some(l.index), Some(Family::V4)).unwrap();
    assert!(left.is_empty(), "{left:?}");
    // A link that is gone has no addresses to delete either.
    assert!(!nl.delete_address(999_999, v4).unwrap());
}

#[test]
fn routes_add_list_replace_delete() {
    let sb = Sandbox::new("rt");
    let nl = nl(&sb);
    let (l, _) = veth_pair(&nl, &sb, "r0", "r0p");
    let o = AddrOpts { nodad: true };
    nl.add_address(l.index, net("10.2.0.1/24"), &o).unwrap();
    nl.add_address(l.index, net("fd00:2::1/64"), &o).unwrap();
    let i = l.index;

    let default4 = Route::default_for(Family::V4)
        .via(ip("10.2.0.254"))
        .metric(100);
    let via = Route::to(net("10.3.0.0/16"))
        .via(ip("10.2.0.254"))
        .metric(50)
        .mtu(1300)
        .advmss(1260);
    let onlink = Route::to(net("10.4.0.0/24"))
        .via(ip("192.0.2.1"))
        .dev(i)
        .onlink();
    let direct = Route::to(net("10.5.0.0/24")).dev(i);
    let with_src = Route::to(net("10.6.0.0/24")).dev(i).src(ip("10.2.0.1"));
    let table100 = Route::to(net("10.7.0.0/24")).dev(i).table(100);
    let default6 = Route::default_for(Family::V6).via(ip("fd00:2::fe")).dev(i);
    for r in [
        &default4, &via, &onlink, &direct, &with_src, &table100, &default6,
    ] {
        nl.add_route(r).unwrap_or_else(|e| panic!("{r:?}: {e}"));
    }
    let shown = sb.ip(&["route", "show"]);
    assert!(shown.contains("default via 10.2.0.254 dev r0"), "{shown}");
    assert!(
        shown.contains("10.3.0.0/16 via 10.2.0.254 dev r0")
            && shown.contains("mtu 1300 advmss 1260"),
        "{shown}"
    );
    assert!(
        shown.contains("10.4.0.0/24 via 192.0.2.1 dev r0") && shown.contains("onlink"),
        "{shown}"
    );
    assert!(
        shown.contains("10.5.0.0/24 dev r0") && shown.contains("scope link"),
        "{shown}"
    );
    assert!(shown.contains("src 10.2.0.1"), "{shown}");
    assert!(sb
        .ip(&["route", "show", "table", "100"])
        .contains("10.7.0.0/24 dev r0"));

    let main4 = RouteFilter {
        family: Some(Family::V4),
        table: Some(MAIN_TABLE),
        oif: None,
    };
    let routes = nl.routes(&main4).unwrap();
    let find = |dst: &str| {
        routes
            .iter()
            .find(|r| r.dst == net(dst))
            .unwrap_or_else(|| panic!("{dst}: {routes:?}"))
    };
    let d = find("0.0.0.0/0");
    assert_eq!(
        (d.gateway, d.oif, d.metric, d.table),
        (Some(ip("10.2.0.254")), Some(i), Some(100), Some(MAIN_TABLE))
    );
    assert_eq!(d.scope, Some(Scope::Universe));
    let v = find("10.3.0.0/16");
    assert_eq!(
        (v.mtu, v.advmss, v.metric),
        (Some(1300), Some(1260), Some(50))
    );
    assert!(find("10.4.0.0/24").onlink);
    assert_eq!(find("10.5.0.0/24").scope, Some(Scope::Link));
    assert_eq!(find("10.6.0.0/24").src, Some(ip("10.2.0.1")));
    assert!(routes
        .iter()
        .all(|r| r.table == Some(MAIN_TABLE) && r.family() == Family::V4));
    assert!(!routes.iter().any(|r| r.dst == net("10.7.0.0/24")));

    let t100 = nl
        .routes(&RouteFilter {
            table: Some(100),
            ..RouteFilter::default()
        })
        .unwrap();
    assert_eq!(
        t100.iter().map(|r| r.dst).collect::<Vec<_>>(),
        vec![net("10.7.0.0/24")]
    );
    // A table that was never used, an interface that does not exist: nothing, not an error.
    assert!(nl
        .routes(&RouteFilter {
            table: Some(4242),
            ..RouteFilter::default()
        })
        .unwrap()
        .is_empty());
    assert!(nl
        .routes(&RouteFilter {
            oif: Some(999_999),
            ..RouteFilter::default()
        })
        .unwrap()
        .is_empty());
    let v6 = nl
        .routes(&RouteFilter {
            family: Some(Family::V6),
            table: Some(MAIN_TABLE),
            oif: Some(i),
        })
        .unwrap();
    assert!(
        v6.iter()
            .any(|r| r.is_default() && r.gateway == Some(ip("fd00:2::fe"))),
        "{v6:?}"
    );

    assert_eq!(nl.default_route_link(Family::V4).unwrap(), Some(i));
    assert_eq!(nl.default_route_link(Family::V6).unwrap(), Some(i));

    // add is strict, replace is idempotent and overwrites.
    let e = nl.add_route(&default4).unwrap_err();
    assert!(
        e.msg
            .starts_with("adding route default via 10.2.0.254 metric 100: File exists"),
        "{}",
        e.msg
    );
    nl.replace_route(&default4.clone().via(ip("10.2.0.253")))
        .unwrap();
    nl.replace_route(&default4.clone().via(ip("10.2.0.253")))
        .unwrap();
    let d: Vec<_> = nl
        .routes(&main4)
        .unwrap()
        .into_iter()
        .filter(|r| r.is_default())
        .collect();
    assert_eq!(d.len(), 1, "{d:?}");
    assert_eq!(d[0].gateway, Some(ip("10.2.0.253")));

    for r in [
        &default4, &via, &onlink, &direct, &with_src, &table100, &default6,
    ] {
        assert!(
            nl.delete_route(&Route {
                gateway: None,
                ..r.clone()
            })
            .unwrap(),
            "{r:?}"
        );
        assert!(!nl.delete_route(r).unwrap(), "{r:?}");
    }
    assert_eq!(nl.default_route_link(Family::V4).unwrap(), None);
    assert_eq!(nl.default_route_link(Family::V6).unwrap(), None);
}
