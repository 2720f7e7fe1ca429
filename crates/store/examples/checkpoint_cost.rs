//! What checkpoints cost, without the node around them: applies bench-like transfers (ids that
//! grow, random pairs of 10,000 accounts) in batches of 8,189 and writes a checkpoint of
//! `--per` transfers at a time, `--rounds` times, printing each checkpoint's duration.
//! `cargo run --release -p bulwark-store --example checkpoint_cost -- [rounds] [per] [dir]`

use std::time::Instant;

use bulwark_ledger::{AccountId, Batch, NewAccount, NewTransfer, Operation, Timestamp, TransferId};
use bulwark_store::StateStore;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).map_or(5, |a| a.parse().expect("rounds"));
    let per: usize = args.get(2).map_or(600_000, |a| a.parse().expect("per"));
    let dir = match args.get(3) {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir().join(format!("checkpoint-cost-{}", std::process::id())),
    };
    std::fs::create_dir_all(&dir).expect("create dir");
    let mut store = StateStore::open(&dir.join("state.redb")).expect("open");
    let accounts = (1..=10_000u128)
        .map(|id| NewAccount {
            id: AccountId(id),
            ledger: 1,
            code: 1,
            ..NewAccount::default()
        })
        .collect();
    let mut index = 1u64;
    let mut ts = 1u64;
    let mut batch = |store: &mut StateStore, operation| {
        store.apply_batch(
            index,
            &Batch {
                timestamp: Timestamp(ts),
                operation,
            },
        );
        index += 1;
        ts += 10_000;
    };
    batch(&mut store, Operation::CreateAccounts(accounts));
    let mut next_id = 1_000_000u128;
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut account = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        AccountId(u128::from(seed % 10_000) + 1)
    };
    for round in 0..rounds {
        let mut left = per;
        let applying = Instant::now();
        while left > 0 {
            let n = left.min(8189);
            left -= n;
            let transfers = (0..n)
                .map(|_| {
                    next_id += 1;
                    let debit = account();
                    let mut credit = account();
                    if credit == debit {
                        credit = AccountId(debit.0 % 10_000 + 1);
                    }
                    NewTransfer {
                        id: TransferId(next_id),
                        debit_account_id: debit,
                        credit_account_id: credit,
                        amount: 1,
                        ledger: 1,
                        code: 1,
                        ..NewTransfer::default()
                    }
                })
                .collect();
            batch(&mut store, Operation::CreateTransfers(transfers));
        }
        let applied = applying.elapsed();
        let done = store
            .checkpoint_now()
            .expect("checkpoint")
            .expect("written");
        println!(
            "round {round}: applied {per} in {:.3} s, checkpoint {:.3} s ({:.0} transfers/s)",
            applied.as_secs_f64(),
            done.duration.as_secs_f64(),
            per as f64 / done.duration.as_secs_f64()
        );
    }
    if args.get(3).is_none() {
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
