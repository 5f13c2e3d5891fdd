//! Power-loss simulation of the whole engine: a seeded workload on the
//! simulated file system, a crash, a reboot keeping only what was durable,
//! and checks of the reopened engine against what was acknowledged.

pub mod model;
pub mod verify;
pub mod workload;

use std::sync::Arc;
use std::time::Duration;

use mq_core::driver::Driver;
use mq_native::fs::sim::{Faults, Rng, SimFs};
use mq_native::{Fsync, NativeDriver, Options};

/// The durability mode a seed runs under.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Always,
    Interval,
}

const INTERVAL: Duration = Duration::from_millis(5);

fn options(mode: Mode, rng: &mut Rng) -> Options {
    let mut o = Options::new("/data");
    o.fsync = match mode {
        Mode::Always => Fsync::Always,
        Mode::Interval => Fsync::Interval(INTERVAL),
    };
    // Small segments: rolls, many files, retention by size.
    o.segment_bytes = 4096 * rng.between(1, 3);
    o.retention_bytes = rng.chance(50).then(|| 4096 * rng.between(2, 6));
    // Checkpoints only when the workload asks (no timer: runs repeat).
    o.checkpoint_interval = Duration::from_secs(3600);
    o
}

/// What one seed did.
#[derive(Debug, Default)]
pub struct Outcome {
    pub ops: u64,
    pub fs_ops: u64,
    pub crashed_mid_workload: bool,
    pub crashed_in_recovery: bool,
    pub problems: Vec<String>,
}

/// Runs seed `seed`: workload, crash, reboot (maybe a second crash during
/// recovery), reopen, checks.
///
/// The crash comes after a random number of file operations below
/// `crash_span` per workload operation (past the end of the workload:
/// power lost after it).
pub async fn run(seed: u64, mode: Mode, max_ops: u64, crash_span: u64) -> Result<Outcome, String> {
    let mut rng = Rng::new(seed);
    let faults = Faults::default();
    let sim = SimFs::new(rng.next_u64(), faults);
    let opts = options(mode, &mut rng);
    let ops = rng.between(max_ops / 2, max_ops);
    let crash_after = rng.below(ops * crash_span);
    let mut world = workload::setup(
        seed,
        sim.clone(),
        opts.clone(),
        rng,
        matches!(mode, Mode::Interval),
    )
    .await?;
    sim.crash_after(crash_after);
    let mut out = Outcome::default();
    for _ in 0..ops {
        out.ops += 1;
        if let workload::Step::Crashed = world.step().await? {
            out.crashed_mid_workload = true;
            break;
        }
    }
    out.fs_ops = sim.ops();
    sim.crash();
    let crashed_at = sim.crashed_at().unwrap_or_else(std::time::Instant::now);
    let workload::World {
        driver,
        subs,
        mut model,
        early,
        rng: mut wrng,
        ..
    } = world;
    out.problems.extend(early);
    drop(subs);
    // Its shutdown finds the power gone; what it tries changes nothing.
    let _ = driver.close().await;

    let verbose = std::env::var("MQ_SIM_SEED").is_ok();
    if verbose {
        eprintln!("workload: {out:?}, crash_after {crash_after}, options {opts:?}");
    }
    let mut fs = sim.reboot();
    if wrng.chance(30) {
        // Power lost again while recovering.
        fs.crash_after(wrng.below(30));
        match NativeDriver::open_on(opts.clone(), Arc::new(fs.clone()), false).await {
            Ok(d) => {
                let _ = d.close().await;
            }
            Err(e) if !fs.crashed() => {
                return Err(format!("reopen (before the second crash) failed: {e}"))
            }
            Err(_) => out.crashed_in_recovery = true,
        }
        if verbose {
            eprintln!(
                "second power loss, during recovery: {}",
                out.crashed_in_recovery
            );
        }
        fs = fs.reboot();
    }
    let driver = NativeDriver::open_on(opts, Arc::new(fs.clone()), true)
        .await
        .map_err(|e| format!("reopen after the power loss failed: {e}"))?;
    let promise = verify::Promise {
        interval: matches!(mode, Mode::Interval).then_some(INTERVAL),
        crashed_at,
    };
    let problems = verify::check(&driver, &mut model, &promise).await;
    let _ = driver.close().await;
    out.problems.extend(problems?);
    Ok(out)
}
