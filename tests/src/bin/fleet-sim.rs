//! Fleet simulation: many workloads issued within one minute, each renewing by the core's
//! default rotation policy (`Policy::renewal_offset` with its own jitter seed, exactly as the
//! machine computes it), against a CA that answers at once. Prints the CA's request load per
//! hour; the last line is `peak_to_mean=<ratio>` over the whole hours after the first renewal
//! round (target: at most 1.5).
//!
//! `cargo run --release -p sigil-tests --bin fleet-sim -- --devices 100000 --days 7`
//! Options: `--devices N` (100000), `--days D` (7), `--ttl-hours H` (24), `--skew-minutes M` (15),
//! `--seed S` (1).

use std::time::Duration;

use sigil_core::rotation::{Jitter, Policy};

fn arg(args: &[String], name: &str, default: u64) -> u64 {
    args.windows(2)
        .find(|w| w[0] == name)
        .map(|w| {
            w[1].parse()
                .unwrap_or_else(|_| panic!("{name} takes a whole number"))
        })
        .unwrap_or(default)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let devices = arg(&args, "--devices", 100_000);
    let days = arg(&args, "--days", 7);
    let ttl = Duration::from_secs(arg(&args, "--ttl-hours", 24) * 3600);
    let skew = Duration::from_secs(arg(&args, "--skew-minutes", 15) * 60);
    let seed = arg(&args, "--seed", 1);
    let policy = Policy::default();
    let horizon = days * 86_400;
    let hours = usize::try_from(horizon / 3600).unwrap_or(0);
    let mut load = vec![0u64; hours];
    let mut first_round_end = 0u64;
    let mut fleet = Jitter::new(seed);

    for _ in 0..devices {
        // Issued within the first minute; each device's jitter seeded from its own RNG.
        let mut t = fleet.next_u64() % 60;
        let mut jitter = Jitter::new(fleet.next_u64());
        let mut first = true;
        loop {
            // Sentry's profile: notBefore = issue - skew, notAfter = issue + ttl.
            let not_before = t.saturating_sub(skew.as_secs());
            let lifetime = ttl + skew;
            let renew = not_before + policy.renewal_offset(lifetime, &mut jitter).as_secs();
            if first {
                first_round_end = first_round_end.max(renew);
                first = false;
            }
            if renew >= horizon {
                break;
            }
            if let Some(slot) = usize::try_from(renew / 3600)
                .ok()
                .and_then(|h| load.get_mut(h))
            {
                *slot += 1;
            }
            t = renew;
        }
    }

    println!(
        "devices={devices} days={days} ttl={}h skew={}m policy: renew at {}‰ ± {}‰ of lifetime",
        ttl.as_secs() / 3600,
        skew.as_secs() / 60,
        policy.renew_at.0,
        policy.renew_jitter.0
    );
    let peak_all = load.iter().copied().max().unwrap_or(0).max(1);
    for (h, n) in load.iter().enumerate() {
        let bar = "#".repeat(usize::try_from(n * 50 / peak_all).unwrap_or(0));
        println!("hour {h:>4} {n:>8} {bar}");
    }
    let start = usize::try_from(first_round_end.div_ceil(3600)).unwrap_or(hours);
    let after = load.get(start..).unwrap_or(&[]);
    let mean = after.iter().sum::<u64>() as f64 / after.len().max(1) as f64;
    let peak = after.iter().copied().max().unwrap_or(0) as f64;
    println!("first renewal round ends in hour {start}; hours after it: {}; mean {mean:.1}/h, peak {peak}/h", after.len());
    println!(
        "peak_to_mean={:.3}",
        if mean > 0.0 { peak / mean } else { 0.0 }
    );
}
