//! A small harness over `MemoryStore` shared by the ledger's integration tests.
#![allow(dead_code)]

use bulwark_ledger::{
    apply, Account, AccountFlags, AccountId, Batch, BatchResults, CreateAccountResult,
    CreateTransferResult, FlagSet, LedgerStore, MemoryStore, NewAccount, NewTransfer, Operation,
    PendingStatus, Timestamp, Transfer, TransferFlags, TransferId, AMOUNT_MAX, NANOS_PER_SECOND,
};

/// A ledger whose batches get consecutive timestamps unless a test moves the clock.
#[derive(Clone, Debug)]
pub struct Ledger {
    pub store: MemoryStore,
    /// Timestamp of the last event applied (or the start).
    pub now: u64,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::starting_at(1_000)
    }
}

impl Ledger {
    pub fn starting_at(now: u64) -> Self {
        Ledger {
            store: MemoryStore::default(),
            now,
        }
    }

    /// The timestamp the next batch starts at: the first of its expiries, or else its first event.
    pub fn next_start(&self) -> u64 {
        self.now + 1
    }

    /// How many pending transfers the next batch expires before its events.
    pub fn due(&self) -> u64 {
        self.store
            .expired_pending(Timestamp(self.next_start()))
            .len() as u64
    }

    /// The timestamp the next batch's first event will get: each expiry due at the batch's start
    /// takes a timestamp of its own before the events.
    pub fn next_event(&self) -> u64 {
        self.next_start() + self.due()
    }

    /// Moves the clock so that the next batch starts exactly at `ts` (its first event lands
    /// there too unless something is due by then).
    pub fn first_event_at(&mut self, ts: u64) {
        assert!(ts > self.now, "time only moves forward");
        self.now = ts - 1;
    }

    pub fn advance_secs(&mut self, secs: u64) {
        self.now += secs * NANOS_PER_SECOND;
    }

    pub fn apply(&mut self, operation: Operation) -> BatchResults {
        let n = operation.len() as u64;
        let due = self.due();
        let batch = Batch {
            timestamp: Timestamp(self.now + n),
            operation,
        };
        let results = apply(&mut self.store, &batch);
        self.now += due + n;
        assert_eq!(self.store.last_timestamp(), Timestamp(self.now));
        bulwark_ledger::check_balanced(self.store.accounts.values())
            .expect("every batch leaves the ledger balanced");
        results
    }

    pub fn accounts(&mut self, accounts: Vec<NewAccount>) -> Vec<CreateAccountResult> {
        match self.apply(Operation::CreateAccounts(accounts)) {
            BatchResults::Accounts(r) => r,
            other => panic!("accounts batch answered {other:?}"),
        }
    }

    pub fn transfers(&mut self, transfers: Vec<NewTransfer>) -> Vec<CreateTransferResult> {
        match self.apply(Operation::CreateTransfers(transfers)) {
            BatchResults::Transfers(r) => r,
            other => panic!("transfers batch answered {other:?}"),
        }
    }

    /// Applies an `ExpirePending` batch; returns how many pending transfers it expired.
    pub fn expire(&mut self) -> usize {
        match self.apply(Operation::ExpirePending) {
            BatchResults::Expired(n) => n,
            other => panic!("expire batch answered {other:?}"),
        }
    }

    pub fn transfer1(&mut self, t: NewTransfer) -> CreateTransferResult {
        let r = self.transfers(vec![t]);
        r[0]
    }

    pub fn account1(&mut self, a: NewAccount) -> CreateAccountResult {
        let r = self.accounts(vec![a]);
        r[0]
    }

    /// Creates accounts that must all answer ok.
    pub fn open(&mut self, accounts: Vec<NewAccount>) {
        let n = accounts.len();
        assert_eq!(self.accounts(accounts), vec![CreateAccountResult::Ok; n]);
    }

    pub fn account(&self, id: u128) -> Account {
        self.store
            .account(AccountId(id))
            .unwrap_or_else(|| panic!("account {id} exists"))
    }

    pub fn transfer(&self, id: u128) -> Option<Transfer> {
        self.store.transfer(TransferId(id))
    }

    /// When transfer id `id` was refused for a transient reason, if it was.
    pub fn failed(&self, id: u128) -> Option<Timestamp> {
        self.store.failed_transfer(TransferId(id))
    }

    pub fn is_closed(&self, id: u128) -> bool {
        self.account(id).flags.contains(AccountFlags::CLOSED)
    }

    pub fn status(&self, id: u128) -> Option<PendingStatus> {
        self.store.pending_status(TransferId(id))
    }

    /// (debits_pending, debits_posted, credits_pending, credits_posted)
    pub fn balances(&self, id: u128) -> (u128, u128, u128, u128) {
        let a = self.account(id);
        (
            a.debits_pending,
            a.debits_posted,
            a.credits_pending,
            a.credits_posted,
        )
    }
}

/// An account on `ledger` with code 1 and no flags.
pub fn acct(id: u128, ledger: u32) -> NewAccount {
    NewAccount {
        id: AccountId(id),
        ledger,
        code: 1,
        ..NewAccount::default()
    }
}

pub fn acct_flags(id: u128, ledger: u32, flags: AccountFlags) -> NewAccount {
    NewAccount {
        flags,
        ..acct(id, ledger)
    }
}

/// A posted transfer on ledger 1 with code 1.
pub fn tr(id: u128, dr: u128, cr: u128, amount: u128) -> NewTransfer {
    NewTransfer {
        id: TransferId(id),
        debit_account_id: AccountId(dr),
        credit_account_id: AccountId(cr),
        amount,
        ledger: 1,
        code: 1,
        ..NewTransfer::default()
    }
}

/// A flag bit that no flag of `F` names: what `reserved_flag` is about. Found rather than
/// written down, so that a flag added later does not turn these tests' reserved bit valid.
pub fn unnamed_flag<F: FlagSet>() -> F {
    let named = F::NAMES.iter().fold(0, |acc, (_, bit)| acc | bit);
    let bit = (0..16)
        .map(|i| 1u16 << i)
        .find(|bit| named & bit == 0)
        .expect("a bit no flag names");
    F::from_bits_retain(bit)
}

pub fn linked(t: NewTransfer) -> NewTransfer {
    NewTransfer {
        flags: t.flags | TransferFlags::LINKED,
        ..t
    }
}

/// A pending transfer on ledger 1 with code 1.
pub fn pending(id: u128, dr: u128, cr: u128, amount: u128, timeout: u32) -> NewTransfer {
    NewTransfer {
        flags: TransferFlags::PENDING,
        timeout,
        ..tr(id, dr, cr, amount)
    }
}

/// A post of `amount` (taken literally: 0 posts nothing) of `pending_id`, leaving accounts, ledger,
/// code and user data to the pending transfer.
pub fn post(id: u128, pending_id: u128, amount: u128) -> NewTransfer {
    NewTransfer {
        id: TransferId(id),
        pending_id: TransferId(pending_id),
        amount,
        flags: TransferFlags::POST_PENDING_TRANSFER,
        ..NewTransfer::default()
    }
}

/// A post of the pending transfer's full amount ([`AMOUNT_MAX`]).
pub fn post_full(id: u128, pending_id: u128) -> NewTransfer {
    post(id, pending_id, AMOUNT_MAX)
}

/// `t` with `flags` added.
pub fn with(t: NewTransfer, flags: TransferFlags) -> NewTransfer {
    NewTransfer {
        flags: t.flags | flags,
        ..t
    }
}

pub fn void(id: u128, pending_id: u128, amount: u128) -> NewTransfer {
    NewTransfer {
        flags: TransferFlags::VOID_PENDING_TRANSFER,
        ..post(id, pending_id, amount)
    }
}
