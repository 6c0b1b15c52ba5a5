use super::*;

fn entry(orig_dst: &str, dport: u16, reply_src: &str, rsport: u16) -> Entry {
    let o = Tuple {
        src: "192.0.2.2".parse().unwrap(),
        dst: orig_dst.parse().unwrap(),
        proto: 17,
        sport: 5555,
        dport,
    };
    let r = Tuple {
        src: reply_src.parse().unwrap(),
        dst: o.src,
        proto: 17,
        sport: rsport,
        dport: 5555,
    };
    Entry {
        orig: o,
        reply: r,
        zone: 0,
    }
}

#[test]
fn filters_select_entries() {
    let old = "10.0.0.5".parse().unwrap();
    let new = "10.0.0.6".parse().unwrap();
    let to_old = entry("192.0.2.1", 8080, "10.0.0.5", 80);
    let to_new = entry("192.0.2.1", 8080, "10.0.0.6", 80);
    let unnated = entry("192.0.2.1", 8080, "192.0.2.1", 8080);
    let other_port = entry("192.0.2.1", 8081, "10.0.0.5", 80);
    let del = Filter {
        v6: false,
        proto: 17,
        dport: 8080,
        dst: None,
        select: Select::NatedTo(old, 80),
    };
    assert!(del.matches(&to_old));
    assert!(!del.matches(&to_new) && !del.matches(&unnated) && !del.matches(&other_port));
    let add = Filter {
        select: Select::StaleFor {
            target: (new, 80),
            any_unnated: true,
        },
        ..del.clone()
    };
    assert!(add.matches(&to_old) && add.matches(&unnated));
    assert!(!add.matches(&to_new));
    let tcp_add = Filter {
        select: Select::StaleFor {
            target: (new, 80),
            any_unnated: false,
        },
        ..del.clone()
    };
    assert!(!tcp_add.matches(&unnated) && tcp_add.matches(&to_old));
    let any = Filter {
        select: Select::Nated,
        ..del.clone()
    };
    assert!(any.matches(&to_old) && any.matches(&to_new));
    assert!(!any.matches(&unnated) && !any.matches(&other_port));
    let pinned = Filter {
        dst: Some("192.0.2.9".parse().unwrap()),
        ..del
    };
    assert!(!pinned.matches(&to_old));
}

#[test]
fn messages_round_trip() {
    let e = entry("192.0.2.1", 8080, "10.0.0.5", 80);
    let mut a = Attrs::new();
    a.nest(CTA_TUPLE_ORIG, |t| tuple_attrs(t, &e.orig));
    a.nest(CTA_TUPLE_REPLY, |t| tuple_attrs(t, &e.reply));
    assert_eq!(parse_entry(&a.0), Some(e));
    assert_eq!(parse_entry(&[1, 2, 3]), None);
    let f = Filter {
        v6: false,
        proto: 17,
        dport: 8080,
        dst: Some("192.0.2.1".parse().unwrap()),
        select: Select::NatedTo("10.0.0.5".parse().unwrap(), 80),
    };
    let d = dump_attrs(std::slice::from_ref(&f));
    let orig = attr(&d, CTA_TUPLE_ORIG).unwrap();
    assert!(attr(orig, CTA_TUPLE_IP).is_some());
    let fl = attr(attr(&d, CTA_FILTER).unwrap(), CTA_FILTER_ORIG_FLAGS).unwrap();
    assert_eq!(
        u32::from_ne_bytes(fl.try_into().unwrap()),
        FILTER_IP_DST | FILTER_PROTO_NUM | FILTER_PROTO_DST_PORT
    );
    // Filters that share only the protocol: the kernel filters on that alone.
    let g = Filter {
        dport: 53,
        dst: None,
        ..f.clone()
    };
    let d = dump_attrs(&[f.clone(), g.clone()]);
    let fl = attr(attr(&d, CTA_FILTER).unwrap(), CTA_FILTER_ORIG_FLAGS).unwrap();
    assert_eq!(u32::from_ne_bytes(fl.try_into().unwrap()), FILTER_PROTO_NUM);
    let tcp = Filter { proto: 6, ..f };
    assert!(dump_attrs(&[tcp, g]).is_empty(), "nothing in common");
}
