//! A small harness over `MemoryStore` shared by the ledger's integration tests.
#![allow(dead_code)]

use bulwark_ledger::{
    apply, Account, AccountFlags, AccountId, Batch, BatchResults, CreateAccountResult,
    CreateTransferResult, LedgerStore, MemoryStore, NewAccount, NewTransfer, Operation,
    PendingStatus, Timestamp, Transfer, TransferFlags, TransferId, NANOS_PER_SECOND,
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

    /// The timestamp the next batch's first event will get.
    pub fn next_event(&self) -> u64 {
        self.now + 1
    }

    /// Moves the clock so that the next batch's first event lands exactly at `ts`.
    pub fn first_event_at(&mut self, ts: u64) {
        assert!(ts > self.now, "time only moves forward");
        self.now = ts - 1;
    }

    pub fn advance_secs(&mut self, secs: u64) {
        self.now += secs * NANOS_PER_SECOND;
    }

    pub fn apply(&mut self, operation: Operation) -> BatchResults {
        let n = operation.len() as u64;
        let batch = Batch {
            timestamp: Timestamp(self.now + n),
            operation,
        };
        let results = apply(&mut self.store, &batch);
        self.now += n;
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

    pub fn account(&self, id: u64) -> Account {
        self.store
            .account(AccountId(id))
            .unwrap_or_else(|| panic!("account {id} exists"))
    }

    pub fn transfer(&self, id: u64) -> Option<Transfer> {
        self.store.transfer(TransferId(id))
    }

    pub fn status(&self, id: u64) -> Option<PendingStatus> {
        self.store.pending_status(TransferId(id))
    }

    /// (debits_pending, debits_posted, credits_pending, credits_posted)
    pub fn balances(&self, id: u64) -> (u64, u64, u64, u64) {
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
pub fn acct(id: u64, ledger: u32) -> NewAccount {
    NewAccount {
        id: AccountId(id),
        ledger,
        code: 1,
        flags: AccountFlags::empty(),
        user_data: 0,
    }
}

pub fn acct_flags(id: u64, ledger: u32, flags: AccountFlags) -> NewAccount {
    NewAccount {
        flags,
        ..acct(id, ledger)
    }
}

/// A posted transfer on ledger 1 with code 1.
pub fn tr(id: u64, dr: u64, cr: u64, amount: u64) -> NewTransfer {
    NewTransfer {
        id: TransferId(id),
        debit_account_id: AccountId(dr),
        credit_account_id: AccountId(cr),
        amount,
        pending_id: TransferId::ZERO,
        timeout: 0,
        ledger: 1,
        code: 1,
        flags: TransferFlags::empty(),
        user_data: 0,
    }
}

pub fn linked(t: NewTransfer) -> NewTransfer {
    NewTransfer {
        flags: t.flags | TransferFlags::LINKED,
        ..t
    }
}

/// A pending transfer on ledger 1 with code 1.
pub fn pending(id: u64, dr: u64, cr: u64, amount: u64, timeout: u32) -> NewTransfer {
    NewTransfer {
        flags: TransferFlags::PENDING,
        timeout,
        ..tr(id, dr, cr, amount)
    }
}

/// A post of `pending_id` leaving accounts, ledger and code to the pending transfer.
pub fn post(id: u64, pending_id: u64, amount: u64) -> NewTransfer {
    NewTransfer {
        id: TransferId(id),
        pending_id: TransferId(pending_id),
        amount,
        flags: TransferFlags::POST_PENDING_TRANSFER,
        ..NewTransfer::default()
    }
}

pub fn void(id: u64, pending_id: u64, amount: u64) -> NewTransfer {
    NewTransfer {
        flags: TransferFlags::VOID_PENDING_TRANSFER,
        ..post(id, pending_id, amount)
    }
}
