use super::*;

fn bits(key: &str) -> f64 {
    estimate(key.as_bytes()).bits
}

#[test]
fn random_characters_cost_their_alphabet() {
    let hex = "5473f1997beeb2173e80d100536f996b11109f6fcca426578136bc6328feba65";
    // 64 hex digits: 256 bits, less what chance patterns save (here the
    // year 1997 and a run of 9 decimal digits).
    assert!((230.0..=256.0).contains(&bits(hex)), "{}", bits(hex));
    let plain = "c046a6bee8ae0846b9eaf8ddcaf4b31f0d68efbb3a1a13b3cd9c9b7a76c7de8b";
    assert!((bits(plain) - 256.0).abs() < 1e-9, "{}", bits(plain));
    let b64 = "JG7/LlDztFtU01P2OvByvTClyYWf5s8GPm5w6r52Nz8=";
    let e = estimate(b64.as_bytes());
    assert!(e.bits > 250.0 && e.random_bits > 220.0, "{e:?}");
    assert!(estimate(b"").bits.abs() < 1e-9);
}

#[test]
fn patterns_cost_what_an_attacker_pays() {
    // A word: 16.2 bits (one of 73,129) and 3 for the kind of token; one
    // more capitalised, more in leetspeak.
    let word = bits("elephant");
    assert!((19.0..19.5).contains(&word), "{word}");
    assert!(bits("Elephant") > word && bits("3l3ph4nt") > bits("Elephant"));
    // A year, a walk, a sequence.
    assert!(bits("1987") < 11.0);
    assert!(bits("qwertyuiop") < 16.0, "{}", bits("qwertyuiop"));
    assert!(bits("abcdefghij") < 14.0, "{}", bits("abcdefghij"));
    // A repeated random block costs the block and a few bits.
    let block = bits("Xk9#mQ2$p");
    let four = bits("Xk9#mQ2$pXk9#mQ2$pXk9#mQ2$pXk9#mQ2$p");
    assert!(four < block + 12.0, "{block} {four}");
    // Near repeats: other case, other separator.
    let near = estimate(b"Gq7Tz2Wm9-Gq7Tz2Wm9_GQ7TZ2WM9.gq7tz2wm9");
    assert!(near.bits < 110.0 && near.random_bits < 70.0, "{near:?}");
}

#[test]
fn coverage_and_random_part_are_reported() {
    let e = estimate(b"beautiful mountain summer holiday");
    assert!(e.random_bits < 1.0 && e.bits < 80.0, "{e:?}");
    assert!(
        (e.random_key_bits - 33.0 * 59f64.log2()).abs() < 1e-9,
        "{e:?}"
    );
    let label = estimate(b"prod-jwt-k6RQ6MlNtysyLPvflcAUOE6lUN/9SfiSer4whs4z8gI=");
    assert!(label.random_bits > 240.0, "{label:?}");
}

#[test]
fn long_and_hostile_inputs_are_bounded() {
    let long = "z".repeat(10_000);
    let e = estimate(long.as_bytes());
    assert!(
        (e.random_key_bits - 256.0 * 26f64.log2()).abs() < 1e-9,
        "read {e:?}"
    );
    assert!(e.bits < 20.0, "{e:?}");
    let walk = "qwertyuiop".repeat(40);
    assert!(estimate(walk.as_bytes()).bits < 40.0);
}

/// The time per key, printed: `cargo test --release -p palisade-config --lib
/// -- --ignored estimate_speed --nocapture`.
#[test]
#[ignore = "a measurement, run in release"]
fn estimate_speed() {
    use base64::Engine as _;
    let mut bytes = vec![0u8; 48 * 1000];
    getrandom::fill(&mut bytes).unwrap();
    let base64: Vec<String> = bytes
        .chunks(48)
        .map(|c| base64::engine::general_purpose::STANDARD.encode(c))
        .collect();
    let raw: Vec<&[u8]> = bytes.chunks(64).collect();
    let words = "beautiful mountain summer holiday orange umbrella sunday breakfast";
    // Run alone, the first estimate builds the dictionary.
    let start = std::time::Instant::now();
    let _ = estimate(b"warm up the dictionary");
    println!(
        "first estimate (builds the dictionary): {:?}",
        start.elapsed()
    );
    let time = |name: &str, keys: &[&[u8]]| {
        let rounds = 20;
        let start = std::time::Instant::now();
        let mut sum = 0.0;
        for _ in 0..rounds {
            for key in keys {
                sum += estimate(key).bits;
            }
        }
        let per_key = start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds) / as_f64(keys.len());
        let start = std::time::Instant::now();
        for _ in 0..rounds {
            for key in keys {
                sum += as_f64(crate::strength::assess(key, 32).len());
            }
        }
        let every_rule =
            start.elapsed().as_secs_f64() * 1e6 / f64::from(rounds) / as_f64(keys.len());
        println!("{name}: estimate {per_key:.2} µs, every rule {every_rule:.2} µs ({sum:.0})");
    };
    let b64: Vec<&[u8]> = base64.iter().map(String::as_bytes).collect();
    time("64 characters of base64", &b64);
    time("64 random bytes", &raw);
    time("66 characters of words", &[words.as_bytes()]);
}

/// Prints the decomposition of the keys in `KEYS` (one a line).
#[test]
#[ignore = "a diagnostic"]
fn explain_keys() {
    let keys = std::env::var("KEYS").unwrap_or_default();
    for key in keys.lines() {
        let (per_char, bits, path) = explain(key.as_bytes());
        let e = estimate(key.as_bytes());
        println!(
            "{key}\n  {per_char:.2}/char, {bits:.1} bits, random {:.1}, saved {:.1}",
            e.random_bits,
            e.random_key_bits - e.bits
        );
        for t in path {
            let part = String::from_utf8_lossy(&key.as_bytes()[t.start..t.end]);
            let random = if t.kind == Kind::Random {
                " (random)"
            } else {
                ""
            };
            println!("    {}..{} {part:?} {:.1}{random}", t.start, t.end, t.bits);
        }
    }
}
