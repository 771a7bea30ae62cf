use super::*;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 100);
const SRC: Ipv4Addr = Ipv4Addr::new(10, 231, 0, 1);
const GROUP: Ipv4Addr = Ipv4Addr::new(224, 0, 0, 18);

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .filter_map(|x| u8::from_str_radix(x, 16).ok())
        .collect()
}

/// Captured from Keepalived 2.2.7: VRRPv2, VRID 51, priority 150, 1 s, VIP 10.231.0.100.
const KEEPALIVED_V2: &str = "21 33 96 01 00 01 3d 7f 0a e7 00 64 00 00 00 00 00 00 00 00";
/// Captured from Keepalived 2.2.7: VRRPv3, 10 cs, pseudo-header checksum, sent by 10.231.0.1.
const KEEPALIVED_V3: &str = "31 33 96 01 00 0a 41 ff 0a e7 00 64";

fn advert(version: Version, interval_cs: u16) -> Advert {
    Advert {
        version,
        vrid: 51,
        priority: 150,
        interval_cs,
        addresses: vec![VIP],
    }
}

#[test]
fn v2_matches_keepalived_both_ways() {
    let bytes = hex(KEEPALIVED_V2);
    assert_eq!(
        Advert::decode(&bytes, SRC, GROUP),
        Ok(advert(Version::V2, 100))
    );
    assert_eq!(
        advert(Version::V2, 100).encode(ChecksumMode::PseudoHeader, SRC, GROUP),
        bytes
    );
}

#[test]
fn v3_matches_keepalived_both_ways_and_both_checksums() {
    let bytes = hex(KEEPALIVED_V3);
    assert_eq!(
        Advert::decode(&bytes, SRC, GROUP),
        Ok(advert(Version::V3, 10))
    );
    assert_eq!(
        advert(Version::V3, 10).encode(ChecksumMode::PseudoHeader, SRC, GROUP),
        bytes
    );
    // RFC 9568 / Cisco / Juniper: the same message checksummed without the pseudo-header.
    let plain = advert(Version::V3, 10).encode(ChecksumMode::Rfc9568, SRC, GROUP);
    assert_eq!(plain, hex("31 33 96 01 00 0a 2d 76 0a e7 00 64"));
    assert_eq!(
        Advert::decode(&plain, SRC, GROUP),
        Ok(advert(Version::V3, 10))
    );
}

#[test]
fn bad_packets_are_dropped_by_reason() {
    let good = hex(KEEPALIVED_V3);
    let with = |i: usize, v: u8| {
        let mut b = good.clone();
        b[i] = v;
        b
    };
    assert_eq!(
        Advert::decode(&good[..5], SRC, GROUP),
        Err(DropReason::Short)
    );
    assert_eq!(
        Advert::decode(&good[..10], SRC, GROUP),
        Err(DropReason::Truncated)
    );
    assert_eq!(
        Advert::decode(&with(0, 0x41), SRC, GROUP),
        Err(DropReason::Version)
    );
    assert_eq!(
        Advert::decode(&with(0, 0x32), SRC, GROUP),
        Err(DropReason::Type)
    );
    assert_eq!(
        Advert::decode(&with(3, 0), SRC, GROUP),
        Err(DropReason::AddressCount)
    );
    assert_eq!(
        Advert::decode(&with(3, 2), SRC, GROUP),
        Err(DropReason::Truncated)
    );
    assert_eq!(
        Advert::decode(&with(7, 0), SRC, GROUP),
        Err(DropReason::Checksum)
    );
    assert_eq!(
        Advert::decode(&with(2, 200), SRC, GROUP),
        Err(DropReason::Checksum)
    );
    // The pseudo-header checksum does not hold for another sender.
    let other = Ipv4Addr::new(10, 231, 0, 2);
    assert_eq!(
        Advert::decode(&good, other, GROUP),
        Err(DropReason::Checksum)
    );
    // v2 with authentication set.
    let mut v2 = hex(KEEPALIVED_V2);
    v2[4] = 1;
    assert!(Advert::decode(&v2, SRC, GROUP).is_err());
}

#[test]
fn decoding_any_bytes_never_panics() {
    // A cheap deterministic sweep over short inputs (the fuzz target goes further).
    let mut x: u64 = 7;
    for len in 0..64 {
        for _ in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (x >> 33) as u8
                })
                .collect();
            let _ = Advert::decode(&bytes, SRC, GROUP);
        }
    }
}

#[test]
fn several_addresses_round_trip() {
    let a = Advert {
        version: Version::V3,
        vrid: 7,
        priority: 255,
        interval_cs: 100,
        addresses: vec![VIP, Ipv4Addr::new(10, 231, 0, 101)],
    };
    for mode in [ChecksumMode::PseudoHeader, ChecksumMode::Rfc9568] {
        let b = a.encode(mode, SRC, GROUP);
        assert_eq!(Advert::decode(&b, SRC, GROUP), Ok(a.clone()));
    }
}
