//! Any CNI_ARGS string: parsing and the known-key check never panic.
#![no_main]

use cni_shared::args::CniArgs;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(args) = CniArgs::parse(s) {
        let _ = args.get("IP");
        let _ = args.ignore_unknown();
        let _ = args.check_known(&["IP", "MAC"]);
        for (k, v) in args.iter() {
            assert!(!k.is_empty());
            assert_eq!(args.get(k).is_some(), true, "{k}={v}");
        }
    }
});
