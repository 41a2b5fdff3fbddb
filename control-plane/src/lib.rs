//! Veza's control plane: configuration, the gRPC and HTTP servers, the domain rules and the client tools.

pub mod auth;
pub mod bus;
pub mod caller;
pub mod cli;
pub mod config;
pub mod conn_caps;
pub mod connect;
pub mod cors;
pub mod domain;
pub mod grpc;
pub mod heap_trim;
pub mod hint;
pub mod http;
pub mod metrics;
pub mod net;
pub mod server;
pub mod shutdown;
pub mod telemetry;

pub use config::Config;
pub use server::{RunningServer, start};
