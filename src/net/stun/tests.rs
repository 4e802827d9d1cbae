use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rtc_stun::textattrs::TextAttribute;

use super::*;

const TID: TransactionId = [
    0xb7, 0xe7, 0xa7, 0x01, 0xbc, 0x34, 0xd6, 0x86, 0xfa, 0x87, 0xdf, 0xae,
];

fn hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(u8::is_ascii_hexdigit)
        .map(|b| (b as char).to_digit(16).expect("hex digit") as u8)
        .collect();
    digits.chunks(2).map(|p| p[0] << 4 | p[1]).collect()
}

/// RFC 5769 §2.2: a Binding Success Response with SOFTWARE, XOR-MAPPED-ADDRESS (192.0.2.1:32853),
/// MESSAGE-INTEGRITY and FINGERPRINT.
fn rfc5769_ipv4_response() -> Vec<u8> {
    hex("0101003c 2112a442 b7e7a701 bc34d686 fa87dfae
         8022000b 74657374 20766563 746f7220
         00200008 0001a147 e112a643
         00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
         80280004 c07d4c96")
}

/// RFC 5769 §2.3: the same for [2001:db8:1234:5678:11:2233:4455:6677]:32853.
fn rfc5769_ipv6_response() -> Vec<u8> {
    hex("01010048 2112a442 b7e7a701 bc34d686 fa87dfae
         8022000b 74657374 20766563 746f7220
         00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
         00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
         80280004 c8fb0b4c")
}

/// RFC 5769 §2.1: an ICE connectivity check (SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME
/// "evtj:h6vY", MESSAGE-INTEGRITY, FINGERPRINT).
fn rfc5769_ice_request() -> Vec<u8> {
    hex("00010058 2112a442 b7e7a701 bc34d686 fa87dfae
         80220010 5354554e 20746573 7420636c 69656e74
         00240004 6e0001ff
         80290008 932ff9b1 51263b36
         00060009 6576746a 3a683676 59202020
         00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
         80280004 e57a3bcf")
}

/// An ICE-style request: with USERNAME, so the media port must leave it to str0m.
fn request_with_username() -> Vec<u8> {
    let mut message = Message::new();
    message
        .build(&[
            Box::new(BINDING_REQUEST),
            Box::new(RawTransactionId(TID)),
            Box::new(TextAttribute::new(ATTR_USERNAME, "abcd:efgh".into())),
            Box::new(FINGERPRINT),
        ])
        .unwrap();
    message.raw
}

fn response_with_mapped_address(ip: IpAddr, port: u16) -> Vec<u8> {
    let mut message = Message::new();
    message
        .build(&[
            Box::new(BINDING_SUCCESS),
            Box::new(RawTransactionId(TID)),
            Box::new(MappedAddress { ip, port }),
        ])
        .unwrap();
    message.raw
}

#[test]
fn rfc5769_vectors_decode() {
    let v4: SocketAddr = "192.0.2.1:32853".parse().unwrap();
    assert_eq!(
        parse_binding_success(&rfc5769_ipv4_response(), &TID),
        Ok(v4)
    );
    let v6: SocketAddr = "[2001:db8:1234:5678:11:2233:4455:6677]:32853"
        .parse()
        .unwrap();
    assert_eq!(
        parse_binding_success(&rfc5769_ipv6_response(), &TID),
        Ok(v6)
    );
}

#[test]
fn request_round_trip() {
    let bytes = binding_request(&TID);
    assert_eq!(bytes.len(), HEADER_LEN);
    assert_eq!(
        parse_binding_request(&bytes),
        Ok(BindingRequest {
            transaction_id: TID,
            has_username: false,
        })
    );
    assert_eq!(
        parse_binding_request(&rfc5769_ice_request()),
        Ok(BindingRequest {
            transaction_id: TID,
            has_username: true,
        })
    );
    assert_eq!(
        parse_binding_request(&request_with_username()),
        Ok(BindingRequest {
            transaction_id: TID,
            has_username: true,
        })
    );
}

#[test]
fn success_round_trip_and_sizes() {
    let check = |source: &str, expected: &str, len: usize| {
        let source: SocketAddr = source.parse().unwrap();
        let bytes = binding_success(&TID, source);
        assert_eq!(bytes.len(), len, "{source}");
        assert_eq!(
            parse_binding_success(&bytes, &TID),
            Ok(expected.parse().unwrap()),
            "{source}"
        );
    };
    check("203.0.113.7:8882", "203.0.113.7:8882", 40);
    check("[2001:db8::7]:1", "[2001:db8::7]:1", 52);
    check("[::ffff:192.168.1.20]:65535", "192.168.1.20:65535", 40);
}

#[test]
fn classic_mapped_address_is_accepted() {
    let ip = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1));
    assert_eq!(
        parse_binding_success(&response_with_mapped_address(ip, 3478), &TID),
        Ok(SocketAddr::new(ip, 3478))
    );
    let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 9));
    assert_eq!(
        parse_binding_success(&response_with_mapped_address(ip, 9), &TID),
        Ok(SocketAddr::new(ip, 9))
    );
}

#[test]
fn plain_binding_is_answered_ice_checks_are_not() {
    let source: SocketAddr = "192.0.2.9:40000".parse().unwrap();
    let request = binding_request(&TID);
    let answer = answer_plain_binding(&request, source).expect("answered");
    assert_eq!(parse_binding_success(&answer, &TID), Ok(source));
    assert!(answer.len() <= request.len() + 32);

    assert_eq!(answer_plain_binding(&request_with_username(), source), None);
    assert_eq!(answer_plain_binding(&rfc5769_ice_request(), source), None);
    assert_eq!(answer_plain_binding(&answer, source), None, "a response");
    assert_eq!(answer_plain_binding(&[0x80; 100], source), None, "RTP");
    assert_eq!(
        answer_plain_binding(&[22, 254, 253, 0], source),
        None,
        "DTLS"
    );
    assert_eq!(answer_plain_binding(&[], source), None);
}

#[test]
fn malformed_messages_are_typed_errors() {
    let check = |bytes: Vec<u8>, expected: StunError| {
        assert_eq!(parse_binding_success(&bytes, &TID), Err(expected.clone()));
    };
    let good = binding_success(&TID, "192.0.2.1:1".parse().unwrap());

    check(good[..19].to_vec(), StunError::NotStun);
    let mut bad_cookie = good.clone();
    bad_cookie[4] ^= 1;
    check(bad_cookie, StunError::NotStun);
    let mut high_bits = good.clone();
    high_bits[0] |= 0x80;
    check(high_bits, StunError::NotStun);

    let mut odd_length = good.clone();
    odd_length[3] = 0x13;
    check(
        odd_length,
        StunError::Length("19 is not a multiple of 4".into()),
    );
    check(
        good[..36].to_vec(),
        StunError::Length("20 attribute bytes announced, 16 present".into()),
    );
    let mut trailing = good.clone();
    trailing.extend_from_slice(&[0; 4]);
    check(
        trailing,
        StunError::Length("20 attribute bytes announced, 24 present".into()),
    );

    let mut bad_crc = good.clone();
    *bad_crc.last_mut().unwrap() ^= 1;
    check(bad_crc, StunError::Fingerprint);
    let mut bad_address = good.clone();
    bad_address[30] ^= 1; // inside the XOR-MAPPED-ADDRESS: the FINGERPRINT no longer matches
    check(bad_address, StunError::Fingerprint);

    assert_eq!(
        parse_binding_success(&good, &[0; 12]),
        Err(StunError::OtherTransaction)
    );
    check(binding_request(&TID), StunError::UnexpectedType(0x0001));
    let mut error = binding_request(&TID);
    error[0] = 0x01;
    error[1] = 0x11;
    check(error, StunError::ErrorResponse);
    let mut no_address = binding_request(&TID);
    no_address[0] = 0x01;
    check(
        no_address,
        StunError::NoAddress("neither attribute is present".into()),
    );

    // An IPv4 XOR-MAPPED-ADDRESS cut to 6 bytes (padded to 8): wrong length, not garbage.
    let mut short = hex("01010010 2112a442 b7e7a701 bc34d686 fa87dfae
                         00200006 0001a147 e1120000");
    short.truncate(32);
    short[3] = 0x0c;
    check(
        short,
        StunError::NoAddress("6 bytes for a 8-byte address".into()),
    );

    assert_eq!(
        parse_binding_request(&good),
        Err(StunError::UnexpectedType(0x0101))
    );
    let mut truncated_attribute = binding_request(&TID);
    truncated_attribute.extend_from_slice(&hex("00060010 61626364"));
    truncated_attribute[3] = 8;
    assert!(matches!(
        parse_binding_request(&truncated_attribute),
        Err(StunError::Malformed(_))
    ));
}

/// Seeded xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn address(&mut self) -> SocketAddr {
        let port = self.next() as u16;
        if self.next().is_multiple_of(2) {
            SocketAddr::new(IpAddr::V4(Ipv4Addr::from(self.next() as u32)), port)
        } else {
            let ip = Ipv6Addr::from(u128::from(self.next()) << 64 | u128::from(self.next()));
            SocketAddr::new(IpAddr::V6(ip), port)
        }
    }
}

#[test]
fn fuzz_never_panics_and_round_trips() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let seeds = [
        binding_request(&TID),
        request_with_username(),
        binding_success(&TID, "203.0.113.1:9".parse().unwrap()),
        binding_success(&TID, "[2001:db8::1]:9".parse().unwrap()),
        rfc5769_ipv4_response(),
        rfc5769_ipv6_response(),
        rfc5769_ice_request(),
        response_with_mapped_address(IpAddr::V4(Ipv4Addr::LOCALHOST), 1),
    ];
    let source: SocketAddr = "192.0.2.9:40000".parse().unwrap();
    for round in 0..30_000 {
        // Round trip with a random address and transaction id.
        let mut tid = [0u8; 12];
        tid.iter_mut().for_each(|b| *b = rng.next() as u8);
        let address = rng.address();
        let bytes = binding_success(&tid, address);
        assert_eq!(parse_binding_success(&bytes, &tid), Ok(address));
        assert_eq!(
            parse_binding_request(&binding_request(&tid)).map(|r| r.transaction_id),
            Ok(tid)
        );

        // A mutated, truncated or extended seed, or pure noise.
        let mut input = if round % 10 == 0 {
            (0..rng.below(80)).map(|_| rng.next() as u8).collect()
        } else {
            seeds[rng.below(seeds.len())].clone()
        };
        for _ in 0..rng.below(4) {
            if input.is_empty() {
                break;
            }
            let at = rng.below(input.len());
            match rng.below(5) {
                0 => input[at] = rng.next() as u8,
                1 => input.truncate(at),
                2 => input.extend((0..rng.below(12)).map(|_| rng.next() as u8)),
                // Keep the header consistent so the attribute decoder sees the garbage.
                3 => {
                    if input.len() >= HEADER_LEN {
                        let len = (input.len() - HEADER_LEN) as u16;
                        input[2..4].copy_from_slice(&len.to_be_bytes());
                    }
                }
                _ => {
                    if input.len() > HEADER_LEN {
                        let at = HEADER_LEN + rng.below(input.len() - HEADER_LEN);
                        input[at] = rng.next() as u8;
                    }
                }
            }
        }
        let _ = parse_binding_request(&input);
        let _ = parse_binding_success(&input, &TID);
        if let Some(answer) = answer_plain_binding(&input, source) {
            assert!(answer.len() <= input.len() + 32, "amplification");
            let tid: TransactionId = input[8..20].try_into().unwrap();
            assert_eq!(parse_binding_success(&answer, &tid), Ok(source));
        }
    }
}
