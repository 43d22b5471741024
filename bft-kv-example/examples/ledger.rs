//! Embedding: an application replicates its own service, a bank ledger, on a 4-replica PBFT
//! cluster (in this process, on loopback). `cargo run -p bft-kv-example --example ledger`
use bft_core::{ExecuteContext, RestoreError, Service};
use bft_net::{AsyncClient, ClientOptions, LocalCluster, LocalClusterOptions};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Serialize, Deserialize)]
enum Op {
    Open(String),
    Deposit(String, u64),
    Transfer(String, String, u64), // from, to, amount
}

/// Typed errors travel in the agreed reply, like any result.
#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
enum LedgerError {
    #[error("no account {0:?}")]
    NoSuchAccount(String),
    #[error("insufficient funds: balance {balance}, asked {amount}")]
    InsufficientFunds { balance: u64, amount: u64 },
    #[error("malformed operation, self-transfer or balance overflow")]
    Invalid,
}

/// The replicated state. Deterministic: a BTreeMap, no clock, no randomness.
#[derive(Default)]
struct Ledger(BTreeMap<String, u64>);

impl Ledger {
    fn balance(&self, account: &str) -> Result<u64, LedgerError> {
        let missing = || LedgerError::NoSuchAccount(account.into());
        self.0.get(account).copied().ok_or_else(missing)
    }
    fn apply(&mut self, op: Op) -> Result<u64, LedgerError> {
        let (from, to, amount) = match op {
            Op::Open(name) => return Ok(*self.0.entry(name).or_default()),
            Op::Deposit(name, amount) => (None, name, amount),
            Op::Transfer(from, to, _) if from == to => return Err(LedgerError::Invalid),
            Op::Transfer(from, to, amount) => (Some(from), to, amount),
        };
        let credited = self.balance(&to)?.checked_add(amount);
        let credited = credited.ok_or(LedgerError::Invalid)?;
        if let Some(from) = from {
            let balance = self.balance(&from)?;
            let refused = LedgerError::InsufficientFunds { balance, amount };
            self.0
                .insert(from, balance.checked_sub(amount).ok_or(refused)?);
        }
        self.0.insert(to, credited);
        Ok(credited)
    }
}

impl Service for Ledger {
    fn execute(&mut self, _: &ExecuteContext, operation: &[u8]) -> Vec<u8> {
        let op = postcard::from_bytes(operation).map_err(|_| LedgerError::Invalid);
        postcard::to_allocvec(&op.and_then(|op| self.apply(op))).unwrap_or_default()
    }
    fn snapshot(&self) -> Vec<u8> {
        postcard::to_allocvec(&self.0).unwrap_or_default() // BTreeMap: same state, same bytes
    }
    fn restore(&mut self, snapshot: &[u8]) -> Result<(), RestoreError> {
        self.0 = postcard::from_bytes(snapshot).map_err(|e| RestoreError(e.to_string()))?;
        Ok(())
    }
}

type Error = Box<dyn std::error::Error>;
/// Submits `op`, returns the result f+1 replicas agreed on.
async fn call(client: &AsyncClient, op: Op) -> Result<Result<u64, LedgerError>, Error> {
    let reply = client.invoke(postcard::to_allocvec(&op)?).await?;
    Ok(postcard::from_bytes(&reply)?)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let cluster = LocalCluster::start(LocalClusterOptions::default(), |_| Ledger::default())?;
    let client = cluster.client(ClientOptions::default())?;
    call(&client, Op::Open("alice".into())).await??;
    call(&client, Op::Open("bob".into())).await??;
    let balance = call(&client, Op::Deposit("alice".into(), 100)).await??;
    println!("alice deposits 100: her balance is {balance}");
    let transfer = || Op::Transfer("alice".into(), "bob".into(), 70);
    let bob = call(&client, transfer()).await??;
    println!("alice sends bob 70: bob has {bob}");
    match call(&client, transfer()).await? {
        Err(e @ LedgerError::InsufficientFunds { .. }) => println!("again: refused, {e}"),
        other => return Err(format!("expected insufficient funds, got {other:?}").into()),
    }
    client.shutdown().await;
    cluster.shutdown().await;
    Ok(())
}
