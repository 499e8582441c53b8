//! Fuzzing what crosses process boundaries in the `zerg` crate: the control protocol's frames
//! (what zergctl and zerglings send the pool, and the pool's answers) and the mule's "message
//! in hand" record. Whatever bytes arrive, decoding gives a message or an error: never a
//! panic, and never an allocation larger than what was received.

mod fuzzing;

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use proptest::prelude::*;
use zerg::config::{ListenAddr, Protocol};
use zerg::control::{
    decode_hello, encode, fd_count, ControlError, Figures, FrameDecoder, GenerationStatus,
    ListenerInfo, Message, MuleFigures, PoolStatus, ProcessInfo, ProcessKind, ReloadOutcome, Role,
    WorkerFigures, MAX_FRAME, PROTOCOL_VERSION,
};
use zerg::mule_record::{self, MAX_MESSAGE};

fn listen_addr() -> impl Strategy<Value = ListenAddr> {
    prop_oneof![
        // A v6 address's flow label is not part of its text, which is what travels.
        any::<SocketAddr>().prop_map(|mut a| {
            if let SocketAddr::V6(v6) = &mut a {
                v6.set_flowinfo(0);
            }
            ListenAddr::Tcp(a)
        }),
        any::<String>().prop_map(|p| ListenAddr::Unix(PathBuf::from(p))),
    ]
}

fn listener() -> impl Strategy<Value = ListenerInfo> {
    (
        any::<String>(),
        listen_addr(),
        prop_oneof![Just(Protocol::Http), Just(Protocol::Uwsgi)],
    )
        .prop_map(|(name, addr, protocol)| ListenerInfo {
            name,
            addr,
            protocol,
        })
}

fn process() -> impl Strategy<Value = ProcessInfo> {
    (
        prop_oneof![Just(ProcessKind::Worker), Just(ProcessKind::Mule)],
        any::<u32>(),
        any::<u32>(),
        prop::collection::vec(any::<String>(), 0..3),
        any::<Option<u64>>(),
        (
            any::<Option<u64>>(),
            any::<Option<u32>>(),
            any::<Option<u64>>(),
            any::<Option<u64>>(),
        ),
    )
        .prop_map(
            |(kind, id, pid, farms, messages, (requests, in_flight, busy_ms, rss_bytes))| {
                ProcessInfo {
                    kind,
                    id,
                    pid,
                    farms,
                    messages,
                    requests,
                    in_flight,
                    busy_ms,
                    rss_bytes,
                }
            },
        )
}

fn figures() -> impl Strategy<Value = Figures> {
    let worker = (
        (
            any::<u32>(),
            any::<Option<u32>>(),
            any::<u64>(),
            any::<u32>(),
        ),
        (any::<u32>(), any::<[u64; 5]>()),
        prop::collection::vec(any::<u64>(), 0..14),
        (any::<u64>(), any::<u64>(), any::<Option<u64>>()),
        (any::<u64>(), any::<u32>(), any::<u32>(), any::<u64>()),
    )
        .prop_map(
            |(
                (id, pid, requests, in_flight),
                (connections, by_class),
                duration_buckets,
                (duration_sum_us, sent_bytes, busy_ms),
                (rss_bytes, respawns, harakiris, spawned_unix),
            )| WorkerFigures {
                id,
                pid,
                requests,
                in_flight,
                connections,
                by_class,
                duration_buckets,
                duration_sum_us,
                sent_bytes,
                busy_ms,
                rss_bytes,
                respawns,
                harakiris,
                spawned_unix,
            },
        );
    let mule = (
        any::<u32>(),
        any::<Option<u32>>(),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(id, pid, rss_bytes, respawns, harakiris)| MuleFigures {
            id,
            pid,
            rss_bytes,
            respawns,
            harakiris,
        });
    (
        // Bounds as a master writes them: finite (JSON has no infinity) and short decimals
        // (serde_json reads back exactly what it wrote of those).
        prop::collection::vec(
            prop::sample::select(vec![0.001, 0.005, 0.025, 0.1, 0.5, 1.0, 2.5, 10.0, 60.0]),
            0..14,
        ),
        prop::collection::vec(worker, 0..4),
        prop::collection::vec(mule, 0..3),
    )
        .prop_map(|(duration_bounds, workers, mules)| Figures {
            duration_bounds,
            workers,
            mules,
        })
}

fn outcome() -> impl Strategy<Value = ReloadOutcome> {
    (any::<bool>(), any::<u64>(), any::<String>(), any::<u64>()).prop_map(
        |(ok, generation, message, millis)| ReloadOutcome {
            ok,
            generation,
            message,
            millis,
        },
    )
}

fn pool_status() -> impl Strategy<Value = PoolStatus> {
    let generation = (
        any::<u64>(),
        any::<String>(),
        any::<Option<u32>>(),
        any::<u64>(),
        prop::collection::vec(process(), 0..4),
    )
        .prop_map(
            |(generation, state, master_pid, age_secs, processes)| GenerationStatus {
                generation,
                state,
                master_pid,
                age_secs,
                processes,
            },
        );
    (
        any::<u32>(),
        prop::collection::vec(listener(), 0..3),
        prop::collection::vec(generation, 0..3),
        prop::option::of(outcome()),
    )
        .prop_map(
            |(pool_pid, listeners, generations, last_reload)| PoolStatus {
                pool_pid,
                listeners,
                generations,
                last_reload,
            },
        )
}

/// Any message of the protocol, with any field values.
fn message() -> impl Strategy<Value = Message> {
    let role = prop_oneof![Just(Role::Zergling), Just(Role::Ctl)];
    prop_oneof![
        (any::<u32>(), role, any::<u32>(), any::<Option<u64>>()).prop_map(
            |(protocol, role, pid, generation)| Message::Hello {
                protocol,
                role,
                pid,
                generation,
                adopt: None,
            }
        ),
        (
            any::<u32>(),
            any::<u64>(),
            prop::collection::vec(listener(), 0..4),
            prop::collection::vec(any::<String>(), 0..4),
            0..64usize,
        )
            .prop_map(|(protocol, generation, listeners, queues, mule_records)| {
                Message::Welcome {
                    protocol,
                    generation,
                    listeners,
                    queues,
                    mule_records,
                }
            }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(protocol, pool_pid)| Message::HelloCtl { protocol, pool_pid }),
        (any::<u32>(), any::<String>())
            .prop_map(|(protocol, reason)| Message::Refused { protocol, reason }),
        (
            prop::collection::vec(process(), 0..4),
            prop::collection::vec(any::<u32>(), 0..4)
        )
            .prop_map(|(processes, mules_held)| Message::Processes {
                processes,
                mules_held
            }),
        prop::collection::vec(any::<u32>(), 0..4).prop_map(|ids| Message::MulesGranted { ids }),
        Just(Message::Ready),
        figures().prop_map(Message::Figures),
        any::<String>().prop_map(|reason| Message::Failed { reason }),
        any::<u64>().prop_map(|mercy_secs| Message::Stop { mercy_secs }),
        Just(Message::StatusRequest),
        pool_status().prop_map(Message::Status),
        Just(Message::Reload),
        outcome().prop_map(Message::ReloadResult),
        any::<bool>().prop_map(|immediate| Message::StopPool { immediate }),
        Just(Message::Stopping),
        Just(Message::ChainReload),
        outcome().prop_map(Message::ChainReloaded),
        any::<String>().prop_map(|message| Message::Error { message }),
    ]
}

/// Cuts `bytes` at the given points (each taken modulo the length), in order.
fn split<'a>(bytes: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.sort_unstable();
    let mut pieces = Vec::new();
    let mut from = 0;
    for p in points.into_iter().chain([bytes.len()]) {
        pieces.push(&bytes[from..p]);
        from = p;
    }
    pieces
}

/// Decodes one frame every way a peer's frame is decoded; must return, whatever it holds.
fn decode_every_way(frame: &[u8]) {
    assert!(frame.len() <= MAX_FRAME);
    for decoded in [
        decode_hello(frame),
        serde_json::from_slice::<Message>(frame).map_err(ControlError::from),
    ] {
        match decoded {
            Ok(msg) => {
                // What a receiver does next: count the fds the message announces, and take
                // them (none came).
                let n = fd_count(&msg);
                let mut d = FrameDecoder::default();
                let taken = d.take_fds(n);
                assert_eq!(taken.is_ok(), n == 0, "{msg:?}");
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
}

/// Feeds `pieces` to a decoder as reads would, decoding every frame that completes. Returns
/// the frames, or stops at the first error (which closes a real connection).
fn feed(pieces: &[&[u8]]) -> Vec<Vec<u8>> {
    let mut d = FrameDecoder::default();
    let mut frames = Vec::new();
    for piece in pieces {
        d.push(piece, Vec::<OwnedFd>::new()).unwrap();
        loop {
            match d.next_frame() {
                Ok(Some(frame)) => {
                    decode_every_way(&frame);
                    frames.push(frame);
                }
                Ok(None) => break,
                Err(ControlError::TooLarge(n)) => {
                    assert!(n > MAX_FRAME);
                    return frames;
                }
                Err(e) => panic!("only TooLarge comes from framing: {e}"),
            }
        }
    }
    frames
}

/// A frame holding `json` as is.
fn frame_of(json: &[u8]) -> Vec<u8> {
    let mut frame = (json.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(json);
    frame
}

/// JSON-shaped garbage: the protocol's own keys and values, and JSON punctuation.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => prop::sample::select(vec![
            "{", "}", "[", "]", ",", ":", "\"", "\\", "\\u0000", "\\ud800", "null", "true",
            "-0", "1e999", "18446744073709551616", "-1", "4294967296", "0.5",
            "\"type\"", "\"protocol\"", "\"hello\"", "\"welcome\"", "\"status\"",
            "\"listeners\"", "\"queues\"", "\"mule_records\"", "\"kind\"", "\"address\"",
            "\"tcp\"", "\"unix\"", "\"role\"", "\"zergling\"", "\"processes\"",
            "\"generations\"", "\"reload-result\"", "\"chained-reloaded\"", "\"pid\"",
        ]).prop_map(|s| s.as_bytes().to_vec()),
        1 => any::<u64>().prop_map(|n| n.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..8),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

/// Numbers at the edges of the types a message's fields have.
const EDGE_NUMBERS: [&str; 8] = [
    "18446744073709551615",
    "9223372036854775808",
    "18446744073709551616",
    "4294967296",
    "4294967295",
    "-1",
    "1e999",
    "0",
];

/// One change to a byte string: flip a byte, cut or insert some, or put an edge number in
/// place of the number found from `at` on.
fn mutate(bytes: &mut Vec<u8>, (at, op, with): (usize, u8, Vec<u8>)) {
    let at = at % (bytes.len() + 1);
    match op % 4 {
        0 if at < bytes.len() => bytes[at] ^= with.first().copied().unwrap_or(1),
        1 => {
            let end = (at + with.len()).min(bytes.len());
            bytes.drain(at..end);
        }
        2 => {
            bytes.splice(at..at, with);
        }
        _ => {
            let Some(start) = bytes[at..].iter().position(u8::is_ascii_digit) else {
                return;
            };
            let start = at + start;
            let len = bytes[start..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            let edge = EDGE_NUMBERS[usize::from(op / 4) % EDGE_NUMBERS.len()];
            bytes.splice(start..start + len, edge.bytes());
        }
    }
}

fn memfd(len: usize) -> OwnedFd {
    let fd = nix::sys::memfd::memfd_create("fuzz", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .expect("memfd");
    nix::unistd::ftruncate(&fd, len as i64).expect("ftruncate");
    fd
}

proptest! {
    #![proptest_config(fuzzing::config("tests/fuzz-regressions/fuzz_control.txt", 2048))]

    #[test]
    fn messages_round_trip_through_frames_split_anywhere(
        msgs in prop::collection::vec(message(), 1..5),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        let stream: Vec<u8> = msgs.iter().flat_map(encode).collect();
        let frames = feed(&split(&stream, &cuts));
        let back: Vec<Message> = frames
            .iter()
            .map(|f| serde_json::from_slice(f).unwrap())
            .collect();
        prop_assert_eq!(&back, &msgs);
        for msg in &msgs {
            if let Message::Hello { protocol, .. } = msg {
                let hello = decode_hello(&encode(msg)[4..]);
                prop_assert_eq!(hello.is_ok(), *protocol == PROTOCOL_VERSION);
            }
        }
    }

    #[test]
    fn arbitrary_bytes_are_frames_or_errors(
        bytes in prop::collection::vec(any::<u8>(), 0..2048),
        cuts in prop::collection::vec(any::<usize>(), 0..8),
    ) {
        feed(&split(&bytes, &cuts));
    }

    #[test]
    fn small_frames_of_arbitrary_bytes_are_messages_or_errors(
        bodies in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..256), 1..6),
    ) {
        let stream: Vec<u8> = bodies.iter().flat_map(|b| frame_of(b)).collect();
        prop_assert_eq!(feed(&[&stream]).len(), bodies.len());
    }

    #[test]
    fn frames_of_json_shaped_garbage_are_messages_or_errors(json in jsonish()) {
        feed(&[&frame_of(&json)]);
    }

    #[test]
    fn mutated_messages_are_messages_or_errors(
        msg in message(),
        mutations in prop::collection::vec(
            (any::<usize>(), any::<u8>(), prop::collection::vec(any::<u8>(), 1..6)), 1..6),
        tokens in prop::collection::vec(jsonish(), 0..3),
    ) {
        let mut json = encode(&msg)[4..].to_vec();
        for m in mutations {
            mutate(&mut json, m);
        }
        for t in tokens {
            let at = json.len() / 2;
            json.splice(at..at, t);
        }
        feed(&[&frame_of(&json)]);
    }

    #[test]
    fn a_mule_record_holds_the_last_message_taken_and_counts_them(
        ops in prop::collection::vec(
            prop_oneof![
                3 => (any::<u32>(), prop::collection::vec(any::<u8>(), 0..2048))
                    .prop_map(Some),
                1 => Just(None),
            ],
            1..12,
        ),
    ) {
        let fd = memfd(mule_record::SIZE as usize);
        let mut taken = 0u64;
        for op in ops {
            let in_hand = match op {
                Some((queue, msg)) => {
                    mule_record::remember(&fd, queue, &msg).unwrap();
                    taken += 1;
                    // An empty message leaves nothing to finish.
                    (!msg.is_empty()).then_some((queue, msg))
                }
                None => {
                    mule_record::clear(&fd).unwrap();
                    None
                }
            };
            prop_assert_eq!(mule_record::in_hand(&fd), in_hand);
            prop_assert_eq!(mule_record::taken(&fd), taken);
        }
    }

    #[test]
    fn a_mule_record_of_any_bytes_reads_as_nothing_or_a_whole_message(
        len in prop_oneof![0..64usize, Just(mule_record::SIZE as usize), 0..70_000usize],
        header in prop::collection::vec(any::<u8>(), 16),
        header_len in prop_oneof![
            Just(None),
            Just(Some(u32::MAX)),
            Just(Some(MAX_MESSAGE as u32)),
            Just(Some(MAX_MESSAGE as u32 + 1)),
            any::<u32>().prop_map(Some),
        ],
        taken in prop_oneof![Just(None), Just(Some(u64::MAX)), any::<u64>().prop_map(Some)],
        then in (any::<u32>(), prop::collection::vec(any::<u8>(), 1..64)),
    ) {
        let fd = memfd(len);
        let mut header = header;
        if let Some(n) = header_len {
            header[..4].copy_from_slice(&n.to_le_bytes());
        }
        if let Some(t) = taken {
            header[8..].copy_from_slice(&t.to_le_bytes());
        }
        nix::sys::uio::pwrite(&fd, &header[..header.len().min(len)], 0).unwrap();
        if let Some((_, msg)) = mule_record::in_hand(&fd) {
            prop_assert!(!msg.is_empty() && msg.len() <= MAX_MESSAGE);
        }
        let before = mule_record::taken(&fd);
        // A mule that takes its next message over whatever the record held.
        let (queue, msg) = then;
        mule_record::remember(&fd, queue, &msg).unwrap();
        prop_assert_eq!(mule_record::in_hand(&fd), Some((queue, msg)));
        if len >= 16 {
            // (A record shorter than its header, which the pool never makes, counts from
            // what the message written past its end leaves there.)
            prop_assert_eq!(mule_record::taken(&fd), before.saturating_add(1));
        }
    }
}

#[test]
fn a_message_of_the_largest_size_round_trips_and_one_larger_is_refused() {
    let status = Message::Failed {
        reason: "x".repeat(MAX_FRAME - r#"{"type":"failed","reason":""}"#.len()),
    };
    let frame = encode(&status);
    assert_eq!(frame.len(), 4 + MAX_FRAME);
    assert_eq!(feed(&[&frame]).len(), 1);
    let mut d = FrameDecoder::default();
    d.push(&((MAX_FRAME + 1) as u32).to_be_bytes(), vec![])
        .unwrap();
    assert!(matches!(d.next_frame(), Err(ControlError::TooLarge(_))));
}

#[test]
fn a_welcome_announcing_more_fds_than_exist_is_an_error_not_an_overflow() {
    // Found by the mutated-message property (PROPTEST_CASES=20000): the count of fds a
    // Welcome announces is the peer's number, and adding it up overflowed (a panic in debug
    // builds; in release the sum wrapped, and fewer fds than announced were taken).
    for mule_records in [usize::MAX, usize::MAX - 1, usize::MAX / 2 + 1] {
        let json = format!(
            r#"{{"type":"welcome","protocol":{PROTOCOL_VERSION},"generation":1,"listeners":[{{"name":"a","addr":{{"kind":"unix","address":"/x"}}}}],"queues":["q"],"mule_records":{mule_records}}}"#
        );
        let msg = decode_hello(json.as_bytes()).unwrap();
        let n = fd_count(&msg);
        assert!(n >= 3, "{n}");
        let err = FrameDecoder::default().take_fds(n).unwrap_err();
        assert!(
            matches!(err, ControlError::MissingFds { got: 0, .. }),
            "{err}"
        );
    }
}

#[test]
fn a_mule_record_counted_to_the_end_takes_more_without_overflow() {
    // Found by the any-bytes property: a count of u64::MAX overflowed on the next message.
    let fd = memfd(mule_record::SIZE as usize);
    let mut header = [0u8; 16];
    header[8..].copy_from_slice(&u64::MAX.to_le_bytes());
    nix::sys::uio::pwrite(&fd, &header, 0).unwrap();
    mule_record::remember(&fd, 0, b"job").unwrap();
    assert_eq!(mule_record::in_hand(&fd), Some((0, b"job".to_vec())));
    assert_eq!(mule_record::taken(&fd), u64::MAX);
}
