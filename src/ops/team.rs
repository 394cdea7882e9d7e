//! Fork-join for work too small for rayon's hand-off: one helper thread that spins while work
//! is likely, as OpenMP's active wait policy does.
//!
//! A batch-1 inference runs about twenty convolutions of 20-60 microseconds each. Handing
//! half of one to a rayon worker that has gone to sleep costs a futex wake-up of about the
//! same time, so on two cores a batch-1 column ran no faster on two threads than on one
//! (`fractalnet bench --mode eval --batch-size 1 --threads 1|2`). Here the helper keeps
//! polling for `SPIN` after each job, so the next one, a few microseconds later, starts at
//! once. If the helper is asleep or busy, the caller does the work itself: `join` never waits
//! for a wake-up, and the helper can only make a call faster.
//!
//! Which thread runs which half never changes the arithmetic of either half, so results do
//! not depend on whether the helper took part.

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long the helper polls after its last job before it parks.
const SPIN: Duration = Duration::from_micros(300);

const IDLE: u8 = 0;
/// A job is posted and nobody has taken it.
const POSTED: u8 = 1;
/// The helper is running the job.
const RUNNING: u8 = 2;
/// The helper has finished the job (or it panicked: `PANICKED`).
const DONE: u8 = 3;

/// The job: a type-erased pointer to the caller's closure and the function that calls it.
struct Job {
    data: *const (),
    call: unsafe fn(*const ()),
}

struct Team {
    state: AtomicU8,
    /// Held by the one caller that owns the slot from posting until it has collected the
    /// result; another caller meanwhile runs both halves itself.
    owner: Mutex<()>,
    job: Mutex<Option<Job>>,
    panicked: AtomicBool,
    sleeping: AtomicBool,
    helper: Thread,
}

// SAFETY: `Job::data` points at a closure that is `Sync` (checked in `join`) and outlives the
// helper's use of it: `join` does not return while the state is POSTED or RUNNING.
unsafe impl Send for Job {}

fn team() -> Option<&'static Team> {
    static TEAM: OnceLock<Option<&'static Team>> = OnceLock::new();
    *TEAM.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<&'static Team>();
        let spawned = std::thread::Builder::new()
            .name("fractalnet-team".into())
            .spawn(move || {
                if let Ok(team) = rx.recv() {
                    helper_loop(team)
                }
            });
        let handle = spawned.ok()?;
        let team: &'static Team = Box::leak(Box::new(Team {
            state: AtomicU8::new(IDLE),
            owner: Mutex::new(()),
            job: Mutex::new(None),
            panicked: AtomicBool::new(false),
            sleeping: AtomicBool::new(false),
            helper: handle.thread().clone(),
        }));
        tx.send(team).ok()?;
        Some(team)
    })
}

fn helper_loop(team: &'static Team) {
    let mut last = Instant::now();
    let mut polls = 0u32;
    loop {
        if team
            .state
            .compare_exchange(POSTED, RUNNING, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            let job = team.job.lock().map(|mut j| j.take()).unwrap_or(None);
            if let Some(job) = job {
                // SAFETY: the poster keeps the closure alive until the state leaves RUNNING.
                let r = std::panic::catch_unwind(|| unsafe { (job.call)(job.data) });
                team.panicked.store(r.is_err(), Ordering::Relaxed);
            }
            team.state.store(DONE, Ordering::Release);
            last = Instant::now();
            continue;
        }
        // the clock only every 256 polls: reading it costs more than a poll
        polls = polls.wrapping_add(1);
        if !polls.is_multiple_of(256) || last.elapsed() < SPIN {
            std::hint::spin_loop();
            continue;
        }
        team.sleeping.store(true, Ordering::SeqCst);
        if team.state.load(Ordering::SeqCst) != POSTED {
            std::thread::park_timeout(Duration::from_millis(100));
        }
        team.sleeping.store(false, Ordering::SeqCst);
        last = Instant::now();
    }
}

/// Runs `a` and `b`, `b` on the helper thread when it is free to take it at once, else both
/// on the calling thread (`b` after `a`).
pub fn join<A: FnOnce(), B: Fn() + Sync>(a: A, b: B) {
    let Some(team) = team() else {
        a();
        return b();
    };
    let Ok(_owner) = team.owner.try_lock() else {
        a();
        return b();
    };
    unsafe fn call<B: Fn()>(p: *const ()) {
        // SAFETY: `p` is the `&B` that `join` posted and keeps alive.
        unsafe { (*(p as *const B))() }
    }
    match team.job.lock() {
        Ok(mut j) => {
            *j = Some(Job {
                data: &b as *const B as *const (),
                call: call::<B>,
            })
        }
        Err(_) => {
            a();
            return b();
        }
    }
    team.state.store(POSTED, Ordering::SeqCst);
    if team.sleeping.load(Ordering::SeqCst) {
        team.helper.unpark();
    }
    // `b` is borrowed by the helper until it is DONE: a panic in `a` waits for that too
    let ra = std::panic::catch_unwind(std::panic::AssertUnwindSafe(a));
    // take the job back if the helper has not started it
    if team
        .state
        .compare_exchange(POSTED, IDLE, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        if let Ok(mut j) = team.job.lock() {
            *j = None;
        }
        if let Err(e) = ra {
            std::panic::resume_unwind(e);
        }
        return b();
    }
    while team.state.load(Ordering::Acquire) != DONE {
        std::hint::spin_loop();
    }
    let panicked = team.panicked.swap(false, Ordering::Relaxed);
    team.state.store(IDLE, Ordering::Release);
    if let Err(e) = ra {
        std::panic::resume_unwind(e);
    }
    if panicked {
        panic!("a parallel half of an op panicked on the helper thread");
    }
}

#[cfg(test)]
mod tests {
    use super::join;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn both_halves_run_once_whoever_runs_them() {
        for round in 0..200 {
            let mut left = vec![0usize; 64];
            let right = AtomicUsize::new(0);
            join(
                || {
                    left.iter_mut()
                        .enumerate()
                        .for_each(|(i, v)| *v = i + round)
                },
                || {
                    right.fetch_add(round + 1, Ordering::Relaxed);
                },
            );
            assert!(left.iter().enumerate().all(|(i, &v)| v == i + round));
            assert_eq!(right.load(Ordering::Relaxed), round + 1);
            if round % 50 == 0 {
                // let the helper fall asleep now and then: a parked helper must not be waited on
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }

    #[test]
    fn concurrent_callers_all_complete() {
        // several threads at once: one owns the helper, the others run both halves themselves
        use rayon::prelude::*;
        let sums: Vec<usize> = (0..64usize)
            .into_par_iter()
            .map(|i| {
                let a = AtomicUsize::new(0);
                let b = AtomicUsize::new(0);
                join(
                    || {
                        a.fetch_add(i, Ordering::Relaxed);
                    },
                    || {
                        b.fetch_add(2 * i, Ordering::Relaxed);
                    },
                );
                a.into_inner() + b.into_inner()
            })
            .collect();
        assert_eq!(sums, (0..64).map(|i| 3 * i).collect::<Vec<_>>());
    }

    #[test]
    fn a_panic_in_either_half_reaches_the_caller_and_the_helper_survives() {
        let r = std::panic::catch_unwind(|| join(|| (), || panic!("in b")));
        assert!(r.is_err());
        let r = std::panic::catch_unwind(|| join(|| panic!("in a"), || ()));
        assert!(r.is_err());
        let hits = AtomicUsize::new(0);
        join(
            || {
                hits.fetch_add(1, Ordering::Relaxed);
            },
            || {
                hits.fetch_add(1, Ordering::Relaxed);
            },
        );
        assert_eq!(hits.into_inner(), 2);
    }
}
