//! Admin commands that act on the configured database directly: users and API keys.

use std::sync::Arc;

use clap::{Args, Subcommand};

use crate::{
    auth::{Authenticator, Revocations, TokenKeys},
    bus::Bus,
    config::Options,
    domain::{Accounts, NewAccount, create_account},
};

/// `veza user …`
#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Create an account.
    Add {
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
        #[arg(long, default_value = "")]
        username: String,
        /// Give the account the admin role.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        store: Store,
    },
}

/// `veza apikey …`
#[derive(Subcommand, Debug)]
pub enum ApiKeyCommand {
    /// Create a key and print it (it is shown only once).
    Create {
        #[arg(long)]
        name: String,
        /// A scope; repeat for several (admin, notifications:send, analytics:write, …).
        #[arg(long = "scope", required = true)]
        scopes: Vec<String>,
        #[command(flatten)]
        store: Store,
    },
    /// List the keys.
    List {
        /// Include revoked keys.
        #[arg(long)]
        all: bool,
        #[command(flatten)]
        store: Store,
    },
    /// Revoke a key by id.
    Revoke {
        id: i64,
        #[command(flatten)]
        store: Store,
    },
}

/// Where the database is: the same options as `veza serve`.
#[derive(Args, Debug)]
pub struct Store {
    #[command(flatten)]
    options: Options,
}

/// Runs a `veza user` command.
pub async fn user(cmd: UserCommand) -> anyhow::Result<()> {
    let UserCommand::Add {
        email,
        password,
        username,
        admin,
        store,
    } = cmd;
    let config = store.options.resolve()?;
    crate::server::private_umask();
    crate::server::private_data_dir(&config)?;
    let db = veza_storage::Db::connect(&config.database_url).await?;
    let account = NewAccount {
        email,
        password,
        username,
        admin,
        ..Default::default()
    };
    let user = create_account(&db, account).await?;
    println!(
        "created user {} <{}> (id {}, roles {})",
        user.username,
        user.email,
        user.id,
        user.roles.join(",")
    );
    Ok(())
}

/// Runs a `veza apikey` command.
pub async fn api_key(cmd: ApiKeyCommand) -> anyhow::Result<()> {
    match cmd {
        ApiKeyCommand::Create {
            name,
            scopes,
            store,
        } => {
            let (key, record) = accounts(store)
                .await?
                .create_api_key(None, &name, &scopes)
                .await?;
            println!("{key}");
            eprintln!(
                "created API key {} ({}) with scopes {}; store it now, it is not shown again",
                record.id,
                record.name,
                record.scopes.join(",")
            );
        }
        ApiKeyCommand::List { all, store } => {
            for k in accounts(store).await?.list_api_keys(None, all).await? {
                let state = if k.revoked { "revoked" } else { "active" };
                println!(
                    "{}\t{}\t{}…\t{}\t{}",
                    k.id,
                    k.name,
                    k.prefix,
                    k.scopes.join(","),
                    state
                );
            }
        }
        ApiKeyCommand::Revoke { id, store } => {
            accounts(store).await?.revoke_api_key(None, id).await?;
            println!("revoked API key {id}");
        }
    }
    Ok(())
}

async fn accounts(store: Store) -> anyhow::Result<Accounts> {
    let config = store.options.resolve()?;
    crate::server::private_umask();
    crate::server::private_data_dir(&config)?;
    let db = veza_storage::Db::connect(&config.database_url).await?;
    let bus = match &config.nats_url {
        Some(url) => Bus::nats(url).await?,
        None => Bus::local(),
    };
    let tokens = TokenKeys::load(&config.jwt, &db, &config.data_dir).await?;
    let revocations = Revocations::start(&bus, &db).await?;
    let auth = Arc::new(Authenticator::new(tokens, revocations, db.clone()));
    Ok(Accounts::new(
        db,
        bus,
        auth,
        config.access_token_ttl,
        config.refresh_token_ttl,
    ))
}
