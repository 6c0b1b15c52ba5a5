//! Any result JSON: decoding and converting to every version never panics, and a 1.1.0 result
//! converts to itself unchanged.
#![no_main]

use cni_shared::spec::{CniResult, Version};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((_, result)) = CniResult::from_slice(data, Version::V1_1_0) else {
        return;
    };
    for v in Version::ALL {
        if let Ok(out) = result.to_value(v) {
            let back = CniResult::from_value(&out, Version::V0_1_0);
            assert!(back.is_ok(), "our own {v} output must decode: {out}");
        }
    }
    if let Ok(once) = result.to_value(Version::V1_1_0) {
        let (_, again) = CniResult::from_value(&once, Version::V1_1_0).expect("decodes");
        let twice = again.to_value(Version::V1_1_0).expect("encodes");
        assert_eq!(once, twice, "1.1.0 -> 1.1.0 is stable");
    }
});
