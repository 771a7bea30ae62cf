//! The VRRP receive path, fed whatever arrives on a raw IP protocol 112 socket: the IPv4
//! header checks and the advertisement decoder. A packet it accepts must survive a round trip
//! through the encoder.
#![no_main]

use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use tandem_vrrp::net::{accept, RxFilter};
use tandem_vrrp::packet::{split_ipv4, Advert, ChecksumMode, Version};

fuzz_target!(|data: &[u8]| {
    let (src, dst) = (Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(224, 0, 0, 18));
    // The decoder alone, on the bytes as a VRRP message.
    if let Ok(adv) = Advert::decode(data, src, dst) {
        assert!(!adv.addresses.is_empty());
        // v2 carries whole seconds (0 is re-encoded as 1), v3 12 bits of centiseconds.
        if adv.version == Version::V3 || adv.interval_cs != 0 {
            for mode in [ChecksumMode::PseudoHeader, ChecksumMode::Rfc9568] {
                let again = Advert::decode(&adv.encode(mode, src, dst), src, dst);
                assert_eq!(again.as_ref(), Ok(&adv), "round trip of {data:?}");
            }
        }
    }
    // The whole receive path, on the bytes as an IPv4 packet.
    let _ = split_ipv4(data);
    for version in [Version::V2, Version::V3] {
        let f = RxFilter {
            vrid: 51,
            version,
            interval_cs: 100,
            own: Ipv4Addr::new(10, 0, 0, 2),
            peers: if data.len() % 2 == 0 { vec![] } else { vec![src] },
        };
        if let Ok(Some((_, adv))) = accept(data, &f) {
            assert_eq!((adv.vrid, adv.version), (51, version));
        }
    }
});
